"""What generator training adds to the engine's loop (``hartkit.engine.loop``): the scale-wise model's loss on a
token cache, condition dropout for classifier-free guidance, and sample grids.

The learning rate is given per 256 images and scaled linearly with the batch (VAR); no weight decay on 1-D
parameters and on position / level / class / token embeddings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from hartkit.ar_models.conditioning import dropout_mask
from hartkit.ar_models.model import ScaleAR
from hartkit.ar_models.token_cache import TokenCacheDataset, collate_tokens, to_token_batch
from hartkit.engine.accumulate import split_batch
from hartkit.engine.loop import TrainingTask, TrainResult, train
from hartkit.engine.rng import derive_seed, private_generator

__all__ = ["GeneratorTask", "TrainResult", "train_generator"]

NO_DECAY_KEYWORDS = ("pos_", "lvl_embed", "class_emb", "tok_embed")


def noisy_inputs(x_in: torch.Tensor, relative_std: float, generator: torch.Generator) -> torch.Tensor:
    """``x_in`` plus Gaussian noise of ``relative_std`` times its standard deviation (ar.train.input_noise)."""
    noise = torch.randn(x_in.shape, generator=generator, device=x_in.device, dtype=x_in.dtype)
    return x_in + noise * (relative_std * x_in.detach().std())


class _LossModule(nn.Module):
    """forward() = the model's loss, so DistributedDataParallel sees the call and syncs gradients."""

    def __init__(self, model: ScaleAR, keep: float):
        super().__init__()
        self.model, self.keep = model, keep

    def forward(self, batch, generator=None):
        return self.model.loss(batch, final_scale_keep=self.keep, generator=generator)


class GeneratorTask(TrainingTask):
    name = "generator"
    collate_fn = staticmethod(collate_tokens)
    no_decay_keywords = NO_DECAY_KEYWORDS

    def __init__(self, model: ScaleAR, cache: dict, ar_cfg, artifact_dir: Path, device: torch.device,
                 grid_fn: Callable[[ScaleAR, int, Path], Path | None] | None = None):
        self.cfg, self.condition, self.device = ar_cfg.train, ar_cfg.condition, device
        self.model = model.to(device)
        self.runner = _LossModule(model, float(self.cfg.final_scale_keep))
        self.dataset = TokenCacheDataset(cache)
        self.lr = float(self.cfg.lr) * self.cfg.batch_size / 256
        self.label = f"generator {ar_cfg.name}"
        self.artifact_dir, self.grid_fn = Path(artifact_dir), grid_fn

    def micro_batches(self, batch, parts, step_seed):
        # condition dropout over the whole batch, then the loss's own draws (kept last-scale tokens, sampled
        # codes, diffusion t and noise) from one private generator that runs on through the micro-batches
        drop_gen = private_generator(derive_seed(step_seed, "condition_dropout"))
        self.step_gen = private_generator(derive_seed(step_seed, "loss"), self.device)
        drop = dropout_mask(len(batch["prompt"]), float(self.cfg.cond_drop_p), drop_gen)
        cond = batch["category_id"] if self.condition == "class" else list(batch["prompt"])
        cond = self.model.cond_module.apply_dropout(cond, drop)
        return list(zip(split_batch(batch, parts), split_batch(cond, parts)))

    def loss(self, runner, micro, step):
        batch, cond = micro
        tokens = to_token_batch(batch, cond, self.device)
        if getattr(self.cfg, "input_noise", None):
            tokens = replace(tokens, x_in=noisy_inputs(tokens.x_in, float(self.cfg.input_noise), self.step_gen))
        return runner(tokens, generator=self.step_gen)

    def grid(self, model, step, final):
        return self.grid_fn(model, step, self.artifact_dir) if self.grid_fn is not None else None


def train_generator(model: ScaleAR, cache: dict, ar_cfg, artifact_dir: Path, device: torch.device, seed: int = 0,
                    resume: bool = False, logger=None,
                    grid_fn: Callable[[ScaleAR, int, Path], Path | None] | None = None) -> TrainResult:
    """Train ``model`` on a token cache for ``ar_cfg.train.steps`` steps; checkpoints go to
    ``artifact_dir/checkpoints``; ``grid_fn(model, step, artifact_dir)`` draws a sample grid."""
    task = GeneratorTask(model, cache, ar_cfg, artifact_dir, device, grid_fn)
    result = train(task, ar_cfg.train, artifact_dir, device, seed=seed, resume=resume, logger=logger)
    result.summary.update(lr=task.lr, parameters=result.model.parameter_groups())
    return result
