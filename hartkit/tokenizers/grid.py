"""PNG grid of originals vs reconstructions (hybrid: discrete-only and discrete + residual rows)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from hartkit.tokenizers.tokenizer import MultiScaleTokenizer
from hartkit.utils.io import atomic_write


@torch.no_grad()
def reconstruction_rows(model: MultiScaleTokenizer, images: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(row name, images in [-1, 1]) for each decode path of the tokenizer, originals first."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = images.to(device)
    tokens = model.encode(x)
    rows = [("original", x)]
    if model.kind == "hybrid":
        rows += [("discrete", model.decode(tokens, use_residual=False)), ("hybrid", model.decode(tokens))]
    else:
        rows.append((model.kind, model.decode(tokens)))
    model.train(was_training)
    return rows


def save_reconstruction_grid(model: MultiScaleTokenizer, images: torch.Tensor, path: str | os.PathLike) -> Path:
    """One row per decode path (see ``reconstruction_rows``), one column per image."""
    rows = reconstruction_rows(model, images)
    stacked = torch.cat([r.float().cpu() for _, r in rows]).add(1).div(2).clamp(0, 1)
    grid = make_grid(stacked, nrow=images.shape[0], padding=2, pad_value=1.0)
    return atomic_write(Path(path), lambda tmp: save_image(grid, tmp, format="png"))
