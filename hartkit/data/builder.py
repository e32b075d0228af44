"""build_dataset: one entry point for every dataset, all with the same columns.

Columns: image (PIL RGB, square, data.resolution), prompt (str), category (str),
category_id (ClassLabel int). Generated datasets (synthscenes, photos) are
rendered once and held as Arrow tables (PNG-encoded, lossless); file-backed
ones (mjhq30k, imagefolder) keep file names and decode on access.

Built splits are cached on disk, as `datasets` caches what it builds: under
``<cache>/datasets/<name>-<split>-<hash of the data config>-<code hash>[-<files hash>]/``
(``save_to_disk``), where ``<cache>`` is ``data.cache_dir`` if set, else hartkit's cache
(``hartkit.utils.cache``: ``paths.cache``, ``$HARTKIT_CACHE_DIR``, ``~/.cache/hartkit``).
File-backed splits save their checked table of file names, prompts and categories,
keyed also by a fingerprint of the source files (path, size, mtime of each), so a
changed, added or removed file gives a new entry. One process builds a split under
a file lock while other processes wait; in a distributed job rank 0 (of each
machine) builds and the other ranks wait for the finished entry. Every one of them
then memory-maps the same Arrow files. Built splits are also kept in memory, so a
second call in a process is instant.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import multiprocessing
import os
import shutil
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, Features, Value, load_from_disk
from datasets import Image as ImageFeature
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from hartkit.data import bundled_photos, imagefolder, imagenet, mjhq, photos, synthscenes
from hartkit.data import files as files_module
from hartkit.data import images as images_module
from hartkit.data.config import DataConfig
from hartkit.data.files import ImageStore, LazyImageTransform, check_images
from hartkit.data.images import resize_filter
from hartkit.errors import ConfigError
from hartkit.utils.cache import builds_shared_entries, cache_root, wait_for
from hartkit.utils.hashing import config_hash

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
DATASETS = ("synthscenes", "photos", "mjhq30k", "imagefolder", "imagenet")
_GENERATED = ("synthscenes", "photos")
_FILE_BACKED = ("mjhq30k", "imagefolder")
# in a cached file-backed split: the folder or zip its file names are read from
_SOURCE_FILE = "hartkit_source.json"
# keys that do not change a dataset's content (left out of its cache key)
_NON_CONTENT_KEYS = ("num_workers", "cache_dir")
_MEMORY_CACHE: OrderedDict[str, Dataset] = OrderedDict()
_MEMORY_CACHE_SIZE = 8


def as_data_config(data_cfg: Any) -> DataConfig:
    """Accept a DataConfig, a DictConfig (cfg.data) or a plain dict; validate keys and types."""
    if isinstance(data_cfg, DataConfig):
        return data_cfg
    if isinstance(data_cfg, DictConfig) and OmegaConf.is_missing(data_cfg, "path"):
        raise FileNotFoundError(f"data={data_cfg.get('name')} needs a local folder or zip: set data.path=/path/to/images")
    schema = OmegaConf.structured(DataConfig)
    merged = OmegaConf.merge(schema, data_cfg if isinstance(data_cfg, DictConfig) else OmegaConf.create(data_cfg))
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def features(class_names: list[str], lazy: bool = False) -> Features:
    return Features(
        {
            "image": Value("string") if lazy else ImageFeature(),
            "prompt": Value("string"),
            "category": Value("string"),
            "category_id": ClassLabel(names=class_names),
        }
    )


def cache_key(cfg: DataConfig, split: str) -> str:
    content = {k: v for k, v in OmegaConf.to_container(OmegaConf.structured(cfg)).items() if k not in _NON_CONTENT_KEYS}
    stamp = None
    if cfg.path is not None and Path(cfg.path).expanduser().exists():
        st = Path(cfg.path).expanduser().stat()  # a changed folder/zip must not hit a stale cache
        stamp = (st.st_mtime_ns, st.st_size)
    return f"{cfg.name}-{split}-{config_hash(content, split, stamp)}"


def _checked(data_cfg: Any, split: str) -> DataConfig:
    cfg = as_data_config(data_cfg)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {list(SPLITS)}")
    if cfg.name not in DATASETS:
        raise ConfigError(f"unknown dataset data.name={cfg.name!r}; choose one of {list(DATASETS)}")
    if cfg.resolution < 8:
        raise ConfigError(f"data.resolution must be at least 8 pixels, got {cfg.resolution}")
    resize_filter(cfg.resize_filter)  # fail early on a typo
    size = cfg.train_size if split == "train" else cfg.test_size
    if cfg.name in _GENERATED and size < 1:
        raise ConfigError(f"data.{split}_size must be at least 1, got {size}")
    return cfg


def build_dataset(data_cfg: Any, split: str = "train") -> Dataset:
    """The `split` ("train" | "test") of the dataset named by data_cfg.name, as a `datasets.Dataset`."""
    cfg = _checked(data_cfg, split)
    if cfg.name == "mjhq30k" and split == "train":
        log.warning("MJHQ-30K has a single split: split 'train' uses the same images as 'test'")
        split = "test"  # same images, same cache entry: the files are checked once
    key = cache_key(cfg, split)
    if key in _MEMORY_CACHE:
        _MEMORY_CACHE.move_to_end(key)
        return _fresh_view(_MEMORY_CACHE[key])
    ds = _BUILDERS[cfg.name](cfg, split)
    _MEMORY_CACHE[key] = ds
    while len(_MEMORY_CACHE) > _MEMORY_CACHE_SIZE:
        _MEMORY_CACHE.popitem(last=False)
    return _fresh_view(ds)


def category_counts(data_cfg: Any, split: str = "train") -> Counter:
    """Images per category of a split. Generated datasets are counted from their category rule (synthscenes:
    the main shape is ``SHAPES[i % 10]``; photos: photograph ``i % n`` of the split) without rendering."""
    cfg = _checked(data_cfg, split)
    if cfg.name in _GENERATED and not _on_disk(cfg, split):
        size = cfg.train_size if split == "train" else cfg.test_size
        return Counter(_generated_category(cfg, split, i) for i in range(size))
    return Counter(build_dataset(cfg, split)["category"])


def head(data_cfg: Any, split: str, n: int) -> Dataset:
    """The first ``n`` items of a split. A generated split that is not built yet renders only these ``n``
    (item i is a function of (seed, split, i), so they equal the full split's first ``n``)."""
    cfg = _checked(data_cfg, split)
    if cfg.name in _GENERATED and not _on_disk(cfg, split) and cache_key(cfg, split) not in _MEMORY_CACHE:
        size = cfg.train_size if split == "train" else cfg.test_size
        class_names = synthscenes.CATEGORIES if cfg.name == "synthscenes" else photos.PHOTO_CATEGORIES
        return _render(cfg, split, min(n, size), class_names)
    ds = build_dataset(cfg, split)
    return ds.select(range(min(n, len(ds))))


def _generated_category(cfg: DataConfig, split: str, index: int) -> str:
    if cfg.name == "synthscenes":
        return synthscenes.SHAPES[index % len(synthscenes.SHAPES)]
    names = photos.SPLIT_PHOTOS[split]
    return names[index % len(names)]


def _on_disk(cfg: DataConfig, split: str) -> bool:
    return (_disk_entry(cfg, split) / "dataset_info.json").is_file()


def clear_cache() -> None:
    _MEMORY_CACHE.clear()


def _fresh_view(ds: Dataset) -> Dataset:
    # a new Dataset object over the same Arrow table, so a caller's set_format/set_transform
    # never leaks into the cached copy
    transform = ds.format.get("format_kwargs", {}).get("transform") if ds.format["type"] == "custom" else None
    return ds.with_transform(transform) if transform is not None else ds.with_format(None)


# ---------------------------------------------------------------- generated datasets


def render_synthscene(data_cfg: Any, split: str, index: int) -> tuple:
    """Scene ``index`` of a synthscenes split exactly as the dataset holds it: (image, caption, layout), the layout
    giving each object's centre and radius in pixels (for probes that need where the objects are)."""
    cfg = as_data_config(data_cfg)
    return synthscenes.render_scene(cfg.seed, split, index, cfg.resolution, cfg.max_objects, tuple(cfg.backgrounds),
                                    cfg.supersample, cfg.noise_grain)


class _SceneRenderer:
    """Item i of a generated split as (PNG bytes, prompt, category); picklable for worker processes."""

    def __init__(self, cfg: DataConfig, split: str):
        self.cfg, self.split = cfg, split

    def render(self, i: int) -> tuple:
        cfg = self.cfg
        if cfg.name == "synthscenes":
            img, caption, layout = render_synthscene(cfg, self.split, i)
            return img, caption, layout.main.shape
        lo, hi = cfg.crop_scale
        return photos.render_crop(cfg.seed, self.split, i, cfg.resolution, (lo, hi), resize_filter(cfg.resize_filter))

    def __call__(self, i: int) -> tuple[bytes, str, str]:
        img, prompt, category = self.render(i)
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=1)  # lossless; level 1 is 3x faster than the default
        return buf.getvalue(), prompt, category


