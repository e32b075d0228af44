"""`mjhq30k`: MJHQ-30K (playgroundai/MJHQ-30K) in its published layout.

    mjhq30k_imgs.zip (or its unpacked folder)   <category>/<hash>.jpg  (an extra top folder is fine)
    meta_data.json                              {"<hash>": {"category": ..., "prompt": ...}, ...}

meta_data.json is looked up, in order: data.captions; beside the zip / inside
the folder; the folder's parent; inside the zip. Offline, point data.path at
the download folder (holding mjhq30k_imgs.zip: the zip is read), the zip or
the unpacked folder. Only when data.path is unset are the two files fetched
from the hub (data.hub_id) with huggingface_hub.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path, PurePosixPath

import huggingface_hub

from hartkit.data.files import ImageStore
from hartkit.errors import UserError

log = logging.getLogger(__name__)

MJHQ_CATEGORIES: list[str] = [
    "animals", "art", "fashion", "food", "indoor", "landscape", "logo", "people", "plants", "vehicles",
]  # fmt: skip
IMAGES_ZIP = "mjhq30k_imgs.zip"
META_FILE = "meta_data.json"

# only the two files hartkit reads (the repository also holds ~9 GB of parquet shards hartkit does not use)
DOWNLOAD_COMMAND = (f"hf download playgroundai/MJHQ-30K --repo-type dataset --include {IMAGES_ZIP} "
                    f"--include {META_FILE} --local-dir /data/mjhq30k")
_HOW_TO_GET = (
    f"Download it once on a machine with internet: `{DOWNLOAD_COMMAND}` (huggingface_hub's `hf` command; "
    f"fetches {IMAGES_ZIP} and {META_FILE} only), then run with data.path=/data/mjhq30k (the download "
    f"folder; {IMAGES_ZIP} itself or its unpacked folder work too), which works offline."
)


class DatasetUnavailableError(UserError, RuntimeError):
    """A dataset's files are not where the config says; the message says how to fix it."""


def download_from_hub(hub_id: str) -> Path:
    """Fetch the images zip + meta_data.json from the hub; returns the local zip path."""
    try:
        zip_path = huggingface_hub.hf_hub_download(repo_id=hub_id, filename=IMAGES_ZIP, repo_type="dataset")
        huggingface_hub.hf_hub_download(repo_id=hub_id, filename=META_FILE, repo_type="dataset")
    except Exception as exc:  # offline, gated, renamed: all end in the same advice
        raise DatasetUnavailableError(
            f"could not fetch MJHQ-30K from the Hugging Face hub ({hub_id}): {type(exc).__name__}: {exc}. "
            f"data.path is unset, so hartkit tried the hub. {_HOW_TO_GET}"
        ) from exc
    return Path(zip_path)


def locate(path: str | None, hub_id: str | None, meta_path: str | None) -> tuple[ImageStore, dict]:
    """The image store and the parsed meta_data.json for the configured MJHQ-30K copy."""
    if path is None:
        if not hub_id:
            raise DatasetUnavailableError(f"data=mjhq30k needs data.path (local {IMAGES_ZIP} or folder). {_HOW_TO_GET}")
        root = download_from_hub(hub_id)
    else:
        root = Path(path).expanduser()
        if not root.exists():
            raise DatasetUnavailableError(
                f"MJHQ-30K path {root} does not exist (set by config key data.path). "
                f"Point data.path at the download folder, the local {IMAGES_ZIP} or its unpacked folder. {_HOW_TO_GET}"
            )
        if root.is_dir() and (root / IMAGES_ZIP).is_file():
            root = root / IMAGES_ZIP  # the download folder: the zip, with meta_data.json beside it
    store = ImageStore(root)
    return store, _load_meta(store, meta_path)


def _load_meta(store: ImageStore, meta_path: str | None) -> dict:
    root = store.root
    candidates = [Path(meta_path).expanduser()] if meta_path else []
    candidates += [root.parent / META_FILE] if store.is_zip else [root / META_FILE, root.parent / META_FILE]
    for cand in candidates:
        if cand.is_file():
            return json.loads(cand.read_text())
    if meta_path:
        raise DatasetUnavailableError(f"{META_FILE} not found at {meta_path} (set by config key data.captions)")
    if store.is_zip:
        inside = [n for n in store.list_files() if PurePosixPath(n).name == META_FILE]
        if inside:
            return json.loads(store.read(inside[0]))
    looked = ", ".join(str(c) for c in candidates) + (f", inside {root}" if store.is_zip else "")
    raise DatasetUnavailableError(
        f"{META_FILE} (image hash -> category, prompt) not found; looked at {looked}. "
        f"Put it beside {root.name} or set data.captions=/path/to/{META_FILE}."
    )


def records(store: ImageStore, meta: dict) -> tuple[list[str], list[str], list[str]]:
    """(file names, prompts, categories) of every image that meta_data.json describes."""
    names, prompts, categories, unknown = [], [], [], []
    for name in store.list_images():
        entry = meta.get(PurePosixPath(name).stem)
        if entry is None:
            unknown.append(name)
            continue
        names.append(name)
        prompts.append(str(entry.get("prompt", "")))
        categories.append(str(entry.get("category") or PurePosixPath(name).parent.name))
    if unknown:
        log.warning("skipped %d image(s) of %s with no entry in %s: %s", len(unknown), store.root, META_FILE, ", ".join(unknown[:20]))
    if not names:
        raise DatasetUnavailableError(f"no images of {store.root} are described by {META_FILE}; is this MJHQ-30K?")
    return names, prompts, categories


def class_names(categories: list[str]) -> list[str]:
    """MJHQ's ten categories first (stable ids), then any others found, sorted."""
    return MJHQ_CATEGORIES + sorted(set(categories) - set(MJHQ_CATEGORIES))
