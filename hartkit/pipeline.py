"""The stages of one experiment and how they hand over.

Each stage is a function ``stage(ctx)``. Stages hand over through artifacts on
disk, found by a hash of the config subtree they depend on, so each can run
alone (``stages=[recon_eval]``) and a sweep over generator settings reuses one
trained tokenizer. Stage functions are imported lazily: running ``preview``
does not import the generator.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from hartkit.config import Config
from hartkit.configs import compose_for_run as compose_run_config  # noqa: F401 - stages and scripts use this name
from hartkit.engine.rng import reseed
from hartkit.errors import UserError
from hartkit.kernels import set_backend as set_kernel_backend
from hartkit.records import ResultRecord, new_run_id, write_record
from hartkit.tokenizers.pretrained import uses_pretrained
from hartkit.utils import distributed as dist_utils
from hartkit.utils.cache import set_cache_root
from hartkit.utils.env import git_commit, hardware_info, resolve_device
from hartkit.utils.experiment_logger import build_logger
from hartkit.utils.hashing import config_hash
from hartkit.utils.identity import identity_exemptions

log = logging.getLogger(__name__)

# stage name -> "module:function"
STAGES: dict[str, str] = {
    "preview": "hartkit.stages.preview:run",
    "tokenizer": "hartkit.stages.tokenizer:run",
    "recon_eval": "hartkit.stages.recon_eval:run",
    "generator": "hartkit.stages.generator:run",
    "gen_eval": "hartkit.stages.gen_eval:run",
    "leaderboard": "hartkit.stages.leaderboard:run",
}

# config subtrees each artifact depends on (a change elsewhere does not retrain it)
ARTIFACT_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "tokenizer": ("data", "tokenizer", "seed"),
    "generator": ("data", "tokenizer", "ar", "seed"),
}


def artifact_exemptions(artifact: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(keys left out of the artifact's hash, keys hashed only when set), as dotted keys inside the subtrees it
    depends on. Declared on the config dataclasses (``setting()`` / ``hashed_when_set()`` fields,
    hartkit/utils/identity.py): logging and checkpoint intervals, gradient accumulation (the same global batch in
    micro-batches: the math is unchanged), loader workers, every ``ar.sampling`` key (sampling is done after
    training). The generator depends on the tokenizer, so what does not change the tokenizer does not change it."""
    ignored, when_set = identity_exemptions(Config)
    roots = ARTIFACT_DEPENDENCIES[artifact]
    return (tuple(k for k in ignored if k.split(".")[0] in roots),
            tuple(k for k in when_set if k.split(".")[0] in roots))


def artifact_dir(cfg: DictConfig, artifact: str) -> Path:
    """Folder of an artifact ('tokenizer', 'generator') of the run configured by ``cfg``, named by its config hash."""
    relevant = OmegaConf.masked_copy(cfg, list(ARTIFACT_DEPENDENCIES[artifact]))
    relevant = OmegaConf.to_container(relevant, resolve=True)
    ignored, when_set = artifact_exemptions(artifact)
    for dotted in (*ignored, *when_set):
        *parents, leaf = dotted.split(".")
        node = relevant
        for p in parents:
            node = node.get(p, {})
        if dotted not in when_set or node.get(leaf) is None:
            node.pop(leaf, None)
    name = cfg.tokenizer.name if artifact == "tokenizer" else f"{cfg.tokenizer.name}-{cfg.ar.name}"
    return Path(cfg.paths.artifacts) / artifact / f"{name}-{config_hash(relevant)}"


class StageError(UserError, RuntimeError):
    """A stage cannot run; the message says why and what to do."""


class StageState(TypedDict, total=False):
    """What one stage hands the next within one run (``RunContext.state``); every key a stage writes is declared
    here (tests/test_architecture.py checks). Across runs the same things are found on disk by the resolver,
    ``hartkit.stages.artifacts``."""

    tokenizer: Any  # the run's tokenizer (a ScaleTokenizer), eval mode
    tokenizer_dir: Path | None  # its artifact folder; None for released weights (tokenizer.checkpoint)
    generator: Any  # the run's generator (ScaleAR), eval mode
    generator_dir: Path  # its artifact folder (the config-hash folder for released weights, ar.checkpoint)
    preview_path: Path  # the preview stage's PNG grid
    recon_metrics: dict[str, Any]  # recon_eval's metrics of the tokenizer
    gen_metrics: dict[str, Any]  # gen_eval's metrics of the generator


