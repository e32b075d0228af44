"""PNG grid of originals vs reconstructions (hybrid: discrete-only and discrete + residual rows), written by
hartkit's one grid writer (``hartkit.utils.grids``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from hartkit.tokenizers.tokenizer import MultiScaleTokenizer
from hartkit.utils.grids import save_labelled_rows


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
    return save_labelled_rows(reconstruction_rows(model, images), Path(path), value_range=(-1, 1))
