"""Score saved samples: a folder (or zip) of generated images against a reference folder.

    python -m hartkit.tools.score_folder samples/ --reference mjhq30k_imgs/ --fd fid --clip clip_score \
        --set inception_weights=/models/inception-2015-12-05.pt clip_pretrained=/models/vit_l_14.bin

Layout (MJHQ-30K's): ``<root>/<category>/<id>.png`` (images at the root have
no category) and an optional ``meta_data.json`` ({id: {"prompt", "category"}})
in the root or beside it. Prompts enable CLIP score and prompt accuracy;
without them only Fréchet distances are computed.

Generated images are scored as they are: an unreadable file, a non-square image
or one whose size differs from the protocol's (``eval.resolution``, else the
first image's) is reported by name and excluded, with a count. Reference images
are real photographs of any size: they are centre-cropped and resized to the
protocol resolution with ``eval.resize_filter``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from tqdm import tqdm

from hartkit.data.files import ImageStore
from hartkit.data.images import center_crop_resize, decode_image, resize_filter, to_rgb
from hartkit.eval.generation import GenerationMetrics
from hartkit.eval.image_checks import log_failures

log = logging.getLogger(__name__)

META_FILE = "meta_data.json"


@dataclass
class FolderItem:
    name: str  # path inside the folder / zip
    category: str
    prompt: str | None


@dataclass
class FolderScore:
    metrics: dict[str, float]
    failures: list[tuple[str, str]]  # generated images excluded, with why
    reference_failures: list[tuple[str, str]]
    protocol_fields: dict
    num_files: int
    extra: dict = field(default_factory=dict)
    intervals: dict = field(default_factory=dict)  # metric -> [low, high], 95% bootstrap over images
    notes: list = field(default_factory=list)


def _load_meta(store, meta: str | Path | None) -> dict:
    if meta is not None:
        return json.loads(Path(meta).expanduser().read_text())
    root = store.root
    for cand in ([root.parent / META_FILE] if store.is_zip else [root / META_FILE, root.parent / META_FILE]):
        if cand.is_file():
            return json.loads(cand.read_text())
    if store.is_zip:
        inside = [n for n in store.list_files() if PurePosixPath(n).name == META_FILE]
        if inside:
            return json.loads(store.read(inside[0]))
    return {}


def list_items(store, meta: dict) -> list[FolderItem]:
    items = []
    for name in store.list_images():
        p = PurePosixPath(name)
        entry = meta.get(p.stem) or {}
        category = str(entry.get("category") or (p.parent.name if str(p.parent) != "." else ""))
        prompt = entry.get("prompt")
        items.append(FolderItem(name=name, category=category, prompt=None if prompt is None else str(prompt)))
    return items


def _read(store, item: FolderItem, resolution: int | None, resample) -> tuple[torch.Tensor | None, str | None]:
    """(uint8 3xHxW, None) or (None, why it cannot be read). Reference images are resized when resample is set."""
    try:
        img = to_rgb(decode_image(store.read(item.name), item.name))
    except Exception as exc:  # any decoder failure is a bad file, reported by name
        return None, f"unreadable image ({exc})"
    if resample is not None and resolution is not None:
        img = center_crop_resize(img, resolution, resample)
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1), None


def _batches(store, items: list[FolderItem], batch_size: int, resolution: int | None, resample):
    """Yield (images list, items, read failures) per batch."""
    for s in range(0, len(items), batch_size):
        chunk = items[s : s + batch_size]
        images, kept, failures = [], [], []
        for it in chunk:
            img, why = _read(store, it, resolution, resample)
            if img is None:
                failures.append((it.name, why))
            else:
                images.append(img)
                kept.append(it)
        yield images, kept, failures


def score_folder(generated: str | Path, eval_cfg=None, device: torch.device | str = "cpu",
                 reference: str | Path | None = None, reference_set=None, meta: str | Path | None = None,
                 reference_meta: str | Path | None = None) -> FolderScore:
    """Score the images under ``generated`` against ``reference`` (a folder/zip) or an EvaluationSet.

    Corrupt or wrongly sized generated images are excluded and listed in ``failures``.
    """
    gen_store = ImageStore(Path(generated).expanduser())
    gen_items = list_items(gen_store, _load_meta(gen_store, meta))
    if not gen_items:
        raise FileNotFoundError(f"no image files under {generated}")
    metrics = GenerationMetrics(eval_cfg, device)
    batch_size = int(getattr(eval_cfg, "batch_size", None) or 64) if eval_cfg is not None else 64
    read_failures: list[tuple[str, str]] = []

    if reference_set is not None:
        metrics.reference_from_cache_or(reference_set.cache_key, reference_set.reference_batches)
        if metrics.resolution is None:
            metrics.resolution = reference_set.resolution
    elif reference is not None:
        ref_store = ImageStore(Path(reference).expanduser())
        ref_items = list_items(ref_store, _load_meta(ref_store, reference_meta))
        if metrics.resolution is None:  # the generated images decide the protocol resolution
            first, _ = next((r for r in (_read(gen_store, it, None, None) for it in gen_items) if r[0] is not None),
                            (None, None))
            metrics.resolution = None if first is None else int(first.shape[-1])
        resample = resize_filter(getattr(eval_cfg, "resize_filter", None) or "bicubic")
        for images, kept, failures in tqdm(_batches(ref_store, ref_items, batch_size, metrics.resolution, resample),
                                           total=-(-len(ref_items) // batch_size), desc="reference", leave=False):
            metrics.reference_failures += failures
            if images:
                metrics.add_reference(images, [it.category for it in kept], names=[it.name for it in kept])
        log_failures(metrics.reference_failures, "reference")
    else:
        raise ValueError("score_folder needs a reference: a folder/zip of real images or an EvaluationSet")

    no_prompt = [it.name for it in gen_items if it.prompt is None]
    if no_prompt:
        log.warning("%d of %d images under %s have no prompt (no %s entry), e.g. %s: they count for Fréchet "
                    "distances only, not for CLIP score / prompt accuracy", len(no_prompt), len(gen_items), generated,
                    META_FILE, no_prompt[:3])
    for images, kept, failures in tqdm(_batches(gen_store, gen_items, batch_size, None, None),
                                       total=-(-len(gen_items) // batch_size), desc="generated", leave=False):
        read_failures += failures
        for with_prompt in (True, False):  # images without a prompt still count for the Fréchet distances
            idx = [i for i, it in enumerate(kept) if (it.prompt is not None) == with_prompt]
            if idx:
                metrics.update([images[i] for i in idx], [kept[i].prompt for i in idx] if with_prompt else None,
                               [kept[i].category for i in idx], names=[kept[i].name for i in idx])
    metrics.failures = read_failures + metrics.failures
    log_failures(read_failures, "generated")
    result = metrics.compute()
    n_boot = int(_get(eval_cfg, "bootstrap", 1000) or 0)
    intervals = metrics.intervals(n_boot, int(_get(eval_cfg, "bootstrap_fd", 200) or 0)) if n_boot else {}
    return FolderScore(metrics=result, failures=list(metrics.failures), reference_failures=metrics.reference_failures,
                       protocol_fields=metrics.protocol_fields(), num_files=len(gen_items), intervals=intervals,
                       notes=list(metrics.notes))


def _get(cfg, key, default=None):
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if value is None else value
