"""`imagefolder`: any folder (or zip) of images, class sub-folders optional, captions optional.

Layout: images directly under data.path (category "none") or in sub-folders
(the first path component is the category). With data.path/train and
data.path/test folders, those are the two splits; otherwise both splits are
the whole folder.

Captions (data.captions, or metadata.jsonl / metadata.csv / captions.json found
at the root, as in Hugging Face's imagefolder): a mapping from the image's
path relative to the root (or its file name, or its stem) to the caption:
  - JSON: {"cats/a.jpg": "a cat", ...} or {"a.jpg": {"prompt": "a cat"}, ...}
  - JSONL: one {"file_name": "cats/a.jpg", "text": "a cat"} per line
  - CSV: header with file_name and one of text / caption / prompt
Images without a caption get "a photo of <category>" (or the file stem's words
when uncategorised).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path, PurePosixPath

from hartkit.data.files import ImageStore
from hartkit.errors import ConfigError

log = logging.getLogger(__name__)

NO_CATEGORY = "none"
AUTO_CAPTION_FILES = ("metadata.jsonl", "metadata.csv", "captions.json")
_FILE_KEYS = ("file_name", "file", "filename", "image", "path")
_TEXT_KEYS = ("text", "caption", "prompt")


def split_root(path: str | None, split: str) -> Path:
    if path is None or str(path) in ("", "???"):
        raise FileNotFoundError("data=imagefolder needs a folder of images: set data.path=/path/to/images")
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"image folder {root} does not exist (set by config key data.path)")
    if (root / "train").is_dir() and (root / "test").is_dir():
        return root / split
    return root


def category_of(name: str) -> str:
    parts = PurePosixPath(name).parts
    return parts[0] if len(parts) > 1 else NO_CATEGORY


def _pick(row: dict, keys: tuple[str, ...], what: str, source: str) -> str:
    for k in keys:
        if k in row and row[k] is not None:
            return str(row[k])
    raise ConfigError(f"captions file {source}: an entry has no {what} column (one of {list(keys)}): {row}")


def parse_captions(text: str, source: str) -> dict[str, str]:
    """Parse a captions file's text (format from its extension) into {file key: caption}."""
    suffix = PurePosixPath(source).suffix.lower()
    if suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ConfigError(f"captions file {source}: expected a JSON object mapping file name -> caption")
        return {k: v if isinstance(v, str) else _pick(v, _TEXT_KEYS, "caption", source) for k, v in data.items()}
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    elif suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
    else:
        raise ConfigError(f"captions file {source}: unknown format {suffix!r}; use .json, .jsonl or .csv")
    return {_pick(r, _FILE_KEYS, "file name", source): _pick(r, _TEXT_KEYS, "caption", source) for r in rows}


def load_captions(store: ImageStore, captions: str | None) -> dict[str, str]:
    if captions:
        p = Path(captions).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"captions file {p} does not exist (set by config key data.captions)")
        return parse_captions(p.read_text(), str(p))
    files = set(store.list_files())
    for auto in AUTO_CAPTION_FILES:
        if auto in files:
            return parse_captions(store.read(auto).decode("utf-8"), store.describe(auto))
    return {}


def default_prompt(name: str, category: str) -> str:
    if category != NO_CATEGORY:
        return f"a photo of {category.replace('_', ' ')}"
    return PurePosixPath(name).stem.replace("_", " ").replace("-", " ")


def records(store: ImageStore, captions: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    names = store.list_images()
    if not names:
        raise FileNotFoundError(f"no image files ({', '.join(('.jpg', '.png', '...'))}) under {store.root} (data.path)")
    prompts, categories, uncaptioned = [], [], 0
    for name in names:
        cat = category_of(name)
        p = PurePosixPath(name)
        caption = captions.get(name, captions.get(p.name, captions.get(p.stem)))
        if caption is None:
            uncaptioned += 1
            caption = default_prompt(name, cat)
        prompts.append(caption)
        categories.append(cat)
    if captions and uncaptioned:
        log.warning("%d of %d images under %s have no caption; using their category / file name", uncaptioned, len(names), store.root)
    return names, prompts, categories