def disk_cache_dir(cfg: DataConfig) -> Path:
    """Where built splits of this data config are saved: ``data.cache_dir``, else ``<hartkit cache>/datasets``."""
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else cache_root() / "datasets"


@functools.cache
def code_fingerprint(name: str) -> str:
    """Hash of the code that builds a dataset (for generated ones also the photographs they crop): a cached
    split on disk is reused only while that code is unchanged."""
    if name in _GENERATED:
        import skimage

        modules, version = [synthscenes, photos, bundled_photos, images_module], skimage.__version__
    else:  # listing, captions, checking: what decides which files and prompts a file-backed split holds
        modules, version = [mjhq, imagefolder, files_module, images_module], ""
    blobs = [Path(m.__file__).read_bytes() for m in modules] + [Path(__file__).read_bytes()]
    return config_hash(name, [hashlib.sha256(b).hexdigest() for b in blobs], version, length=8)


def source_fingerprint(cfg: DataConfig) -> str:
    """Hash of the files a file-backed dataset reads: every file under ``data.path`` (or the zip itself), MJHQ's
    ``meta_data.json`` beside an unpacked folder, and ``data.captions``, each as (relative path, size, mtime).
    A changed, added or removed file gives another hash, so a cached split is never stale. Hidden files are
    left out, as the datasets leave them out. Only file metadata is read (30k files: well under a second)."""
    sources: list[Path] = []
    if cfg.path:
        root = Path(cfg.path).expanduser()
        sources.append(root)
        if cfg.name == "mjhq30k":
            sources.append(root.parent / mjhq.META_FILE)  # read when data.path is the unpacked folder
    if cfg.captions:
        sources.append(Path(cfg.captions).expanduser())
    return config_hash([[str(src), _file_stats(src)] for src in sources], length=10)


