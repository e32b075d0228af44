"""Stage dispatch and artifact hashing of the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pytest
from omegaconf import OmegaConf

from hartkit import pipeline
from hartkit.pipeline import RunContext, StageError, artifact_dir, run_pipeline
from hartkit.utils.identity import hashed_when_set, identity_exemptions, setting


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


# the hand-kept lists artifact_dir used before the keys were declared on the config dataclasses: frozen here, so
# a declaration that adds or drops a key (and so renames every existing artifact folder) fails this test
_FROZEN_TOKENIZER_IGNORED = ("data.num_workers", "data.cache_dir", "tokenizer.train.grad_accum",
                             "tokenizer.train.log_every", "tokenizer.train.grid_every", "tokenizer.train.grid_images",
                             "tokenizer.train.checkpoint_every",
                             # added later as settings (thread counts): ignored keys never entered a hash, so
                             # adding one keeps every folder's name
                             "tokenizer.train.threads")
_FROZEN_IGNORED = {"tokenizer": _FROZEN_TOKENIZER_IGNORED,
                   "generator": (*_FROZEN_TOKENIZER_IGNORED, "ar.sampling", "ar.train.grad_accum",
                                 "ar.train.log_every", "ar.train.grid_every", "ar.train.grid_size",
                                 "ar.train.checkpoint_every", "ar.train.threads")}
# ar.train.cpu_amp: the shared TrainConfig gave the generators the field (None: off, as before it existed);
# ar.train.detach_diffusion_condition, ar.train.input_noise: research options (None: HART / off);
# data.noise_grain: None is the grain every earlier scene has
_FROZEN_HASHED_WHEN_SET = ("ar.checkpoint", "data.mid_reso", "ar.train.cpu_amp", "ar.train.detach_diffusion_condition",
                           "ar.train.input_noise", "data.noise_grain")


def _frozen_artifact_dir(cfg, artifact: str):
    """artifact_dir as it was, from the frozen lists."""
    from pathlib import Path

    from hartkit.utils.hashing import config_hash

    relevant = OmegaConf.to_container(OmegaConf.masked_copy(cfg, list(pipeline.ARTIFACT_DEPENDENCIES[artifact])),
                                      resolve=True)
    for dotted in (*_FROZEN_IGNORED[artifact], *_FROZEN_HASHED_WHEN_SET):
        *parents, leaf = dotted.split(".")
        node = relevant
        for p in parents:
            node = node.get(p, {})
        if dotted not in _FROZEN_HASHED_WHEN_SET or node.get(leaf) is None:
            node.pop(leaf, None)
    name = cfg.tokenizer.name if artifact == "tokenizer" else f"{cfg.tokenizer.name}-{cfg.ar.name}"
    return Path(cfg.paths.artifacts) / artifact / f"{name}-{config_hash(relevant)}"


@pytest.mark.parametrize("artifact", ["tokenizer", "generator"])
def test_the_declared_exemptions_are_the_frozen_lists(artifact):
    ignored, when_set = pipeline.artifact_exemptions(artifact)
    assert sorted(ignored) == sorted(_FROZEN_IGNORED[artifact])
    wanted_when_set = [k for k in _FROZEN_HASHED_WHEN_SET if k.split(".")[0] in pipeline.ARTIFACT_DEPENDENCIES[artifact]]
    assert sorted(when_set) == sorted(wanted_when_set)


@pytest.mark.parametrize("overrides", [[], ["tokenizer=discrete"], ["tokenizer=continuous"], ["tokenizer=hybrid"],
                                       ["tokenizer=hybrid_hart_recipe"], ["experiment=smoke"], ["ar=var_d16"],
                                       ["data.mid_reso=1.2", "ar.checkpoint=/weights/var_d16.pth"],
                                       ["data.num_workers=3", "ar.sampling.cfg=1.5", "tokenizer.train.log_every=9"]],
                         ids=lambda o: " ".join(o) or "defaults")
def test_existing_artifact_folders_keep_their_names(overrides):
    from hartkit.pipeline import compose_run_config

    cfg = compose_run_config(overrides)
    for artifact in ("tokenizer", "generator"):
        assert artifact_dir(cfg, artifact) == _frozen_artifact_dir(cfg, artifact), (artifact, overrides)


@dataclass
class _Inner:
    weight: int = 1
    every: int = setting(default=5)


@dataclass
class _Outer:
    inner: _Inner = field(default_factory=_Inner)
    maybe: Optional[_Inner] = None
    skipped: _Inner = setting(default_factory=_Inner)
    added: Optional[str] = hashed_when_set(default=None)


@dataclass
class _Misspelt:
    every: int = field(default=1, metadata={"identity": "no"})


def test_identity_marks_are_read_from_nested_and_optional_dataclasses():
    assert identity_exemptions(_Outer, "x.") == (("x.inner.every", "x.maybe.every", "x.skipped"), ("x.added",))
    with pytest.raises(ValueError, match="_Misspelt.every"):
        identity_exemptions(_Misspelt)