@dataclass
class RunContext:
    cfg: DictConfig
    device: torch.device
    run_id: str
    logger: Any
    state: StageState = field(default_factory=StageState)  # in-memory hand-over within one run
    metrics: dict[str, float] = field(default_factory=dict)  # `<stage>/<metric>` of every record saved

    @property
    def results_dir(self) -> Path:
        return Path(self.cfg.paths.results)

    def artifact_dir(self, artifact: str) -> Path:
        """Folder of an artifact ('tokenizer', 'generator'), named by its config hash."""
        return artifact_dir(self.cfg, artifact)

    def resolved_config(self) -> dict[str, Any]:
        return OmegaConf.to_container(self.cfg, resolve=True)  # type: ignore[return-value]

    def save_record(self, record: ResultRecord) -> Path | None:
        """Fill in provenance and write the record (rank 0 only)."""
        record.run_id = self.run_id
        record.config = record.config or self.resolved_config()
        record.hardware = record.hardware or hardware_info(self.device)
        record.git_commit = record.git_commit or git_commit()
        record.command = record.command or " ".join(["python", *sys.argv])
        self.logger.log_record(record.to_dict())
        for name, value in record.metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.metrics[f"{record.stage}/{name}"] = float(value)
        if not dist_utils.is_main():
            return None
        path = write_record(self.results_dir, record)
        log.info("wrote record %s", path)
        return path


def load_stage(name: str):
    if name not in STAGES:
        raise StageError(f"unknown stage {name!r}; known stages: {sorted(STAGES)}")
    module, fn = STAGES[name].split(":")
    try:
        return getattr(importlib.import_module(module), fn)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise StageError(f"stage {name!r} is not available in this version of hartkit ({module} missing)") from exc
        raise


def run_pipeline(cfg: DictConfig) -> RunContext:
    device = resolve_device(cfg.device)
    dist_utils.init_distributed(device.type)
    if device.type == "cuda" and dist_utils.is_dist():
        device = torch.device("cuda", dist_utils.local_rank())
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_kernel_backend(cfg.kernels)
    run_id = dist_utils.broadcast_object(cfg.run_name or new_run_id())
    if OmegaConf.select(cfg, "paths.cache"):
        set_cache_root(cfg.paths.cache)
    used, others = wandb_id_folders(cfg)
    logger = build_logger(cfg.logger, OmegaConf.to_container(cfg, resolve=True), run_name=cfg.run_name,
                          resume=bool(cfg.resume), group=multirun_group(), artifact_dirs=used, resume_dirs=others)
    ctx = RunContext(cfg=cfg, device=device, run_id=run_id, logger=logger)
    stage_fns = [(name, load_stage(name)) for name in cfg.stages]  # fail before any work on a typo
    log.info("run %s on %s: stages %s", run_id, device, list(cfg.stages))
    try:
        for name, fn in stage_fns:
            t0 = time.perf_counter()
            log.info("stage %s: start", name)
            # each stage's randomness depends on (seed, stage, rank) only, not on which stages ran before it
            # in this process: a resumed run that skips finished stages draws exactly what an uninterrupted one does
            reseed(cfg.seed, name, dist_utils.rank())
            fn(ctx)
            log.info("stage %s: done in %.1fs", name, time.perf_counter() - t0)
    finally:
        logger.finish()
    return ctx


# the artifact each stage trains or scores: the W&B run id of a run is kept in those it uses
_STAGE_ARTIFACT = {"tokenizer": "tokenizer", "recon_eval": "tokenizer", "generator": "generator",
                   "gen_eval": "generator"}


def wandb_id_folders(cfg: DictConfig) -> tuple[list[Path], list[Path]]:
    """(artifact folders this run trains or scores, the experiment's other artifact folders): where the W&B run
    id is kept and where ``resume=true`` looks for it (``build_logger``). A pretrained tokenizer has none."""
    if OmegaConf.select(cfg, "logger.name") != "wandb":
        return [], []

    folders = {"generator": artifact_dir(cfg, "generator")}
    if not uses_pretrained(cfg.tokenizer):
        folders["tokenizer"] = artifact_dir(cfg, "tokenizer")
    wanted = {_STAGE_ARTIFACT[stage] for stage in cfg.stages if stage in _STAGE_ARTIFACT}
    used = [folder for name, folder in folders.items() if name in wanted]
    return used, [folder for folder in folders.values() if folder not in used]


def multirun_group() -> str | None:
    """The W&B group of a Hydra multirun job: its sweep folder, which every job of the sweep shares."""
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    return str(hc.sweep.dir)[-128:]  # W&B's limit on a group name


def objective_value(cfg: DictConfig, ctx: RunContext) -> float | None:
    """The ``objective`` metric of this run (what the job returns to Hydra's sweeper), None when unset."""
    name = OmegaConf.select(cfg, "objective")
    if not name:
        return None
    if name not in ctx.metrics:
        raise StageError(f"objective={name} was not measured by this run (stages {list(cfg.stages)}); it measured "
                         f"{sorted(ctx.metrics) or 'nothing'}. Name one of those, or add the stage that scores it "
                         "(recon_eval/<metric> needs recon_eval, gen_eval/<metric> needs gen_eval)")
    return ctx.metrics[name]