def _file_stats(path: Path) -> list:
    if path.is_file():
        st = path.stat()
        return [[".", st.st_size, st.st_mtime_ns]]
    if not path.is_dir():
        return []
    stats = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "__MACOSX"))]
        for name in filenames:
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            try:
                st = full.stat()
            except OSError:  # vanished while listing, or a broken link: it cannot be read either
                continue
            stats.append([full.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns])
    return sorted(stats)


def _disk_entry(cfg: DataConfig, split: str) -> Path:
    name = f"{cache_key(cfg, split)}-{code_fingerprint(cfg.name)}"
    if cfg.name in _FILE_BACKED:
        name += f"-{source_fingerprint(cfg)}"
    return disk_cache_dir(cfg) / name


def _cached_on_disk(cfg: DataConfig, split: str, build: Callable[[], Dataset]) -> Dataset:
    """Load the split from the disk cache, or build it there once: one process at a time (a file lock), and in
    a distributed job rank 0 of the machine while the other ranks wait for the finished entry."""
    from filelock import FileLock

    final = _disk_entry(cfg, split)
    folder = final.parent
    done = final / "dataset_info.json"  # finished entries are renamed into place: this file means complete
    if done.is_file():
        return _load_entry(cfg, final)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("cannot create the dataset cache %s (%s): building %s/%s in memory; set paths.cache or "
                    "HARTKIT_CACHE_DIR to a writable folder", folder, exc, cfg.name, split)
        return build()
    if not builds_shared_entries():
        wait_for(done, f"{cfg.name}/{split}")
        return _load_entry(cfg, final)
    with FileLock(str(final) + ".lock"):
        if done.is_file():  # another process built it while this one waited for the lock
            log.info("loading %s/%s from %s (built by another process)", cfg.name, split, final)
            return _load_entry(cfg, final)
        for stale in folder.glob(f".{final.name}.tmp-*"):  # left by a process killed while saving
            shutil.rmtree(stale, ignore_errors=True)
        ds = build()
        tmp = folder / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
        _save_entry(ds, tmp)
        shutil.rmtree(final, ignore_errors=True)  # an unfinished leftover (no dataset_info.json)
        tmp.rename(final)
        log.info("cached %s/%s at %s", cfg.name, split, final)
    return _load_entry(cfg, final)


