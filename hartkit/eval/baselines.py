"""Baselines that every table shows next to trained models: what a number is worth.

Reconstruction ("baseline tokenizers", scored by the recon_eval stage on the
same test images as the configured tokenizer, written as records of their own):

- ``mean colour`` (floor): every pixel replaced by the image's mean colour
  (3 numbers per image).
- ``thumbnail s px`` at a matched budget: area-downsample to s x s
  (``F.interpolate(mode="area")``, i.e. the mean over each pixel's footprint,
  which is its own antialias), then bicubic-upsample back (PyTorch bicubic,
  ``align_corners=False``; no antialias is needed when enlarging), clamped to
  [0, 1]. The size matches the tokenizer's budget from below (the largest s
  whose budget does not exceed the tokenizer's):

  - discrete tokens: ``bits = sum_k pn_k^2 * log2 V``; a thumbnail value costs
    8 bits (it is quantised to 256 levels), so ``24 s^2 <= bits``;
  - continuous latent (continuous, and hybrid's discrete + residual decode):
    ``3 s^2 <= C * h * w`` floats (the thumbnail keeps float values).

  A hybrid tokenizer gets both: its full decode is matched by floats, its
  discrete-only decode by bits.

Generation (scored by gen_eval on the same prompts as the generator):

- floor ``mean colour``: flat images in the mean colour of held-out real images
  (test images the protocol does not use as reference), one per prompt;
- ceiling ``real images``: Fréchet distances of held-out real images against
  the reference (the real-vs-real noise floor), CLIP score and prompt accuracy
  of the reference images with their own prompts;
- ``real images, shuffled prompts``: the prompt metrics' chance level with
  realistic images (the reference images paired with a fixed permutation of the
  prompts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

FLOOR, CEILING, MATCHED = "floor", "ceiling", "baseline"  # record roles (hartkit.records.ROLES)


def mean_colour(images_B3HW: torch.Tensor) -> torch.Tensor:
    """Each image replaced by its mean colour (images in [0, 1])."""
    return images_B3HW.float().mean(dim=(2, 3), keepdim=True).expand_as(images_B3HW).contiguous()


def thumbnail(images_B3HW: torch.Tensor, size: int, bits: int | None = None) -> torch.Tensor:
    """Area down to ``size`` x ``size``, optionally quantised to ``bits`` per value, bicubic up; in [0, 1]."""
    x = images_B3HW.float()
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(size, size), mode="area")
    if bits is not None:
        levels = 2**bits - 1
        small = (small.clamp(0, 1) * levels).round() / levels
    return F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


@dataclass(frozen=True)
class ReconBaseline:
    """One reconstruction baseline: how it reconstructs, its budget and which decode it is matched to."""

    name: str  # record label, e.g. "baseline: thumbnail 7px (8-bit)"
    role: str  # floor | baseline (a matched-budget thumbnail)
    size: int | None = None  # thumbnail side; None for the mean colour
    bits: int | None = None  # bits per thumbnail value (None: float values)
    matched_to: str = ""  # what budget it matches
    budget: str = ""

    def __call__(self, images_B3HW_01: torch.Tensor) -> torch.Tensor:
        if self.size is None:
            return mean_colour(images_B3HW_01)
        return thumbnail(images_B3HW_01, self.size, self.bits)

    @property
    def values_per_image(self) -> int:
        return 3 if self.size is None else 3 * self.size * self.size

    @property
    def bits_per_image(self) -> float | None:
        return None if self.bits is None else float(self.values_per_image * self.bits)

    def info(self) -> dict:
        return {"kind": "baseline", "baseline": self.name, "role": self.role, "thumbnail_px": self.size,
                "bits_per_value": self.bits, "values_per_image": self.values_per_image,
                "bits_per_image": self.bits_per_image, "matched_to": self.matched_to, "budget": self.budget}


def size_for_bits(bits: float, bits_per_value: int = 8) -> int:
    """Largest s with 3 s^2 values of ``bits_per_value`` bits within ``bits``."""
    return max(1, math.isqrt(int(bits // (3 * bits_per_value))))


def size_for_floats(floats: int) -> int:
    """Largest s with 3 s^2 values within ``floats``."""
    return max(1, math.isqrt(int(floats) // 3))


def reconstruction_baselines(kind: str, patch_nums, vocab_size: int, latent_shape, image_size: int,
                             label: str = "") -> list[ReconBaseline]:
    """Mean colour + the thumbnails matched to a tokenizer of ``kind`` (sizes capped at the image size)."""
    out = [ReconBaseline("baseline: mean colour", FLOOR, matched_to="-", budget="3 floats")]
    who = label or kind
    if kind in ("discrete", "hybrid") and vocab_size > 0:
        bits = sum(p * p for p in patch_nums) * math.log2(vocab_size)
        s = min(size_for_bits(bits), image_size)
        path = f"{who} discrete-only decode" if kind == "hybrid" else who
        out.append(ReconBaseline(f"baseline: thumbnail {s}px (8-bit)", MATCHED, s, 8, matched_to=path,
                                 budget=f"{3 * s * s * 8} <= {bits:.0f} bits"))
    if kind in ("continuous", "hybrid"):
        floats = int(math.prod(latent_shape))
        s = min(size_for_floats(floats), image_size)
        path = f"{who} discrete+residual decode" if kind == "hybrid" else who
        out.append(ReconBaseline(f"baseline: thumbnail {s}px (float)", MATCHED, s, None, matched_to=path,
                                 budget=f"{3 * s * s} <= {floats} floats (latent {'x'.join(map(str, latent_shape))})"))
    return out
