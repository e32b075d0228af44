"""The training fields every trainer shares (``tokenizer.train``, ``ar.train`` extend it).

The defaults are the tokenizer's; a trainer's config overrides the ones its recipe sets differently
(a field redeclared in a subclass keeps its place and takes the new default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hartkit.utils.identity import hashed_when_set, setting


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 8
    grad_accum: int = setting(default=1)  # micro-batches per step (same global batch, less activation memory)
    lr: float = 2e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # 0 disables clipping
    ema_decay: float = 0.0  # 0 disables weight EMA
    checkpoint_every: int = setting(default=500)  # 0: only at the end
    log_every: int = setting(default=100)
    grid_every: int = setting(default=0)  # 0: only at the end
    amp: bool = True  # bf16 autocast on GPU
    # bf16 autocast on CPU: true | false | auto (on where the CPU has native bf16); None: off. Hashed only when
    # set, so the generators' artifacts from before the field existed keep their names
    cpu_amp: Any = hashed_when_set(default=None)
    # torch CPU threads while this trainer runs (None: the run's `threads`). Not hashed, as `threads`: the count
    # changes float summation order only. At small batches one thread can beat two (results/bench_train_loop.md)
    threads: Any = setting(default=None)
