"""The natural photographs and textures bundled in the scikit-image wheel (no download).

Each photograph has a plain-word name used in captions. They are loaded once per
process and kept as PIL RGB images.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import skimage.data
from PIL import Image


@dataclass(frozen=True)
class BundledPhoto:
    name: str  # scikit-image name (also the `photos` dataset category)
    subject: str  # plain words: "a photo of <subject>"
    backdrop: str  # synthscenes background phrase


# every entry loads from the scikit-image wheel itself (checked against scikit-image 0.26)
PHOTOS: dict[str, BundledPhoto] = {
    p.name: p
    for p in (
        BundledPhoto("astronaut", "an astronaut", "in front of an astronaut"),
        BundledPhoto("coffee", "a cup of coffee", "in front of a cup of coffee"),
        BundledPhoto("chelsea", "a cat", "in front of a cat"),
        BundledPhoto("rocket", "a rocket", "in front of a rocket"),
        BundledPhoto("hubble_deep_field", "deep space", "on a deep space photo"),
        BundledPhoto("immunohistochemistry", "a stained tissue sample", "on a stained tissue sample"),
        BundledPhoto("retina", "a retina", "on a retina scan"),
        BundledPhoto("motorcycle_left", "a motorcycle", "in front of a motorcycle"),
        BundledPhoto("colorwheel", "a colour wheel", "on a colour wheel"),
        BundledPhoto("brick", "a brick wall", "on a brick wall"),
        BundledPhoto("grass", "grass", "on grass"),
        BundledPhoto("gravel", "gravel", "on gravel"),
        BundledPhoto("camera", "a cameraman", "in front of a cameraman"),
        BundledPhoto("moon", "the moon's surface", "on the moon's surface"),
        BundledPhoto("coins", "old coins", "on old coins"),
    )
}


def _load_array(name: str) -> np.ndarray:
    if name == "motorcycle_left":
        return skimage.data.stereo_motorcycle()[0]
    return getattr(skimage.data, name)()


@cache
def load_photo(name: str) -> Image.Image:
    """The photograph as a PIL RGB image (loaded once per process)."""
    if name not in PHOTOS:
        raise KeyError(f"unknown bundled photograph {name!r}; known: {sorted(PHOTOS)}")
    a = _load_array(name)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255).astype(np.uint8) if a.dtype.kind == "f" else a.astype(np.uint8)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    img = Image.fromarray(a[..., :3])
    img.load()
    return img


def random_crop(
    photo: Image.Image,
    rng: np.random.Generator,
    resolution: int,
    scale: tuple[float, float] = (0.25, 1.0),
    resample: Image.Resampling = Image.Resampling.BICUBIC,
) -> Image.Image:
    """A square crop of random side (a fraction of the shorter side) and position, resized."""
    w, h = photo.size
    short = min(w, h)
    side = max(1, int(round(short * rng.uniform(*scale))))
    left = int(rng.integers(0, w - side + 1))
    top = int(rng.integers(0, h - side + 1))
    box = (left, top, left + side, top + side)
    if side == resolution:
        return photo.crop(box)
    # reducing_gap: an integer box-reduce first when shrinking a lot (much faster, visually identical)
    return photo.resize((resolution, resolution), resample, box=box, reducing_gap=3.0)
