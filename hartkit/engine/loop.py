"""The one training loop of hartkit: a ``TrainingTask`` supplies its loss and hooks, ``train`` does the rest.

What the loop owns, for every trainer alike:

- AdamW with the no-decay groups and warmup + cosine decay (``hartkit.engine.optim``);
- one random-state policy: step ``s`` of rank ``r`` starts from ``reseed(seed, task.name, s, r)``
  (``hartkit.engine.rng``), and the data of step ``s`` depends on (seed, s) only (``StepBatches``), so a
  resumed run repeats an uninterrupted one exactly;
- gradient accumulation over micro-batches (gradients all-reduced on the last one), autocast
  (``hartkit.engine.precision``), the non-finite-loss guard, gradient clipping, weight EMA;
- metrics: per-step values to the experiment logger every ``log_every`` steps, a smoothed copy for the
  progress bar and the summary (checkpointed, so a resumed run reports the same);
- crash-safe checkpoints every ``checkpoint_every`` steps and at the end, and resume from the newest;
- sample grids every ``grid_every`` steps and at the end (the task draws them).

What a task supplies: the module to train, the module DDP wraps (its forward computes the loss, so gradients
are synchronised), the data, a loss per micro-batch, and optional hooks for extra modules (a discriminator),
work after an update (dead-code re-initialisation) and state to checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from hartkit.engine.accumulate import split_batch, sync_only_on_last
from hartkit.engine.batches import StepBatches
from hartkit.engine.checkpoint import CheckpointManager
from hartkit.engine.config import TrainConfig
from hartkit.engine.ddp import unwrap_model, wrap_ddp
from hartkit.engine.ema import EMA
from hartkit.engine.guard import check_finite
from hartkit.engine.optim import build_adamw, warmup_cosine_schedule
from hartkit.engine.precision import autocast_for, describe_precision
from hartkit.engine.rng import reseed
from hartkit.utils import distributed as dist_utils
from hartkit.utils.env import torch_threads

log = logging.getLogger(__name__)

SMOOTHING = 0.9  # weight of the past in the smoothed metrics of the progress bar and the summary


@dataclass
class TrainResult:
    model: nn.Module  # the weights to keep (the EMA copy when EMA is on), in eval mode
    step: int  # completed steps
    finished: bool  # reached cfg.steps (False when stopped early by ``stop_after``)
    summary: dict[str, Any] = field(default_factory=dict)
    grid_path: Path | None = None


class TrainingTask:
    """What one kind of training adds to the loop. Subclasses set the attributes and implement ``loss``."""

    name: str  # the random stream and the metrics' prefix ("tokenizer", "generator")
    label: str  # the progress bar's title
    model: nn.Module  # the module trained, clipped, averaged and checkpointed as "model"
    runner: nn.Module  # the module DDP wraps; the task calls it inside ``loss``
    dataset: Dataset
    collate_fn: Callable | None = None
    lr: float
    no_decay_keywords: tuple[str, ...] = ()

    def micro_batches(self, batch: Any, parts: int, step_seed: int) -> list[Any]:
        """The step's batch cut into ``parts`` micro-batches (a task draws per-step randomness here)."""
        return split_batch(batch, parts)

    def loss(self, runner: nn.Module, micro: Any, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one micro-batch (called under autocast) and the metrics to log."""
        raise NotImplementedError

    def after_backward(self, micro: Any, step: int, is_last: bool) -> None:
        """After a micro-batch's backward (a discriminator trains here)."""

    def after_update(self, step: int) -> None:
        """After the optimizer, scheduler and EMA updates of step ``step`` (1-based: the steps done)."""

    def step_metrics(self) -> dict[str, float]:
        """Metrics of the finished step that are not averaged over micro-batches (codebook usage)."""
        return {}

    def extra_modules(self) -> dict[str, nn.Module | None]:
        """Modules besides the model whose weights are checkpointed (a discriminator)."""
        return {}

    def extra_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers the task steps itself (in ``after_backward``); the loop zeroes and checkpoints them."""
        return {}

    def checkpoint_extra(self) -> dict[str, Any]:
        return {}

    def restore(self, extra: dict[str, Any]) -> None:
        """Read back what ``checkpoint_extra`` saved."""

    def grid(self, model: nn.Module, step: int, final: bool) -> Path | None:
        """Draw a sample / reconstruction grid of ``model`` (every rank calls; the task decides who draws)."""
        return None

    def postfix(self, smoothed: dict[str, float]) -> dict[str, str]:
        return {k: f"{v:.3f}" for k, v in smoothed.items()}


def _checkpoint_parts(task: TrainingTask, ema: EMA | None, opt, sched):
    models = {"model": task.model, "ema": ema.module if ema else None, **task.extra_modules()}
    return dict(models=models, optimizers={"opt": opt, **task.extra_optimizers()}, schedulers={"sched": sched})


def train(task: TrainingTask, cfg: TrainConfig, out_dir: str | os.PathLike, device: torch.device, seed: int = 0,
          resume: bool = False, logger=None, stop_after: int | None = None) -> TrainResult:
    """Train ``task.model`` for ``cfg.steps`` steps; checkpoints go to ``out_dir/checkpoints``.

    ``stop_after`` stops after that many steps of this call (what a killed run looks like to the next one).
    ``cfg.threads`` sets torch's CPU threads for the duration of this call (the previous count comes back)."""
    threads = cfg.threads if device.type == "cpu" else None
    if threads:
        log.info("%s training on %d CPU thread(s) (train.threads)", task.name, int(threads))
    with torch_threads(threads):
        return _train(task, cfg, out_dir, device, seed, resume, logger, stop_after)


def _train(task: TrainingTask, cfg: TrainConfig, out_dir: str | os.PathLike, device: torch.device, seed: int,
           resume: bool, logger, stop_after: int | None) -> TrainResult:
    steps, accum = int(cfg.steps), int(cfg.grad_accum)
    model = task.model
    runner = wrap_ddp(task.runner, device)
    opt = build_adamw(model, task.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                      no_decay_keywords=task.no_decay_keywords)
    sched = warmup_cosine_schedule(opt, cfg.warmup_steps, steps, cfg.min_lr_ratio)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    ckpt = CheckpointManager(Path(out_dir) / "checkpoints", keep=2)
    start = 0
    smoothed: dict[str, float] = {}
    if resume and ckpt.latest_step() is not None:
        extra = ckpt.load(**_checkpoint_parts(task, ema, opt, sched), map_location=device)
        start = extra["step"]
        smoothed = {k: float(v) for k, v in extra.get("running", {}).items()}
        task.restore(extra)
        log.info("resuming %s training at step %d of %d", task.name, start, steps)
    else:
        ckpt.set_aside()

    def save(step: int) -> None:
        ckpt.save(step, **_checkpoint_parts(task, ema, opt, sched), extra={**task.checkpoint_extra(),
                                                                          "running": smoothed})

    def current() -> nn.Module:
        return unwrap_model(ema.module if ema is not None else model)

    batches = StepBatches(task.dataset, cfg.batch_size, seed, start_step=start, collate_fn=task.collate_fn)
    log.info("%s training precision: %s", task.name, describe_precision(device, cfg.amp, cfg.cpu_amp))
    runner.train()
    grid_path = None
    step = start
    t0 = time.perf_counter()
    bar = tqdm(total=steps, initial=start, desc=task.label, disable=not dist_utils.is_main(), dynamic_ncols=True,
               mininterval=2.0)
    while step < steps and (stop_after is None or step - start < stop_after):
        batch = next(batches)
        # the step's randomness depends on (seed, step, rank) only, so a resumed run draws exactly what an
        # uninterrupted one does, whatever else (a sample grid, a kill and restart) touched the global RNG before
        step_seed = reseed(seed, task.name, step, dist_utils.rank())
        parts = task.micro_batches(batch, accum, step_seed)
        opt.zero_grad(set_to_none=True)
        for extra_opt in task.extra_optimizers().values():
            extra_opt.zero_grad(set_to_none=True)
        metrics: dict[str, float] = {}
        for j, micro in enumerate(parts):
            is_last = j == len(parts) - 1
            with sync_only_on_last(runner, is_last), autocast_for(device, cfg.amp, cfg.cpu_amp):
                loss, micro_metrics = task.loss(runner, micro, step)
            check_finite(loss, step)  # NonFiniteLossError names the step; the last checkpoint stays
            (loss / len(parts)).backward()
            task.after_backward(micro, step, is_last)
            for k, v in micro_metrics.items():
                metrics[k] = metrics.get(k, 0.0) + float(v) / len(parts)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(model)
        step += 1
        task.after_update(step)

        metrics.update(task.step_metrics())
        metrics["lr"] = sched.get_last_lr()[0]
        if grad_norm is not None:
            metrics["grad_norm"] = float(grad_norm)
        for k, v in metrics.items():
            smoothed[k] = SMOOTHING * smoothed.get(k, v) + (1 - SMOOTHING) * v
        bar.set_postfix(task.postfix({k: v for k, v in smoothed.items() if k not in ("lr", "grad_norm")}),
                        refresh=False)
        bar.update(1)
        if step % max(1, cfg.log_every) == 0 or step == steps:
            if logger is not None:
                logger.log_metrics({f"{task.name}/{k}": v for k, v in metrics.items()}, step=step)
            log.info("%s step %d/%d %s", task.name, step, steps, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == steps:
            save(step)
        if cfg.grid_every and step % cfg.grid_every == 0 and step < steps:
            grid_path = task.grid(current(), step, final=False) or grid_path
            runner.train()
    bar.close()
    final = current()
    final.eval()
    finished = step >= steps
    if finished:
        grid_path = task.grid(final, step, final=True) or grid_path
    if not all(math.isfinite(v) for v in smoothed.values()):
        log.warning("non-finite smoothed metrics at the end: %s", smoothed)
    summary = {"steps": step, "wall_seconds_this_run": round(time.perf_counter() - t0, 2),
               **{f"final_{k}": v for k, v in smoothed.items()}}
    return TrainResult(model=final, step=step, finished=finished, summary=summary, grid_path=grid_path)
