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
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from hartkit.data import SPLITS, category_counts, head
from hartkit.utils.distributed import is_main
from hartkit.utils.grids import save_captioned_samples

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


def save_grid(ds, indices: list[int], path: Path, title: str) -> Path:
    """The rows ``indices`` of ``ds`` (images with ``[category] prompt`` under each), by hartkit's grid writer."""
    images = torch.stack([torch.from_numpy(np.asarray(ds[i]["image"].convert("RGB"), dtype=np.uint8).copy())
                          .permute(2, 0, 1).float() / 255 for i in indices])
    captions = [f"[{ds[i]['category']}] {ds[i]['prompt']}" for i in indices]
    return save_captioned_samples(images, captions, path, title=title, cols=math.ceil(math.sqrt(len(indices))),
                                  width=42, value_range=(0, 1))


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
