"""`photos`: random square crops of the photographs bundled in scikit-image, split by photograph.

Crop i of a split comes from photograph i % len(split photos) (balanced), with
side and position drawn from a Generator seeded by (seed, split, i), resized to
the resolution with data.resize_filter. The train and test photographs are
disjoint, so test crops measure reconstruction of images never seen in training.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from hartkit.data.bundled_photos import PHOTOS, load_photo, random_crop
from hartkit.errors import ConfigError

TRAIN_PHOTOS: tuple[str, ...] = (
    "astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
    "motorcycle_left", "brick", "grass", "moon",
)  # fmt: skip
TEST_PHOTOS: tuple[str, ...] = ("chelsea", "retina", "gravel", "camera")
PHOTO_CATEGORIES: list[str] = list(TRAIN_PHOTOS + TEST_PHOTOS)
SPLIT_PHOTOS = {"train": TRAIN_PHOTOS, "test": TEST_PHOTOS}
SPLIT_IDS = {"train": 0, "test": 1}


def render_crop(
    seed: int,
    split: str,
    index: int,
    resolution: int,
    crop_scale: tuple[float, float] = (0.25, 1.0),
    resample: Image.Resampling = Image.Resampling.BICUBIC,
) -> tuple[Image.Image, str, str]:
    """Crop `index` of `split`: (RGB image, prompt, photograph name)."""
    if split not in SPLIT_PHOTOS:
        raise ValueError(f"unknown split {split!r}; photos has {sorted(SPLIT_PHOTOS)}")
    lo, hi = crop_scale
    if not 0 < lo <= hi <= 1:
        raise ConfigError(f"data.crop_scale must satisfy 0 < min <= max <= 1, got {list(crop_scale)}")
    names = SPLIT_PHOTOS[split]
    name = names[index % len(names)]
    rng = np.random.default_rng([int(seed), SPLIT_IDS[split], int(index)])
    img = random_crop(load_photo(name), rng, int(resolution), scale=(lo, hi), resample=resample)
    return img, f"a photo of {PHOTOS[name].subject}", name
