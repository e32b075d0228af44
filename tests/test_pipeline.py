"""Stage dispatch and artifact hashing of the pipeline."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from hartkit import pipeline
from hartkit.pipeline import RunContext, StageError, artifact_dir, run_pipeline


def test_unknown_stage_fails_before_any_stage_runs(compose_cfg, monkeypatch, tmp_path):
    monkeypatch.setitem(pipeline.STAGES, "probe", "tests.test_pipeline:_probe_stage")
    with pytest.raises(StageError, match="no_such_stage"):
        run_pipeline(compose_cfg("stages=[probe,no_such_stage]", "run_name=never"))
    assert not list(tmp_path.rglob("probe-never"))


def _probe_stage(ctx: RunContext) -> None:
    ctx.results_dir.mkdir(parents=True, exist_ok=True)
    (ctx.results_dir / f"probe-{ctx.run_id}").touch()
    ctx.state.setdefault("probe_runs", []).append(ctx.run_id)
    ctx.state["probe"] = ctx.artifact_dir("tokenizer")



def test_stages_run_in_order_and_share_state(compose_cfg, monkeypatch):
    monkeypatch.setitem(pipeline.STAGES, "probe", "tests.test_pipeline:_probe_stage")
    ctx = run_pipeline(compose_cfg("stages=[probe,probe]", "run_name=abc"))
    assert ctx.state["probe_runs"] == ["abc", "abc"]
    assert (ctx.results_dir / "probe-abc").exists()
    assert ctx.state["probe"].name.startswith("hybrid-")


def test_artifacts_depend_only_on_what_changes_their_weights(compose_cfg):
    from hartkit.utils.env import resolve_device
    from hartkit.utils.experiment_logger import NullLogger

    def ctx_for(*overrides):
        return RunContext(cfg=compose_cfg(*overrides), device=resolve_device("cpu"), run_id="x", logger=NullLogger())

    base = ctx_for()
    assert ctx_for("ar.sampling.cfg=1.0").artifact_dir("tokenizer") == base.artifact_dir("tokenizer")
    assert ctx_for("ar.sampling.cfg=1.0").artifact_dir("generator") == base.artifact_dir("generator")
    assert ctx_for("ar.depth=2").artifact_dir("generator") != base.artifact_dir("generator")
    assert ctx_for("ar.depth=2").artifact_dir("tokenizer") == base.artifact_dir("tokenizer")
    assert ctx_for("tokenizer.train.steps=7").artifact_dir("tokenizer") != base.artifact_dir("tokenizer")
    assert ctx_for("eval.num_images=10").artifact_dir("generator") == base.artifact_dir("generator")
    # a data key added after artifacts existed (ImageNet's resize ratio) changes the hash only when it is set,
    # so artifacts trained before it keep their folders
    without = OmegaConf.masked_copy(base.cfg, [k for k in base.cfg if k != "data"])
    without.data = OmegaConf.create({k: v for k, v in base.cfg.data.items() if k != "mid_reso"})
    assert artifact_dir(without, "tokenizer") == base.artifact_dir("tokenizer")
    assert ctx_for("data.mid_reso=1.125").artifact_dir("tokenizer") != base.artifact_dir("tokenizer")
