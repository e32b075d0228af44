"""Stop training on a non-finite loss, naming the step (the last good checkpoint stays)."""

from __future__ import annotations

import math

import torch

from hartkit.errors import UserError


class NonFiniteLossError(UserError, FloatingPointError):
    def __init__(self, step: int, value: float, name: str = "loss"):
        super().__init__(
            f"{name} became {value} at step {step}; training stopped. The last good checkpoint is kept: "
            "lower the learning rate or enable gradient clipping, then rerun with resume=true."
        )
        self.step = step
        self.value = value


def check_finite(loss: torch.Tensor | float, step: int, name: str = "loss") -> None:
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    if not math.isfinite(value):
        raise NonFiniteLossError(step, value, name)
