"""Training building blocks shared by the tokenizer and generator stages."""

from hartkit.engine.accumulate import split_batch, sync_only_on_last
from hartkit.engine.artifact import (
    finish_artifact,
    is_finished,
    load_artifact_weights,
    mark_unfinished,
    read_summary,
)
from hartkit.engine.batches import StepBatches
from hartkit.engine.checkpoint import CheckpointError, CheckpointManager
from hartkit.engine.ddp import unwrap_model, wrap_ddp
from hartkit.engine.ema import EMA
from hartkit.engine.guard import NonFiniteLossError, check_finite
from hartkit.engine.optim import build_adamw, warmup_cosine_schedule

__all__ = [
    "EMA",
    "CheckpointError",
    "CheckpointManager",
    "NonFiniteLossError",
    "StepBatches",
    "build_adamw",
    "check_finite",
    "unwrap_model",
    "warmup_cosine_schedule",
    "wrap_ddp",
    "split_batch",
    "sync_only_on_last",
    "finish_artifact",
    "is_finished",
    "mark_unfinished",
    "load_artifact_weights",
    "read_summary",
]
