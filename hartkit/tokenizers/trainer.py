"""Training loop of a MultiScaleTokenizer on any map-style dataset of ``{"image": (3, H, W) in [-1, 1]}``.

Knows nothing about where the images come from (the stage builds the dataset).
Checkpoints every ``checkpoint_every`` steps through the engine, so a killed run
continues with ``resume=True`` at the same step and data position.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

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
from hartkit.engine.precision import autocast_for, describe_precision
from hartkit.engine.rng import reseed
from hartkit.tokenizers.grid import save_reconstruction_grid
from hartkit.tokenizers.losses import (
    PatchDiscriminator,
    adaptive_gan_weight,
    build_lpips,
    hinge_d_loss,
    reconstruction_loss,
)
from hartkit.tokenizers.tokenizer import MultiScaleTokenizer
from hartkit.utils import distributed as dist_utils

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: MultiScaleTokenizer  # the weights to keep (EMA copy when ema_decay > 0), eval mode
    step: int  # completed steps
    finished: bool  # reached train.steps (False when stopped early by ``stop_after``)
    summary: dict[str, Any] = field(default_factory=dict)
    grid_path: Path | None = None


def _preview_batch(dataset: Dataset, n: int) -> torch.Tensor:
    n = min(n, len(dataset))  # type: ignore[arg-type]
    return torch.stack([dataset[i]["image"] for i in range(n)])


def _sync_codebook(quantizer) -> None:
    """After a dead-code re-initialisation on rank 0, give every rank the same codebook."""
    if dist_utils.is_dist():
        torch.distributed.broadcast(quantizer.embedding.weight.data, src=0)
        torch.distributed.broadcast(quantizer.ema_vocab_hit_SV, src=0)


def train_tokenizer(model: MultiScaleTokenizer, dataset: Dataset, tok_cfg, out_dir: str | os.PathLike,
                    device: torch.device, seed: int = 0, resume: bool = False, collate_fn=None, logger=None,
                    stop_after: int | None = None, preview_images: torch.Tensor | None = None) -> TrainResult:
    """Train ``model`` for ``tok_cfg.train.steps`` steps; checkpoints go to ``out_dir/checkpoints``.

    ``stop_after`` stops after that many steps of this call (what a killed run
    looks like to the next one); used by tests of resuming.
    """
    tcfg, qcfg = tok_cfg.train, tok_cfg.quantizer
    out_dir = Path(out_dir)
    model.to(device)
    core = model
    ddp_model = wrap_ddp(model, device)
    opt = build_adamw(core, lr=tcfg.lr, betas=tuple(tcfg.betas), weight_decay=tcfg.weight_decay)
    sched = warmup_cosine_schedule(opt, tcfg.warmup_steps, tcfg.steps, tcfg.min_lr_ratio)
    ema = EMA(core, tcfg.ema_decay) if tcfg.ema_decay > 0 else None
    lpips = None
    if tcfg.lpips_weight > 0:
        lpips = build_lpips(tcfg.lpips_weights).to(device)
    disc = disc_opt = None
    if tcfg.gan_weight > 0:
        disc = PatchDiscriminator(tcfg.disc_ch, tcfg.disc_layers).to(device)
        disc_opt = torch.optim.AdamW(disc.parameters(), lr=tcfg.disc_lr or tcfg.lr, betas=tuple(tcfg.betas))
        disc = wrap_ddp(disc, device)

    ckpt = CheckpointManager(out_dir / "checkpoints", keep=2)
    start = 0
    if resume and ckpt.latest_step() is not None:
        extra = ckpt.load(models={"model": core, "ema": ema.module if ema else None,
                                  "disc": unwrap_model(disc) if disc is not None else None},
                          optimizers={"opt": opt, **({"disc_opt": disc_opt} if disc_opt else {})},
                          schedulers={"sched": sched}, map_location=device)
        start = extra["step"]
        if core.kind != "continuous":
            core.quantize._hit_updates = int(extra.get("hit_updates", 0))
        log.info("resuming tokenizer training at step %d of %d", start, tcfg.steps)
    else:
        ckpt.set_aside()

    batches = StepBatches(dataset, tcfg.batch_size, seed=seed, start_step=start, collate_fn=collate_fn)
    if preview_images is None:
        preview_images = _preview_batch(dataset, tcfg.grid_images)
    discrete = core.kind != "continuous"
    reinit = discrete and qcfg.dead_code_reinit and not core.frozen_quantizer_path
    last_layer = core.decoder.conv_out.weight

    def save_ckpt(step: int) -> None:
        extra = {"hit_updates": core.quantize._hit_updates} if discrete else {}
        ckpt.save(step, models={"model": core, "ema": ema.module if ema else None,
                                "disc": unwrap_model(disc) if disc is not None else None},
                  optimizers={"opt": opt, **({"disc_opt": disc_opt} if disc_opt else {})},
                  schedulers={"sched": sched}, extra=extra)

    accum = int(tcfg.grad_accum)
    log.info("tokenizer training precision: %s", describe_precision(device, tcfg.amp, tcfg.cpu_amp))
    ddp_model.train()
    step = start
    t0 = time.perf_counter()
    postfix: dict[str, Any] = {}
    bar = tqdm(total=tcfg.steps, initial=start, desc=f"tokenizer[{core.kind}]", disable=not dist_utils.is_main(),
               dynamic_ncols=True, mininterval=2.0)
    last: dict[str, float] = {}
    while step < tcfg.steps:
        if stop_after is not None and step - start >= stop_after:
            break
        batch = next(batches)
        # the step's randomness (posterior noise, residual drop, dead codes) depends on (seed, step, rank)
        # only, so a resumed run draws exactly what an uninterrupted one does
        reseed(seed, "tokenizer", step, dist_utils.rank())
        gan_on = disc is not None and step >= tcfg.gan_start_step
        micro_batches = split_batch(batch["image"], accum)
        opt.zero_grad(set_to_none=True)
        if disc_opt is not None:
            disc_opt.zero_grad(set_to_none=True)
        sums = {"loss": 0.0, "rec": 0.0, "aux": 0.0}
        for j, micro in enumerate(micro_batches):
            img = micro.to(device, non_blocking=True)
            is_last = j == len(micro_batches) - 1
            with sync_only_on_last(ddp_model, is_last), autocast_for(device, tcfg.amp, tcfg.cpu_amp):
                out = ddp_model(img)
                rec = reconstruction_loss(out.recon, img, tcfg.l1_weight, tcfg.l2_weight)
                if lpips is not None:
                    rec = rec + tcfg.lpips_weight * lpips(out.recon.float().clamp(-1, 1), img.float()).mean()
                loss = rec + out.aux_loss
                if gan_on:
                    unwrap_model(disc).requires_grad_(False)  # the generator loss must not train the critic
                    g_loss = -disc(out.recon).float().mean()
                    weight = adaptive_gan_weight(rec, g_loss, last_layer)
                    loss = loss + tcfg.gan_weight * weight * g_loss
                    unwrap_model(disc).requires_grad_(True)
            check_finite(loss, step)  # NonFiniteLossError names the step; the last checkpoint stays
            (loss / accum).backward()
            if gan_on:
                with sync_only_on_last(disc, is_last), autocast_for(device, tcfg.amp, tcfg.cpu_amp):
                    d_loss = hinge_d_loss(disc(img), disc(out.recon.detach()))
                (d_loss / accum).backward()
            for name, value in (("loss", loss), ("rec", rec), ("aux", out.aux_loss)):
                sums[name] += float(value.detach()) / accum
        grad_norm = torch.nn.utils.clip_grad_norm_(core.parameters(), tcfg.grad_clip) if tcfg.grad_clip > 0 else None
        opt.step()
        sched.step()
        if gan_on:
            disc_opt.step()
        if ema is not None:
            ema.update(core)
        step += 1
        # also after the first step: replaces the tiny initial codebook by real residual vectors (a data init)
        if reinit and (step == 1 or step % qcfg.dead_code_every == 0) and step < tcfg.steps:
            if dist_utils.is_main():
                n = core.quantize.reinit_dead_codes(qcfg.dead_code_threshold)
                if n:
                    log.debug("step %d: re-initialised %d dead codes", step, n)
            _sync_codebook(core.quantize)

        last = {**sums, "lr": sched.get_last_lr()[0]}
        if grad_norm is not None:
            last["grad_norm"] = float(grad_norm)
        if discrete:
            last["usage"] = out.stats.get("codebook_usage", 0.0)
        if core.kind == "hybrid":
            last["residual"] = float(out.used_residual)
        postfix = {"loss": f"{last['loss']:.4f}"}
        if discrete:
            postfix["usage"] = f"{last['usage']:.2f}"
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)
        if logger is not None and (step % tcfg.log_every == 0 or step == tcfg.steps):
            logger.log_metrics({f"tokenizer/{k}": v for k, v in last.items()}, step=step)
        if step % tcfg.log_every == 0:
            log.info("step %d/%d %s", step, tcfg.steps, " ".join(f"{k}={v:.4g}" for k, v in last.items()))
        if step % tcfg.checkpoint_every == 0 or step == tcfg.steps:
            save_ckpt(step)
        if tcfg.grid_every and step % tcfg.grid_every == 0 and step < tcfg.steps and dist_utils.is_main():
            path = save_reconstruction_grid(core, preview_images, out_dir / f"grid_step{step:07d}.png")
            if logger is not None:
                logger.log_image("tokenizer/reconstructions", str(path), caption=f"step {step}", step=step)
            ddp_model.train()
    bar.close()
    wall = time.perf_counter() - t0
    final = ema.module if ema is not None else core
    final.eval()
    finished = step >= tcfg.steps
    grid_path = None
    if finished and dist_utils.is_main():
        grid_path = save_reconstruction_grid(final, preview_images, out_dir / "reconstructions.png")
    summary = {"steps": step, "wall_seconds_this_run": round(wall, 2), **{f"final_{k}": v for k, v in last.items()}}
    return TrainResult(model=final, step=step, finished=finished, summary=summary, grid_path=grid_path)
