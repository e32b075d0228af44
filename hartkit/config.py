"""The structured (dataclass) schema behind `conf/`.

Hydra validates every override against these dataclasses, so a typo in a key
or a value of the wrong type fails with the key's name instead of being
silently ignored. Each part of hartkit owns the schema of its config group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore

from hartkit.ar_models.config import ARConfig
from hartkit.data.config import DataConfig
from hartkit.eval.config import EvalConfig
from hartkit.tokenizers.config import TokenizerConfig

DEFAULT_STAGES = ["tokenizer", "recon_eval", "generator", "gen_eval", "leaderboard"]


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb
    project: str = "hartkit"
    entity: Optional[str] = None
    mode: Optional[str] = None  # online | offline | disabled; None: WANDB_MODE or online
    tags: list[str] = field(default_factory=list)
    group: Optional[str] = None  # W&B group; None: the sweep folder of a Hydra multirun (its jobs share it)
    log_images: bool = True


@dataclass
class PathsConfig:
    results: str = "results"  # result records + leaderboard
    artifacts: str = "artifacts"  # checkpoints, token caches, grids (found by config hash)
    # built datasets, shared by every run, process and rank; None: $HARTKIT_CACHE_DIR, else ~/.cache/hartkit
    cache: Optional[str] = None


@dataclass
class Config:
    stages: list[str] = field(default_factory=lambda: list(DEFAULT_STAGES))
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    kernels: str = "auto"  # auto | triton | torch
    resume: bool = False  # continue training from the last checkpoint of the same artifact
    retrain: bool = False  # ignore a finished artifact with the same config hash
    run_name: Optional[str] = None
    threads: Optional[int] = None  # torch CPU threads (None: torch's default)
    preview_samples: int = 16  # images in the preview stage's grid
    # the metric the job returns to Hydra (an optimising sweeper such as Optuna reads it), `<stage>/<metric>`
    # as in the W&B summary, e.g. recon_eval/psnr or gen_eval/fd_embedded; None: the job returns nothing
    objective: Optional[str] = None
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    ar: ARConfig = field(default_factory=ARConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="hartkit_schema", node=Config)
    from hartkit.tokenizers.quantizers import store_schemas  # tokenizer/quantizer=fsq|lfq|bsq|...: their keys

    store_schemas(cs)
