"""End to end through Hydra + run_pipeline: the tokenizer and recon_eval stages for each kind."""

import pytest
import torch

from hartkit.pipeline import run_pipeline
from hartkit.records import iter_records
from hartkit.tokenizers import is_finished_artifact

TINY_RUN = [
    "stages=[tokenizer,recon_eval]",
    "data.train_size=16",
    "data.test_size=8",
    "eval.num_images=6",
    "eval.batch_size=4",
    "eval.fd_features=[]",
    "tokenizer.train.steps=3",
    "tokenizer.train.batch_size=4",
    "tokenizer.train.checkpoint_every=2",
    "tokenizer.train.grid_images=2",
    "threads=1",
]


@pytest.mark.parametrize("kind", ["discrete", "continuous", "hybrid"])
def test_tokenizer_and_recon_eval_per_kind(compose_cfg, tmp_path, kind):
    ctx = run_pipeline(compose_cfg(f"tokenizer={kind}", *TINY_RUN, f"run_name=tk-{kind}"))
    art = ctx.artifact_dir("tokenizer")
    assert is_finished_artifact(art) and (art / "reconstructions.png").is_file()
    records, bad = iter_records(tmp_path / "results")
    records = [(p, r) for p, r in records if r.role == "model"]  # not the baseline rows scored beside it
    assert not bad and len(records) == 1
    rec = records[0][1]
    assert rec.stage == "recon_eval" and rec.label == kind and rec.protocol.task == "reconstruction"
    assert rec.protocol.num_images == 6 and rec.protocol.split == "test" and rec.protocol.resolution == 64
    m = rec.metrics
    assert 0 < m["psnr"] < 60 and -1 <= m["ssim"] <= 1 and m["tokens_per_image"] == 130
    if kind == "continuous":
        assert m["bits_per_image"] is None and "codebook_usage" not in m
    else:
        assert m["bits_per_image"] == pytest.approx(130 * 10)
        assert 0 < m["codebook_usage"] <= 1 and m["perplexity"] >= 1 and "codebook_usage/scale_5" in m
    assert ("psnr_discrete" in m) == (kind == "hybrid")


def test_finished_artifact_is_reused_and_recon_eval_runs_alone(compose_cfg, tmp_path):
    ctx = run_pipeline(compose_cfg("tokenizer=discrete", *TINY_RUN, "run_name=first"))
    weights = ctx.artifact_dir("tokenizer") / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    run_pipeline(compose_cfg("tokenizer=discrete", *TINY_RUN, "run_name=second"))
    assert weights.stat().st_mtime_ns == stamp  # not retrained
    ctx3 = run_pipeline(compose_cfg("tokenizer=discrete", *TINY_RUN[1:], "stages=[recon_eval]", "run_name=third"))
    assert "psnr" in ctx3.state["recon_metrics"]
    run_pipeline(compose_cfg("tokenizer=discrete", *TINY_RUN, "retrain=true", "run_name=fourth"))
    assert weights.stat().st_mtime_ns != stamp


def test_recon_eval_without_artifact_says_what_to_run(compose_cfg):
    with pytest.raises(FileNotFoundError, match=r"stages=\[tokenizer"):
        run_pipeline(compose_cfg("tokenizer=hybrid", *TINY_RUN[1:], "stages=[recon_eval]", "run_name=x"))


def test_resolution_not_divisible_is_a_clear_error(compose_cfg):
    from hartkit.tokenizers import ImageSizeError

    with pytest.raises(ImageSizeError, match=r"60x60.*factor 8"):
        run_pipeline(compose_cfg("tokenizer=discrete", *TINY_RUN, "data.resolution=60", "run_name=y"))


def test_hybrid_from_a_discrete_tokenizer_with_frozen_quantizer(compose_cfg):
    ctx = run_pipeline(compose_cfg("tokenizer=discrete", *TINY_RUN, "run_name=disc"))
    disc_dir = ctx.artifact_dir("tokenizer")
    disc = ctx.state["tokenizer"].state_dict()
    ctx2 = run_pipeline(compose_cfg("tokenizer=hybrid", *TINY_RUN, f"tokenizer.init_from={disc_dir}",
                                    "tokenizer.freeze_quantizer_path=true", "run_name=hyb"))
    hyb = ctx2.state["tokenizer"].state_dict()
    for key in disc:
        same = torch.equal(disc[key], hyb[key])
        if key.startswith(("encoder.", "quant_conv.", "quantize.")):
            assert same, key
    assert not torch.equal(disc["decoder.conv_out.weight"], hyb["decoder.conv_out.weight"])


def test_hart_recipe_row_starts_from_the_discrete_row_of_the_same_run(compose_cfg):
    """tokenizer=hybrid_hart_recipe (init_from: discrete) finds the discrete artifact trained with the same
    overrides, and says what to run when it is missing."""
    shared = [*TINY_RUN, "tokenizer.quantizer.vocab_size=64"]
    from hartkit.pipeline import StageError

    with pytest.raises(StageError, match=r"python run.py tokenizer=discrete stages=\[tokenizer\]"):
        run_pipeline(compose_cfg("tokenizer=hybrid_hart_recipe", *shared, "run_name=early"))
    disc = run_pipeline(compose_cfg("tokenizer=discrete", *shared, "run_name=disc")).state["tokenizer"].state_dict()
    ctx = run_pipeline(compose_cfg("tokenizer=hybrid_hart_recipe", *shared, "run_name=recipe"))
    recipe = ctx.state["tokenizer"]
    assert recipe.kind == "hybrid"
    for key, value in recipe.state_dict().items():
        if key.startswith(("encoder.", "quant_conv.", "quantize.embedding", "quantize.quant_resi")):
            assert torch.equal(value, disc[key]), key


def test_pretrained_preset_without_checkpoint_says_which_key(compose_cfg):
    with pytest.raises(FileNotFoundError, match="tokenizer.checkpoint="):
        run_pipeline(compose_cfg("tokenizer=var_pretrained", *TINY_RUN, "run_name=z"))


def test_hart_checkpoint_through_the_pipeline(compose_cfg, tmp_path):
    from hartkit.tokenizers import build_tokenizer
    from hartkit.tokenizers.pretrained import save_in_layout

    small = ["tokenizer/autoencoder=small", "tokenizer/quantizer=small"]
    cfg = compose_cfg("tokenizer=hart_pretrained", *small, *TINY_RUN, f"tokenizer.checkpoint={tmp_path}/hart.pth",
                      "run_name=hart")
    torch.manual_seed(0)
    source = build_tokenizer(cfg.tokenizer)
    save_in_layout(source, tmp_path / "hart.pth", "hart")
    ctx = run_pipeline(cfg)
    loaded = ctx.state["tokenizer"]
    assert loaded.kind == "hybrid" and not loaded.quantize.phi_on_last_scale
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in source.state_dict().items())
    (path, rec), = [(p, r) for p, r in iter_records(tmp_path / "results")[0] if r.role == "model"]
    assert rec.label == "hart_pretrained" and "psnr_discrete" in rec.metrics