def _save_entry(ds: Dataset, folder: Path) -> None:
    """The split's Arrow table; for a file-backed split also where its files are read from (the lazy image
    transform is code, not data: it is attached again on loading)."""
    transform = ds.format.get("format_kwargs", {}).get("transform") if ds.format["type"] == "custom" else None
    with _quiet_datasets():
        ds.with_format(None).save_to_disk(str(folder))
    if isinstance(transform, LazyImageTransform):
        (folder / _SOURCE_FILE).write_text(json.dumps({"root": str(transform.store.root)}))


def _load_entry(cfg: DataConfig, folder: Path) -> Dataset:
    ds = load_from_disk(str(folder))
    source = folder / _SOURCE_FILE
    if not source.is_file():
        return ds
    root = json.loads(source.read_text())["root"]
    try:
        store = ImageStore(root)
    except FileNotFoundError as exc:
        raise ConfigError(f"the cached split {folder} reads its images from {root}, which is gone ({exc}); "
                          f"delete {folder} (or the whole dataset cache) so that it is built again") from exc
    return ds.with_transform(LazyImageTransform(store, cfg.resolution, cfg.resize_filter))


@contextlib.contextmanager
def _quiet_datasets():
    """No `datasets` progress bar for saving a split (hartkit's own bar already showed the rendering)."""
    from datasets.utils import disable_progress_bars, enable_progress_bars, is_progress_bar_enabled

    was_enabled = is_progress_bar_enabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            enable_progress_bars()


def _generated(cfg: DataConfig, split: str, class_names: list[str]) -> Dataset:
    size = cfg.train_size if split == "train" else cfg.test_size
    if size < 1:
        raise ConfigError(f"data.{split}_size must be at least 1, got {size}")
    return _cached_on_disk(cfg, split, lambda: _render(cfg, split, size, class_names))


def _render(cfg: DataConfig, split: str, size: int, class_names: list[str]) -> Dataset:
    renderer = _SceneRenderer(cfg, split)
    bar = dict(total=size, desc=f"rendering {cfg.name}/{split}", unit="img", leave=False, disable=size < 200)
    if cfg.num_workers > 0 and size >= 4 * cfg.num_workers and "fork" in multiprocessing.get_all_start_methods():
        # big images (1024 px: ~0.3 s each) are worth spreading over processes
        with multiprocessing.get_context("fork").Pool(cfg.num_workers) as pool:
            items = list(tqdm(pool.imap(renderer, range(size), chunksize=8), **bar))
    else:
        items = [renderer(i) for i in tqdm(range(size), **bar)]
    ids = {c: i for i, c in enumerate(class_names)}
    columns = {
        "image": [{"bytes": png, "path": None} for png, _, _ in items],
        "prompt": [prompt for _, prompt, _ in items],
        "category": [category for _, _, category in items],
        "category_id": [ids[category] for _, _, category in items],
    }
    return Dataset.from_dict(columns, features=features(class_names))


