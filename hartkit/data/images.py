"""Image conversions shared by every dataset: to RGB, and the centre-crop + resize protocol."""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image

from hartkit.errors import UserError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

RESIZE_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class CorruptImageError(UserError, ValueError):
    """An image file could not be decoded."""


def resize_filter(name: str) -> Image.Resampling:
    try:
        return RESIZE_FILTERS[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown resize filter {name!r} (config key data.resize_filter); choose one of {sorted(RESIZE_FILTERS)}"
        ) from None


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited on white (not dropped to black)."""
    if img.mode == "RGB":
        return img
    if (img.mode == "P" and "transparency" in img.info) or img.mode in ("PA", "LA", "La", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img).convert("RGB")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit / float greyscale: PIL's convert would clip, so rescale to 8 bit first
        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(a / hi * 255.0 if hi != 255.0 else a, 0, 255).astype(np.uint8)
        img = Image.fromarray(a, mode="L")
    return img.convert("RGB")


def center_crop_resize(img: Image.Image, resolution: int, resample: Image.Resampling) -> Image.Image:
    """Crop the largest centred square, then resize it to resolution x resolution."""
    w, h = img.size
    side = min(w, h)
    if (w, h) != (side, side):
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if side != resolution:
        img = img.resize((resolution, resolution), resample)
    return img


def decode_image(data: bytes, name: str) -> Image.Image:
    """Fully decode image bytes (so truncated files fail here, not later); name is for the error."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        raise CorruptImageError(f"cannot decode image {name}: {type(exc).__name__}: {exc}") from exc
    return img
