"""Exponential moving average of a model's weights (evaluated instead of the raw weights)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from hartkit.errors import ConfigError


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_p, p in zip(self.module.parameters(), model.parameters()):
            if p.dtype.is_floating_point:
                ema_p.lerp_(p.detach(), 1.0 - self.decay)
            else:
                ema_p.copy_(p)
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)
