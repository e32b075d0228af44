"""PNG grid of generated samples, each tile captioned with its (wrapped) prompt."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from hartkit.utils.io import atomic_write


def save_sample_grid(images_B3HW: torch.Tensor, captions: list[str], path: str | os.PathLike, ncol: int = 4,
                     tile: int = 128, caption_lines: int = 3) -> Path:
    """``images`` in [-1, 1]. Tiles are upscaled to ``tile`` px (nearest) with a caption strip below."""
    font = ImageFont.load_default()
    line_h = 11
    chars = max(8, tile // 6)
    n = images_B3HW.shape[0]
    nrow = (n + ncol - 1) // ncol
    cell_h = tile + caption_lines * line_h + 4
    canvas = Image.new("RGB", (ncol * tile, nrow * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    arr = ((images_B3HW.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, c = divmod(i, ncol)
        img = Image.fromarray(arr[i]).resize((tile, tile), Image.NEAREST)
        canvas.paste(img, (c * tile, r * cell_h))
        lines = textwrap.wrap(captions[i] if i < len(captions) else "", chars)[:caption_lines]
        for j, line in enumerate(lines):
            draw.text((c * tile + 2, r * cell_h + tile + 2 + j * line_h), line, fill="black", font=font)
    return atomic_write(path, lambda tmp: canvas.save(tmp, format="PNG"))
