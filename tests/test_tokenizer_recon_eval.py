"""recon_eval metrics on an in-memory loader: paths, per-scale usage from the indices, bits, the table."""

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from hartkit.eval.tables import format_table
from hartkit.stages.recon_eval import bits_per_image, evaluate_reconstruction
from hartkit.tokenizers import build_tokenizer


def tiny(kind):
    torch.manual_seed(0)
    model = build_tokenizer({
        "kind": kind,
        "autoencoder": {"ch": 8, "ch_mult": [1, 2], "z_channels": 4, "norm_groups": 4},
        "quantizer": {"vocab_size": 16, "patch_nums": [1, 2, 8]},
    })
    if kind != "continuous":
        model.quantize.embedding.weight.data.normal_()
    return model


def loader(n=6, bs=4):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 16, 16, generator=g) * 2 - 1
    return [{"image": x[i:i + bs]} for i in range(0, n, bs)]


EVAL = OmegaConf.create({"fd_features": []})


def test_hybrid_reports_both_paths_and_usage_from_indices():
    model = tiny("hybrid")
    metrics, proto = evaluate_reconstruction(model, loader(), EVAL, torch.device("cpu"))
    assert {"psnr", "ssim", "psnr_discrete", "ssim_discrete"} <= set(metrics)
    assert metrics["psnr"] != metrics["psnr_discrete"]
    # usage recomputed by hand from the tokens of the same images
    hits = torch.zeros(3, 16)
    with torch.no_grad():
        for batch in loader():
            for k, idx in enumerate(model.encode(batch["image"]).indices):
                hits[k] += torch.bincount(idx.flatten(), minlength=16)
    for k in range(3):
        assert metrics[f"codebook_usage/scale_{k}"] == pytest.approx(float((hits[k] > 0).float().mean()))
    assert metrics["codebook_usage"] == pytest.approx(float((hits.sum(0) > 0).float().mean()))
    assert metrics["tokens_per_image"] == 1 + 4 + 64
    assert metrics["bits_per_image"] == pytest.approx(69 * 4)
    assert "implementation" in proto
    table = format_table(metrics, "hybrid")
    assert "discrete only" in table and "discrete+residual" in table and "bits/image 276" in table


def test_continuous_has_no_bits_and_no_codebook():
    metrics, _ = evaluate_reconstruction(tiny("continuous"), loader(), EVAL, torch.device("cpu"))
    assert metrics["bits_per_image"] is None and "codebook_usage" not in metrics
    assert "n/a" in format_table(metrics, "continuous")


def test_bits_per_image_formula():
    assert bits_per_image((1, 2, 3, 4, 5, 6, 8, 10, 13, 16), 4096) == pytest.approx(680 * 12)
    assert bits_per_image((1, 2), 0) is None
    assert math.isclose(bits_per_image((2,), 1000), 4 * math.log2(1000))


def test_trained_commit_comes_from_the_artifact_summary(tmp_path):
    import json

    from hartkit.stages.eval_common import trained_commit

    (tmp_path / "DONE").write_text(json.dumps({"steps": 3, "git_commit": "abc1234"}))
    assert trained_commit(tmp_path) == "abc1234"
    (tmp_path / "DONE").write_text(json.dumps({"steps": 3}))
    assert trained_commit(tmp_path) is None  # the artifact does not say: unknown, never the scoring commit
    assert trained_commit(tmp_path / "missing") is None and trained_commit(None) is None


def test_photos_protocol_says_it_rests_on_four_photographs():
    from hartkit.data.photos import TEST_PHOTOS
    from hartkit.stages.recon_eval import recon_protocol

    cfg = OmegaConf.create({"data": {"name": "photos", "resolution": 64, "resize_filter": "bicubic"}})
    proto = recon_protocol(cfg, 100, {"implementation": "x"})
    assert len(TEST_PHOTOS) == 4 and "only 4 test photographs" in proto.extra["source"]
    other = recon_protocol(OmegaConf.create({"data": {"name": "synthscenes", "resolution": 64,
                                                       "resize_filter": "bicubic"}}), 100, {})
    assert "source" not in other.extra


def test_prompt_accuracy_of_reconstructions_scores_the_decoded_images_against_their_prompts():
    """With eval.prompt_accuracy on, every decode path and baseline reports the prompt metrics of its own
    reconstructions (the ceiling of a generator of these tokens), with intervals: real scenes kept as they are
    read right, flat mean-colour images show no object, and the model's numbers are its own decodes'."""
    from hartkit.data.synthscenes import render_scene
    from hartkit.eval.baselines import ReconBaseline
    from hartkit.eval.embedded import get_embedded_evaluator
    from hartkit.eval.embedded.prompt_accuracy import PromptAccuracy
    from hartkit.stages.recon_eval import RECON_PROMPT_METRICS, score_reconstruction

    torch.manual_seed(0)
    model = build_tokenizer({"kind": "hybrid",
                             "autoencoder": {"ch": 4, "ch_mult": [1, 1, 1, 1], "z_channels": 4, "norm_groups": 4},
                             "quantizer": {"vocab_size": 16, "patch_nums": [1, 2, 4, 8]}}).eval()
    images, prompts = [], []
    for i in range(12):
        img, caption, _ = render_scene(0, "test", 2000 + i, 64)
        images.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 127.5 - 1)
        prompts.append(caption)
    x = torch.stack(images)
    batches = [{"image": x[i:i + 6], "prompt": prompts[i:i + 6]} for i in (0, 6)]
    keep = ReconBaseline(name="baseline: the originals", role="ceiling", size=64)  # 64 px "thumbnail" = identity
    flat = ReconBaseline(name="baseline: mean colour", role="floor")
    cfg = OmegaConf.create({"fd_features": [], "prompt_accuracy": True, "bootstrap": 50})
    res = score_reconstruction(model, batches, cfg, torch.device("cpu"), baselines=[keep, flat])
    for suffix in ("", "_discrete"):
        for name in RECON_PROMPT_METRICS:
            lo, hi = res.intervals[name + suffix]
            assert 0.0 <= lo <= res.metrics[name + suffix] <= hi <= 1.0
    # the evaluator reads colour right on >= 99% of real scenes: 12 of them fall below 10/12 with p < 1e-3
    assert res.baselines[keep.name][1]["prompt_accuracy/color"] >= 10 / 12
    assert res.baselines[keep.name][1]["class_accuracy"] >= 10 / 12
    assert res.baselines[flat.name][1]["class_accuracy"] == 0.0  # nothing drawn, no shape read
    judge = PromptAccuracy(get_embedded_evaluator())
    with torch.no_grad():
        for b in batches:
            judge.update(((model.decode(model.encode(b["image"]), use_residual=False) + 1) / 2).clamp(0, 1),
                         b["prompt"])
    expected = judge.per_image()
    for name in RECON_PROMPT_METRICS:
        assert res.metrics[name + "_discrete"] == pytest.approx(float(expected[name].mean()), abs=1e-12)
