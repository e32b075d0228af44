"""What tokenizer training adds to the engine's loop (``hartkit.engine.loop``): the reconstruction loss (L1 + L2,
optional LPIPS), the quantizer's own loss, an optional PatchGAN critic with the adaptive weight, and the
dead-code re-initialisation of a learned codebook. Works on any map-style dataset of
``{"image": (3, H, W) in [-1, 1]}``; where the images come from is the stage's business.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from hartkit.engine import sync_only_on_last, unwrap_model, wrap_ddp
from hartkit.engine.loop import TrainingTask, TrainResult, train
from hartkit.engine.precision import autocast_for
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

__all__ = ["TrainResult", "TokenizerTask", "train_tokenizer"]


class TokenizerTask(TrainingTask):
    name = "tokenizer"

    def __init__(self, model: MultiScaleTokenizer, dataset: Dataset, tok_cfg, out_dir: Path, device: torch.device,
                 collate_fn=None, logger=None, preview_images: torch.Tensor | None = None):
        self.cfg, self.qcfg, self.device = tok_cfg.train, tok_cfg.quantizer, device
        self.out_dir, self.logger = Path(out_dir), logger
        self.model = self.runner = model.to(device)
        self.dataset, self.collate_fn, self.lr = dataset, collate_fn, self.cfg.lr
        self.label = f"tokenizer[{model.kind}]"
        self.discrete = model.kind != "continuous"
        self.reinit = self.discrete and self.qcfg.dead_code_reinit and not model.frozen_quantizer_path
        self.lpips = build_lpips(self.cfg.lpips_weights).to(device) if self.cfg.lpips_weight > 0 else None
        self.disc = self.disc_opt = None
        if self.cfg.gan_weight > 0:
            disc = PatchDiscriminator(self.cfg.disc_ch, self.cfg.disc_layers).to(device)
            self.disc_opt = torch.optim.AdamW(disc.parameters(), lr=self.cfg.disc_lr or self.cfg.lr,
                                              betas=tuple(self.cfg.betas))
            self.disc = wrap_ddp(disc, device)
        n = min(self.cfg.grid_images, len(dataset))  # type: ignore[arg-type]
        self.preview = preview_images if preview_images is not None else \
            torch.stack([dataset[i]["image"] for i in range(n)])

    def micro_batches(self, batch, parts, step_seed):
        return super().micro_batches(batch["image"], parts, step_seed)

    def loss(self, runner, micro, step):
        self.gan_on = self.disc is not None and step >= self.cfg.gan_start_step
        img = self._img = micro.to(self.device, non_blocking=True)
        out = self._out = runner(img)
        rec = reconstruction_loss(out.recon, img, self.cfg.l1_weight, self.cfg.l2_weight)
        if self.lpips is not None:
            rec = rec + self.cfg.lpips_weight * self.lpips(out.recon.float().clamp(-1, 1), img.float()).mean()
        loss = rec + out.aux_loss
        if self.gan_on:
            critic = unwrap_model(self.disc)
            critic.requires_grad_(False)  # the generator loss must not train the critic
            g_loss = -self.disc(out.recon).float().mean()
            weight = adaptive_gan_weight(rec, g_loss, self.model.decoder.conv_out.weight)
            loss = loss + self.cfg.gan_weight * weight * g_loss
            critic.requires_grad_(True)
        return loss, {"loss": float(loss.detach()), "rec": float(rec.detach()), "aux": float(out.aux_loss.detach())}

    def after_backward(self, micro, step, is_last):
        if self.gan_on:
            with sync_only_on_last(self.disc, is_last), autocast_for(self.device, self.cfg.amp, self.cfg.cpu_amp):
                d_loss = hinge_d_loss(self.disc(self._img), self.disc(self._out.recon.detach()))
            (d_loss / self.cfg.grad_accum).backward()
            if is_last:
                self.disc_opt.step()

    def after_update(self, step):
        # also after the first step: replaces the tiny initial codebook by real residual vectors (a data init)
        if self.reinit and (step == 1 or step % self.qcfg.dead_code_every == 0) and step < self.cfg.steps:
            quantizer = self.model.quantize
            if dist_utils.is_main() and (n := quantizer.reinit_dead_codes(self.qcfg.dead_code_threshold)):
                log.debug("step %d: re-initialised %d dead codes", step, n)
            if dist_utils.is_dist():  # every rank continues with rank 0's codebook
                torch.distributed.broadcast(quantizer.embedding.weight.data, src=0)
                torch.distributed.broadcast(quantizer.ema_vocab_hit_SV, src=0)

    def step_metrics(self):
        metrics = {"usage": self._out.stats.get("codebook_usage", 0.0)} if self.discrete else {}
        if self.model.kind == "hybrid":
            metrics["residual"] = float(self._out.used_residual)
        return metrics

    def extra_modules(self):
        return {"disc": unwrap_model(self.disc)} if self.disc is not None else {}

    def extra_optimizers(self):
        return {"disc_opt": self.disc_opt} if self.disc_opt is not None else {}

    def checkpoint_extra(self):
        return {"hit_updates": self.model.quantize._hit_updates} if self.discrete else {}

    def restore(self, extra):
        if self.discrete:
            self.model.quantize._hit_updates = int(extra.get("hit_updates", 0))

    def grid(self, model, step, final):
        if not dist_utils.is_main():
            return None
        if final:  # the stage logs the final grid with its row names
            return save_reconstruction_grid(model, self.preview, self.out_dir / "reconstructions.png")
        path = save_reconstruction_grid(model, self.preview, self.out_dir / f"grid_step{step:07d}.png")
        if self.logger is not None:
            self.logger.log_image("tokenizer/reconstructions", str(path), caption=f"step {step}", step=step)
        return path

    def postfix(self, smoothed):
        return {k: f"{smoothed[k]:.4f}" if k == "loss" else f"{smoothed[k]:.2f}" for k in ("loss", "usage")
                if k in smoothed}


def train_tokenizer(model: MultiScaleTokenizer, dataset: Dataset, tok_cfg, out_dir: str | os.PathLike,
                    device: torch.device, seed: int = 0, resume: bool = False, collate_fn=None, logger=None,
                    stop_after: int | None = None, preview_images: torch.Tensor | None = None) -> TrainResult:
    """Train ``model`` for ``tok_cfg.train.steps`` steps; checkpoints go to ``out_dir/checkpoints``.

    ``stop_after`` stops after that many steps of this call (what a killed run looks like to the next one)."""
    task = TokenizerTask(model, dataset, tok_cfg, out_dir, device, collate_fn, logger, preview_images)
    return train(task, tok_cfg.train, out_dir, device, seed=seed, resume=resume, logger=logger,
                 stop_after=stop_after)
