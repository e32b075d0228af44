"""Small on-disk datasets in the exact layouts hartkit reads (MJHQ-30K, image folders), for tests.

Used by hartkit's tests and usable by any test that needs real files: `make_mjhq(tmp_path, as_zip=True)`.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

MJHQ_FIXTURE_CATEGORIES = ("animals", "food", "people")
CORRUPT_HASH = "c0ffee00corrupt"
RGBA_HASH = "feed00rgba"


def _jpeg_bytes(rng: np.random.Generator, size=(96, 72)) -> bytes:
    a = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _rgba_png_bytes() -> bytes:
    # left half opaque red, right half fully transparent (must become white, not black)
    a = np.zeros((80, 80, 4), dtype=np.uint8)
    a[:, :40] = (255, 0, 0, 255)
    buf = io.BytesIO()
    Image.fromarray(a, mode="RGBA").save(buf, format="PNG")
    return buf.getvalue()


def mjhq_files(per_category: int = 3, seed: int = 0) -> tuple[dict[str, bytes], dict]:
    """{'<category>/<hash>.jpg': bytes} and meta_data.json content, with one corrupt and one RGBA file."""
    rng = np.random.default_rng(seed)
    files, meta = {}, {}
    for cat in MJHQ_FIXTURE_CATEGORIES:
        for k in range(per_category):
            h = f"{cat[:3]}{k:04d}hash"
            files[f"{cat}/{h}.jpg"] = _jpeg_bytes(rng)
            meta[h] = {"category": cat, "prompt": f"prompt {k} of {cat}"}
    good = _jpeg_bytes(rng)
    files[f"food/{CORRUPT_HASH}.jpg"] = good[: len(good) // 3]  # truncated JPEG
    meta[CORRUPT_HASH] = {"category": "food", "prompt": "a truncated file"}
    files[f"people/{RGBA_HASH}.png"] = _rgba_png_bytes()
    meta[RGBA_HASH] = {"category": "people", "prompt": "a transparent image"}
    return files, meta


def make_mjhq(root: Path, as_zip: bool, per_category: int = 3) -> Path:
    """Write MJHQ's layout under root; returns the value for data.path (zip file or images folder)."""
    files, meta = mjhq_files(per_category)
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta_data.json").write_text(json.dumps(meta))
    if as_zip:
        target = root / "mjhq30k_imgs.zip"
        with zipfile.ZipFile(target, "w") as zf:
            for name, data in files.items():
                zf.writestr(name, data)
        return target
    target = root / "mjhq30k_imgs"
    for name, data in files.items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(data)
    # meta_data.json beside the unpacked folder, as when the zip is extracted next to it
    return target


def write_image(path: Path, mode: str, size=(40, 30), seed: int = 0) -> None:
    """A small image in the given PIL mode (RGB, L, P, RGBA)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(a)
    if mode == "L":
        img = img.convert("L")
    elif mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    elif mode == "RGBA":
        img = img.convert("RGBA")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
