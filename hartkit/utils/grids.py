"""hartkit's image-grid writer (PNG, written atomically): every row named, every caption whole.

- ``save_labelled_rows``: reconstruction grids, one row per decode path or
  baseline (``original``, ``hybrid (discrete+residual)``, ``thumbnail 7px`` ...),
  the row name written left of the row (tokenizer training, ``recon_eval``);
- ``save_captioned_samples``: generated (or real) images, each with its whole
  prompt wrapped under it (generator training, ``gen_eval``, ``preview``).

Images are B x 3 x H x W tensors in ``value_range``: (-1, 1) for model outputs, (0, 1) for images read from
data; ``None`` guesses from the values (any negative value: (-1, 1)).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch

from hartkit.utils.io import atomic_write


def _to_hwc(img_3HW: torch.Tensor, value_range: tuple[float, float] | None = None):
    x = img_3HW.detach().float().cpu()
    low, high = value_range if value_range is not None else ((-1.0, 1.0) if x.min() < 0 else (0.0, 1.0))
    x = (x - low) / (high - low)
    return x.clamp(0, 1).permute(1, 2, 0).numpy()


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt  # heavy: only when a figure is saved (callers chose the backend)

    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)


def save_labelled_rows(rows: list[tuple[str, torch.Tensor]], path: str | Path, title: str = "",
                       value_range: tuple[float, float] | None = None) -> Path:
    """One row per (name, images B x 3 x H x W); the same B images in every row."""
    import matplotlib  # heavy, and choosing the Agg backend is process-wide: only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(len(imgs) for _, imgs in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.1 * cols + 1.8, 1.15 * len(rows)), squeeze=False)
    for r, (name, imgs) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(imgs):
                ax.imshow(_to_hwc(imgs[c], value_range), interpolation="nearest")
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, Path(path))


def save_captioned_samples(images: torch.Tensor, captions: list[str], path: str | Path, title: str = "",
                           cols: int = 4, width: int = 28, value_range: tuple[float, float] | None = None) -> Path:
    """Images with their whole captions wrapped under them (nothing cut off)."""
    import matplotlib  # heavy, and choosing the Agg backend is process-wide: only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    rows = (n + cols - 1) // cols
    wrapped = ["\n".join(textwrap.wrap(captions[i] if i < len(captions) else "", width)) for i in range(n)]
    lines = max((w.count("\n") + 1 for w in wrapped), default=1)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, rows * (2.0 + 0.13 * lines)), squeeze=False)
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        ax.axis("off")
        if i < n:
            ax.imshow(_to_hwc(images[i], value_range), interpolation="nearest")
            ax.text(0.5, -0.03, wrapped[i], transform=ax.transAxes, ha="center", va="top", fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(hspace=0.1 + 0.09 * lines)
    return _save(fig, Path(path))