def _build_synthscenes(cfg: DataConfig, split: str) -> Dataset:
    return _generated(cfg, split, synthscenes.CATEGORIES)


def _build_photos(cfg: DataConfig, split: str) -> Dataset:
    return _generated(cfg, split, photos.PHOTO_CATEGORIES)


# ---------------------------------------------------------------- file-backed datasets


def _file_backed(
    cfg: DataConfig,
    store: ImageStore,
    names: list[str],
    prompts: list[str],
    categories: list[str],
    class_names: list[str],
) -> Dataset:
    keep = list(range(len(names)))
    if cfg.categories is not None:
        unknown = sorted(set(cfg.categories) - set(categories))
        if unknown:
            raise ConfigError(
                f"data.categories names {unknown}, which {store.root} does not have; it has {sorted(set(categories))}"
            )
        wanted = set(cfg.categories)
        keep = [i for i in keep if categories[i] in wanted]
    if cfg.subset is not None and cfg.subset < 1:
        raise ConfigError(f"data.subset must be a positive number of images or null, got {cfg.subset}")
    good = check_images(store, [names[i] for i in keep], [categories[i] for i in keep], cfg.strict, limit=cfg.subset)
    if not good:
        raise FileNotFoundError(f"no readable images left under {store.root} (data.path) after filtering")
    by_name = {names[i]: i for i in keep}
    rows = [by_name[n] for n in good]
    ids = {c: i for i, c in enumerate(class_names)}
    ds = Dataset.from_dict(
        {
            "image": [names[i] for i in rows],
            "prompt": [prompts[i] for i in rows],
            "category": [categories[i] for i in rows],
            "category_id": [ids[categories[i]] for i in rows],
        },
        features=features(class_names, lazy=True),
    )
    return ds.with_transform(LazyImageTransform(store, cfg.resolution, cfg.resize_filter))


def _build_mjhq30k(cfg: DataConfig, split: str) -> Dataset:
    return _cached_on_disk(cfg, split, lambda: _scan_mjhq30k(cfg))


def _build_imagefolder(cfg: DataConfig, split: str) -> Dataset:
    return _cached_on_disk(cfg, split, lambda: _scan_imagefolder(cfg, split))


def _scan_mjhq30k(cfg: DataConfig) -> Dataset:
    store, meta = mjhq.locate(cfg.path, cfg.hub_id, cfg.captions)
    names, prompts, categories = mjhq.records(store, meta)
    return _file_backed(cfg, store, names, prompts, categories, mjhq.class_names(categories))


def _scan_imagefolder(cfg: DataConfig, split: str) -> Dataset:
    root = imagefolder.split_root(cfg.path, split)
    if root == Path(cfg.path).expanduser():
        log.info("image folder %s has no train/ and test/ sub-folders: split %r is the whole folder", root, split)
    store = ImageStore(root)
    names, prompts, categories = imagefolder.records(store, imagefolder.load_captions(store, cfg.captions))
    all_categories = set(categories)
    for other in SPLITS:  # ids must agree between the train and test folders
        other_root = root.parent / other
        if root.name in SPLITS and other != split and other_root.is_dir():
            all_categories |= {imagefolder.category_of(n) for n in ImageStore(other_root).list_images()}
    return _file_backed(cfg, store, names, prompts, categories, sorted(all_categories))


_BUILDERS: dict[str, Callable[[DataConfig, str], Dataset]] = {
    "synthscenes": _build_synthscenes,
    "photos": _build_photos,
    "mjhq30k": _build_mjhq30k,
    "imagefolder": _build_imagefolder,
    "imagenet": imagenet.build,  # hartkit/data/imagenet.py (ILSVRC folders, VAR layout)
}
