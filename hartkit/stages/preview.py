"""`preview` stage: a captioned grid of samples and the dataset's statistics.

    python run.py stages=[preview] data=photos

Writes <paths.artifacts>/preview/<dataset>-<resolution>.png and prints, per
split, the number of images and the images per category. Only the images the
grid shows are rendered: generated datasets are counted from their category
rule (``hartkit.data.category_counts``) and the grid takes the split's first
items (``hartkit.data.head``), unless the split is already built.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections import Counter
from pathlib import Path

from omegaconf import OmegaConf

from hartkit.data import SPLITS, category_counts, head
from hartkit.utils.distributed import is_main

log = logging.getLogger(__name__)

DEFAULT_SAMPLES = 16


def dataset_statistics(counts_by_split: dict[str, Counter]) -> str:
    """A plain-text table: images per split, and per category for each split."""
    lines = []
    for split, counts in counts_by_split.items():
        lines.append(f"  {split}: {sum(counts.values())} images, {len(counts)} categories")
        width = max((len(c) for c in counts), default=0)
        lines += [f"    {c:<{width}}  {n}" for c, n in sorted(counts.items())]
    return "\n".join(lines)


def sample_indices(n_items: int, n_samples: int) -> list[int]:
    """The first items: every dataset orders its items so these cycle through the categories
    (synthscenes: index % 10, photos: index % photographs, file-backed: category-interleaved)."""
    return list(range(min(n_items, n_samples)))


def save_grid(ds, indices: list[int], path: Path, title: str) -> None:
    import matplotlib  # heavy, and choosing the Agg backend is process-wide: only when a figure is drawn

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    cols = math.ceil(math.sqrt(len(indices)))
    rows = math.ceil(len(indices) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 3.1 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, indices):
        row = ds[i]
        ax.imshow(row["image"], interpolation="nearest")
        caption = textwrap.fill(row["prompt"], width=42, max_lines=5, placeholder=" ...")
        ax.set_title(f"[{row['category']}]\n{caption}", fontsize=5.5, loc="left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=150)
    plt.close(fig)
    tmp.replace(path)  # a crash never leaves half a PNG under the final name


def run(ctx) -> None:
    cfg = ctx.cfg
    data = cfg.data
    n_samples = int(OmegaConf.select(cfg, "preview_samples", default=DEFAULT_SAMPLES))
    counts = {split: category_counts(data, split) for split in SPLITS}
    stats = dataset_statistics(counts)
    print(f"dataset {data.name} at {data.resolution} x {data.resolution} px\n{stats}", flush=True)

    n_train = sum(counts["train"].values())
    path = Path(cfg.paths.artifacts) / "preview" / f"{data.name}-{data.resolution}.png"
    if is_main():
        shown = head(data, "train", n_samples)  # renders only what the grid shows
        title = f"{data.name} (train, {n_train} images, {data.resolution} px)"
        save_grid(shown, sample_indices(len(shown), n_samples), path, title)
        log.info("preview grid written to %s", path)
        ctx.logger.log_image("preview", str(path), caption=f"{data.name} {data.resolution}px")
    ctx.state["preview_path"] = path
