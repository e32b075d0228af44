"""Training loop of the scale-wise generator on a token cache (the engine does the bookkeeping).

AdamW (0.9, 0.95), lr given per 256 images and scaled linearly with the batch,
no weight decay on 1-D parameters and on position / level / class / token
embeddings, warmup + cosine decay, grad clipping, optional EMA, checkpoints
every ``checkpoint_every`` steps (resume continues at the same data
position), NaN guard, tqdm, and a captioned PNG grid of samples.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from hartkit.ar_models.conditioning import dropout_mask
from hartkit.ar_models.model import ScaleAR
from hartkit.ar_models.token_cache import TokenCacheDataset, collate_tokens, to_token_batch
from hartkit.engine import (
    EMA,
    CheckpointManager,
    StepBatches,
    build_adamw,
    check_finite,
    split_batch,
    sync_only_on_last,
    unwrap_model,
    warmup_cosine_schedule,
    wrap_ddp,
)
from hartkit.engine.rng import derive_seed, private_generator, reseed
from hartkit.utils import distributed as dist_utils

log = logging.getLogger(__name__)

NO_DECAY_KEYWORDS = ("pos_", "lvl_embed", "class_emb", "tok_embed")


class _LossModule(nn.Module):
    """forward() = the model's loss, so DistributedDataParallel sees the call and syncs gradients."""

    def __init__(self, model: ScaleAR, keep: float):
        super().__init__()
        self.model, self.keep = model, keep

    def forward(self, batch, generator=None):
        return self.model.loss(batch, final_scale_keep=self.keep, generator=generator)


@dataclass
class GeneratorTrainResult:
    model: ScaleAR  # the weights to evaluate (the EMA copy when EMA is on)
    step: int
    summary: dict = field(default_factory=dict)
    grid_path: Path | None = None


def condition_inputs(model: ScaleAR, batch: dict, condition: str):
    return batch["category_id"] if condition == "class" else list(batch["prompt"])


def train_generator(model: ScaleAR, cache: dict, ar_cfg, artifact_dir: Path, device: torch.device, seed: int = 0,
                    resume: bool = False, logger=None,
                    grid_fn: Callable[[ScaleAR, int, Path], Path | None] | None = None) -> GeneratorTrainResult:
    tcfg = ar_cfg.train
    steps = int(tcfg.steps)
    model.to(device).train()
    lr = float(tcfg.lr) * tcfg.batch_size / 256
    opt = build_adamw(model, lr, betas=tuple(tcfg.betas), weight_decay=tcfg.weight_decay,
                      no_decay_keywords=NO_DECAY_KEYWORDS)
    sched = warmup_cosine_schedule(opt, tcfg.warmup_steps, steps, min_lr_ratio=tcfg.min_lr_ratio)
    ema = EMA(model, tcfg.ema_decay) if tcfg.ema_decay > 0 else None
    ckpt = CheckpointManager(Path(artifact_dir) / "checkpoints", keep=2)
    start = 0
    running: dict[str, float] = {}  # smoothed metrics for the progress bar and the summary (checkpointed too)
    if resume and ckpt.latest_step() is not None:
        extra = ckpt.load(models={"model": model, "ema": ema.module if ema else None}, optimizers={"opt": opt},
                          schedulers={"sched": sched}, map_location=device)
        start = extra["step"]
        running = {k: float(v) for k, v in extra.get("running", {}).items()}
    else:
        ckpt.set_aside()
    dataset = TokenCacheDataset(cache)
    batches = StepBatches(dataset, tcfg.batch_size, seed, start_step=start, collate_fn=collate_tokens)
    runner = wrap_ddp(_LossModule(model, float(tcfg.final_scale_keep)), device)
    use_amp = bool(tcfg.amp) and device.type == "cuda"
    accum = int(tcfg.grad_accum)
    grid_path = None
    bar = tqdm(range(start, steps), desc=f"generator {ar_cfg.name}", initial=start, total=steps,
               disable=not dist_utils.is_main())
    for step in bar:
        batch = next(batches)
        # the step's randomness (dropout, condition dropout, kept final-scale tokens, sampled codes, diffusion
        # t / noise) comes from (seed, step, rank) alone, so a resumed run repeats it exactly whatever else
        # (a sample grid, a kill and restart) touched the global RNG before
        step_seed = reseed(seed, "generator", step, dist_utils.rank())
        drop_gen = private_generator(derive_seed(step_seed, "condition_dropout"))
        step_gen = private_generator(derive_seed(step_seed, "loss"), device)
        cond = condition_inputs(model, batch, ar_cfg.condition)
        drop = dropout_mask(len(batch["prompt"]), float(tcfg.cond_drop_p), drop_gen)
        cond = model.cond_module.apply_dropout(cond, drop)
        opt.zero_grad(set_to_none=True)
        parts = list(zip(split_batch(batch, accum), split_batch(cond, accum)))
        metrics = {}
        for j, (micro, micro_cond) in enumerate(parts):
            tb = to_token_batch(micro, micro_cond, device)
            with sync_only_on_last(runner, j == len(parts) - 1), \
                    torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss, micro_metrics = runner(tb, generator=step_gen)
            check_finite(loss, step)
            (loss / accum).backward()
            for k, v in micro_metrics.items():
                metrics[k] = metrics.get(k, 0.0) + v / accum
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip) if tcfg.grad_clip > 0 else None
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(model)
        for k, v in metrics.items():
            running[k] = 0.9 * running.get(k, v) + 0.1 * v
        done = step + 1
        if done % max(1, tcfg.log_every) == 0 or done == steps:
            bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()})
            if logger is not None:
                logs = {f"generator/{k}": v for k, v in metrics.items()}
                logs["generator/lr"] = sched.get_last_lr()[0]
                if gnorm is not None:
                    logs["generator/grad_norm"] = float(gnorm)
                logger.log_metrics(logs, step=done)
        if tcfg.checkpoint_every and done % tcfg.checkpoint_every == 0 and done < steps:
            ckpt.save(done, models={"model": model, "ema": ema.module if ema else None}, optimizers={"opt": opt},
                      schedulers={"sched": sched}, extra={"running": running})
        if grid_fn is not None and tcfg.grid_every and done % tcfg.grid_every == 0 and done < steps:
            grid_path = grid_fn(ema.module if ema else model, done, Path(artifact_dir)) or grid_path
            model.train()
    final = unwrap_model(ema.module if ema else model)
    final.eval()
    if grid_fn is not None:
        grid_path = grid_fn(final, steps, Path(artifact_dir)) or grid_path
    summary = {"steps": steps, "lr": lr, **{f"final_{k}": v for k, v in running.items()},
               "parameters": final.parameter_groups()}
    if not all(math.isfinite(v) for v in running.values()):
        log.warning("non-finite running metrics at the end: %s", running)
    return GeneratorTrainResult(model=final, step=steps, summary=summary, grid_path=grid_path)
