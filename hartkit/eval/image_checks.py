"""Checks that every scored image is a valid image of the protocol's size.

A generator can emit NaNs, a saved sample can be truncated, a folder can hold a
thumbnail of the wrong size. Such an image is excluded from every metric and
reported by name with a count -- never silently dropped, never silently scored.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

RANGE_TOLERANCE = 1e-3  # float images may overshoot [0, 1] by rounding; more than this is an error


def check_image(image: torch.Tensor, resolution: int | None) -> str | None:
    """Why ``image`` (3, H, W; uint8 or float in [0, 1]) cannot be scored, or None if it can."""
    if not isinstance(image, torch.Tensor):
        return f"not a tensor ({type(image).__name__})"
    if image.ndim != 3 or image.shape[0] != 3:
        return f"shape {tuple(image.shape)} is not (3, H, W)"
    if image.shape[1] != image.shape[2]:
        return f"not square: {image.shape[2]}x{image.shape[1]}"
    if resolution is not None and image.shape[1] != resolution:
        return f"size {image.shape[2]}x{image.shape[1]} differs from the protocol's {resolution}x{resolution}"
    if image.dtype == torch.uint8:
        return None
    if not image.is_floating_point():
        return f"dtype {image.dtype} is neither uint8 nor float"
    finite = torch.isfinite(image)
    if not finite.all():
        return f"{int((~finite).sum())} NaN/Inf values"
    lo, hi = float(image.min()), float(image.max())
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        return f"values in [{lo:.3g}, {hi:.3g}], expected [0, 1] (convert [-1, 1] outputs with (x + 1) / 2)"
    return None


def split_valid(images, names: list[str], resolution: int | None) -> tuple[list[int], list[tuple[str, str]]]:
    """Indices of valid images in ``images`` (a (B,3,H,W) tensor or a list of (3,H,W)) and (name, reason) of the rest."""
    valid, failures = [], []
    for i, name in enumerate(names):
        reason = check_image(images[i], resolution)
        if reason is None:
            valid.append(i)
        else:
            failures.append((name, reason))
    return valid, failures


def stack_valid(images, valid: list[int]) -> torch.Tensor:
    """The valid images as one float tensor in [0, 1] (uint8 inputs are scaled)."""
    out = torch.stack([images[i] for i in valid])
    if out.dtype == torch.uint8:
        return out.float() / 255.0
    return out.float().clamp(0, 1)


def log_failures(failures: list[tuple[str, str]], what: str, shown: int = 10) -> None:
    for name, reason in failures[:shown]:
        log.warning("excluded %s %s: %s", what, name, reason)
    if len(failures) > shown:
        log.warning("... and %d more excluded %s images", len(failures) - shown, what)
