"""End to end through Hydra + run_pipeline: tokenizer -> generator -> gen_eval for every kind (tiny sizes)."""

from __future__ import annotations

import json

import pytest

from hartkit.engine import is_finished
from hartkit.pipeline import run_pipeline
from hartkit.records import iter_records


def tiny_run(tmp_path) -> list[str]:
    """The stages, then experiment=smoke (tiny data, one-block models, a few steps) with 6 scored prompts."""
    return [
        "stages=[tokenizer,generator,gen_eval]",
        "experiment=smoke",
        "eval.num_images=6",
        f"eval.stats_cache={tmp_path}/fd_stats",
    ]


@pytest.mark.parametrize("kind", ["discrete", "continuous", "hybrid"])
def test_every_kind_trains_samples_and_is_scored(compose_cfg, tmp_path, kind):
    ctx = run_pipeline(compose_cfg(f"tokenizer={kind}", *tiny_run(tmp_path), f"run_name=ar-{kind}"))
    art = ctx.state["generator_dir"]
    assert is_finished(art) and (art / "model.safetensors").exists()
    assert list((art / "samples").glob("*.png")), "the final sample grid is missing"
    assert len(list((tmp_path / "artifacts" / "token_cache").glob("*/tokens.safetensors"))) == 1
    records, bad = iter_records(tmp_path / "results")
    assert not bad
    (rec,) = [r for _, r in records if r.stage == "gen_eval" and r.role == "model"]
    assert rec.label == f"{kind}+tiny" and rec.protocol.task == "generation" and rec.protocol.num_images == 6
    for key in ("fd_embedded", "latency_s", "throughput_img_s", "macs_per_image", "params_ar", "ar_steps"):
        assert key in rec.metrics and rec.metrics[key] is not None, key
    assert rec.metrics["ar_steps"] == len(rec.model["patch_nums"])
    assert (rec.metrics["params_diffusion_head"] > 0) == (kind != "discrete")
    assert (rec.metrics["diffusion_steps"] > 0) == (kind != "discrete")
    if kind == "hybrid":
        assert "residual_overhead_pct" in rec.metrics
    assert rec.hardware.get("device") == "cpu"


def test_generator_artifact_is_reused_and_gen_eval_runs_alone(compose_cfg, tmp_path):
    run = tiny_run(tmp_path) + ["tokenizer=discrete", "ar.sampling.measure_efficiency=false"]
    ctx = run_pipeline(compose_cfg(*run, "run_name=first"))
    art = ctx.state["generator_dir"]
    stamp = (art / "model.safetensors").stat().st_mtime_ns
    # a different sampling setting is not a different generator: gen_eval alone reuses the artifact
    run_pipeline(compose_cfg(*run[1:], "stages=[gen_eval]", "ar.sampling.cfg=1.0", "run_name=second"))
    assert (art / "model.safetensors").stat().st_mtime_ns == stamp
    records, _ = iter_records(tmp_path / "results")
    assert len([r for _, r in records if r.stage == "gen_eval" and r.role == "model"]) == 2
    summary = json.loads((art / "DONE").read_text())
    assert summary["steps"] == 3


def test_gen_eval_without_generator_says_what_to_run(compose_cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match="generator"):
        run_pipeline(compose_cfg("tokenizer=discrete", *tiny_run(tmp_path)[1:], "stages=[tokenizer,gen_eval]",
                                 "tokenizer.train.steps=1"))
