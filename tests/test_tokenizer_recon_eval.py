"""recon_eval metrics on an in-memory loader: paths, per-scale usage from the indices, bits, the table."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from hartkit.stages.recon_eval import bits_per_image, evaluate_reconstruction, format_table
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
