"""Image files from a folder or a zip: listing, checking (skip or raise on corrupt files), lazy decoding.

File-backed datasets (mjhq30k, imagefolder) keep only each image's name in the
Arrow table and decode + convert + centre-crop + resize it when an item is
read (a `datasets` transform), so 30k full-size images never sit in memory or
in a multi-GB cache. Every file is checked once when the dataset is built, so
a corrupt file is reported up front instead of failing mid-training.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from hartkit.data.images import (
    CorruptImageError,
    center_crop_resize,
    decode_image,
    is_image_file,
    resize_filter,
    to_rgb,
)

log = logging.getLogger(__name__)


class ImageStore:
    """Read-only access to the image files under a folder or inside a zip archive."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.is_zip = self.root.is_file() and zipfile.is_zipfile(self.root)
        if not self.is_zip and not self.root.is_dir():
            raise FileNotFoundError(f"{self.root} is neither a folder nor a zip archive")
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid: int | None = None

    # A ZipFile handle must not cross process boundaries: pickled (spawned DataLoader workers) it
    # is dropped, and forked workers would share its file offset with the parent and read garbage
    # when both seek at once, so every process opens its own.
    def __getstate__(self):
        return {**self.__dict__, "_zip": None, "_zip_pid": None}

    def _archive(self) -> zipfile.ZipFile:
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip = zipfile.ZipFile(self.root)
            self._zip_pid = os.getpid()
        return self._zip

    def list_files(self) -> list[str]:
        """All file names (posix, relative to the root), sorted; hidden and macOS metadata files left out."""
        if self.is_zip:
            names = [n for n in self._archive().namelist() if not n.endswith("/")]
        else:
            names = [p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()]
        return sorted(n for n in names if not any(part.startswith((".", "__MACOSX")) for part in n.split("/")))

    def list_images(self) -> list[str]:
        return [n for n in self.list_files() if is_image_file(n)]

    def read(self, name: str) -> bytes:
        if self.is_zip:
            return self._archive().read(name)
        return (self.root / name).read_bytes()

    def describe(self, name: str) -> str:
        return f"{self.root}::{name}" if self.is_zip else str(self.root / name)


def check_images(
    store: ImageStore,
    names: list[str],
    categories: list[str],
    strict: bool,
    limit: int | None = None,
) -> list[str]:
    """The readable files, ordered round-robin over categories (each in sorted name order), up to `limit`.

    The first N of this order is a deterministic, category-balanced subset (a corrupt
    file is replaced by the next file of its own category), and a smaller subset is
    always contained in a larger one. Only as many files as needed are checked. A
    corrupt file is skipped with a warning naming it (and a count at the end), or
    raises CorruptImageError naming it when strict.
    """
    groups: dict[str, list[str]] = {}
    for name, cat in sorted(zip(names, categories)):
        groups.setdefault(cat, []).append(name)
    queues = [iter(groups[c]) for c in sorted(groups)]
    target = len(names) if limit is None else min(limit, len(names))
    good: list[str] = []
    bad: list[str] = []
    bar = tqdm(total=target, desc=f"checking images in {store.root.name}", unit="img", leave=False)
    while queues and len(good) < target:
        for queue in list(queues):
            if len(good) >= target:
                break
            for name in queue:  # advance this category to its next readable file
                try:
                    _check_one(store, name)
                except CorruptImageError as exc:
                    if strict:
                        raise CorruptImageError(f"{exc} (data.strict=true; set data.strict=false to skip such files)") from exc
                    log.warning("skipping unreadable image %s", exc)
                    bad.append(name)
                    continue
                good.append(name)
                bar.update()
                break
            else:
                queues.remove(queue)  # category exhausted
    bar.close()
    if bad:
        log.warning("skipped %d unreadable image(s) under %s: %s", len(bad), store.root, ", ".join(bad))
    return good


def _check_one(store: ImageStore, name: str) -> None:
    try:
        data = store.read(name)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise CorruptImageError(f"cannot read {store.describe(name)}: {exc}") from exc
    try:
        img = Image.open(io.BytesIO(data))
        # JPEG draft mode decodes at 1/8 scale: it still reads the whole stream (truncation is
        # caught) at a fraction of the cost; the full decode happens when the item is read.
        img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
        img.load()
    except Exception as exc:
        raise CorruptImageError(f"cannot decode image {store.describe(name)}: {type(exc).__name__}: {exc}") from exc


class LazyImageTransform:
    """`datasets` transform: the `image` column holds file names; return PIL RGB images at the resolution."""

    def __init__(self, store: ImageStore, resolution: int, filter_name: str):
        self.store = store
        self.resolution = int(resolution)
        self.filter_name = filter_name
        self._resample = resize_filter(filter_name)

    def load(self, name: str) -> Image.Image:
        img = decode_image(self.store.read(name), self.store.describe(name))
        return center_crop_resize(to_rgb(img), self.resolution, self._resample)

    def __call__(self, batch: dict) -> dict:
        if "image" in batch:
            batch["image"] = [self.load(n) for n in batch["image"]]
        return batch
