"""`imagenet`: ImageNet-1k (ILSVRC-2012) from a local folder in the layout VAR reads.

    <data.path>/train/<synset>/<image>.JPEG      (n01440764/..., 1000 synset folders)
    <data.path>/val/<synset>/<image>.JPEG        (the 50,000 validation images, sorted into synset folders)

This is the layout of VAR's loader (``utils/data.py``, ``build_dataset``:
``DatasetFolder(osp.join(data_path, 'train'))`` and ``osp.join(data_path, 'val')``).
Also accepted: Kaggle's ILSVRC layout (``<data.path>/Data/CLS-LOC/train`` and ``.../val``), and a
folder that holds the synset folders directly (then both splits are that folder).
hartkit's ``train`` split is ``train/``, its ``test`` split is ``val/``.

- Class index = position of the synset in the sorted list of the train folder's sub-folders
  (torchvision's ``DatasetFolder.find_classes``, which VAR uses), so a class-conditional model
  trained by VAR and one trained here agree on which id means which class. With only a val folder the
  val folder's synsets are used; hidden folders (``.name``) are no classes.
- Category = the synset id (``n01440764``); prompt = ``"a photo of <name>"`` with the first name of
  the synset's line in a synset mapping file (``LOC_synset_mapping.txt`` of the Kaggle download or
  Caffe's ``synset_words.txt``: ``n01440764 tench, Tinca tinca``), looked up in ``data.captions``,
  then in ``data.path`` and its parent; without one the prompt names the synset id.
- Preprocessing (VAR's validation transform): resize the shorter side to ``round(data.mid_reso *
  data.resolution)`` with ``data.resize_filter`` (VAR: LANCZOS, mid_reso 1.125), then centre-crop
  ``data.resolution``; done with torchvision's own ``Resize`` and ``CenterCrop``, exactly VAR's calls.
  VAR's training transform takes a random crop instead; hartkit's datasets are deterministic, so
  the train split gets the centre crop too. ``data.mid_reso=1`` keeps the whole shorter side.
- Files are listed once; an unreadable file is skipped with a warning (``data.strict=true``: an
  error). Splits of more than ``CHECK_LIMIT`` files (the 1.28M train images) are not decoded up front
  (that would take an hour); a corrupt file then fails when it is read, with its name.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath

from hartkit.data.files import ImageStore, check_images
from hartkit.data.images import decode_image, resize_filter, to_rgb
from hartkit.errors import ConfigError

log = logging.getLogger(__name__)

SPLIT_FOLDERS = {"train": "train", "test": "val"}
SYNSET_FILES = ("LOC_synset_mapping.txt", "synset_words.txt")
CHECK_LIMIT = 200_000  # splits with more files are listed, not decoded, when the dataset is built
DEFAULT_MID_RESO = 1.125  # VAR utils/data.py build_dataset(mid_reso=1.125)


def _root(path: str | os.PathLike | None) -> Path:
    if path is None or str(path) in ("", "???"):
        raise ConfigError("data=imagenet needs the ImageNet folder: set data.path=/path/to/imagenet "
                          "(holding train/<synset>/ and val/<synset>/, as VAR's loader reads it)")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"ImageNet folder {root} does not exist or is not a folder (set by config key "
                                f"data.path; it should hold train/<synset>/ and val/<synset>/)")
    return root


def split_folders(path: str | os.PathLike | None) -> dict[str, Path]:
    """{'train': folder, 'test': folder} of whichever splits exist; a bare synset folder serves as both."""
    root = _root(path)
    for base in (root, root / "Data" / "CLS-LOC"):
        found = {split: base / folder for split, folder in SPLIT_FOLDERS.items() if (base / folder).is_dir()}
        if found:
            return found
    if find_classes(root):
        log.info("ImageNet folder %s has no train/ or val/ sub-folder: both splits are its synset folders", root)
        return {"train": root, "test": root}
    raise ConfigError(f"{root} (data.path) holds neither train/ nor val/ nor synset sub-folders; "
                      f"point data.path at the folder that holds train/<synset>/ and val/<synset>/")


def find_classes(folder: Path) -> list[str]:
    """Sorted names of the sub-folders (torchvision DatasetFolder.find_classes), hidden ones left out."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def class_list(path: str | os.PathLike | None) -> list[str]:
    """The synsets in class-index order: sorted sub-folders of train/ (else of val/)."""
    folders = split_folders(path)
    classes = find_classes(folders.get("train", folders["test"]))
    if not classes:
        raise ConfigError(f"{folders.get('train', folders['test'])} has no synset sub-folders (data.path)")
    return classes


def parse_synset_mapping(text: str) -> dict[str, str]:
    """``n01440764 tench, Tinca tinca`` lines -> {synset: 'tench'} (the first name)."""
    out = {}
    for line in text.splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2:
            out[parts[0]] = parts[1].split(",")[0].strip()
    return out


def synset_names(path: str | os.PathLike | None, mapping_file: str | None = None) -> dict[str, str]:
    """{synset: readable name} from ``mapping_file`` (data.captions) or a mapping file found beside the data."""
    if mapping_file:
        p = Path(mapping_file).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"synset mapping file {p} does not exist (set by config key data.captions; "
                                    f"lines like 'n01440764 tench, Tinca tinca', e.g. LOC_synset_mapping.txt)")
        return parse_synset_mapping(p.read_text())
    root = _root(path)
    for folder in (root, root.parent):
        for name in SYNSET_FILES:
            if (folder / name).is_file():
                return parse_synset_mapping((folder / name).read_text())
    return {}


def class_prompt(synset: str, names: dict[str, str]) -> str:
    return f"a photo of {names.get(synset, synset)}"


class ImageNetTransform:
    """VAR's validation transform: shorter side to round(mid_reso * R) (torchvision Resize), centre crop R."""

    def __init__(self, store: ImageStore | None, resolution: int, filter_name: str, mid_reso: float = DEFAULT_MID_RESO):
        from torchvision.transforms import CenterCrop, InterpolationMode, Resize

        if mid_reso < 1.0:
            raise ConfigError(f"data.mid_reso must be at least 1 (resize the shorter side to mid_reso x "
                              f"data.resolution, then crop data.resolution), got {mid_reso}")
        resize_filter(filter_name)  # a clear error for a typo
        self.store = store
        self.resolution = int(resolution)
        self.filter_name = filter_name
        self.mid_reso = float(mid_reso)
        self.resize_to = round(self.mid_reso * self.resolution)
        self._resize = Resize(self.resize_to, interpolation=InterpolationMode(filter_name.lower()))
        self._crop = CenterCrop((self.resolution, self.resolution))

    def describe(self) -> str:
        return (f"shorter side to {self.resize_to} px ({self.filter_name}), centre crop {self.resolution} px "
                f"(VAR utils/data.py, mid_reso {self.mid_reso:g})")

    def __call__(self, img):
        """A PIL image -> RGB, resized and cropped; or a ``datasets`` batch whose ``image`` holds file names."""
        if isinstance(img, dict):
            if "image" in img:
                img["image"] = [self.load(n) for n in img["image"]]
            return img
        return self._crop(self._resize(to_rgb(img)))

    def load(self, name: str):
        if self.store is None:
            raise RuntimeError("this transform has no image store to read file names from")
        return self(decode_image(self.store.read(name), self.store.describe(name)))


def _category(name: str, root: Path) -> str:
    parts = PurePosixPath(name).parts
    if len(parts) < 2:
        raise ConfigError(f"{root / name} lies directly in {root}, not in a synset sub-folder. The raw ILSVRC val "
                          f"folder is flat: sort it into val/<synset>/ first (the labels are in LOC_val_solution.csv "
                          f"of the Kaggle download, or the devkit's ILSVRC2012_validation_ground_truth.txt)")
    return parts[0]


def _round_robin(names: list[str], categories: list[str]) -> list[str]:
    """The order check_images uses (one file per category in turn), without decoding anything."""
    groups: dict[str, list[str]] = {}
    for name, cat in sorted(zip(names, categories)):
        groups.setdefault(cat, []).append(name)
    queues = [groups[c] for c in sorted(groups)]
    longest = max((len(q) for q in queues), default=0)
    return [q[i] for i in range(longest) for q in queues if i < len(q)]


def build(cfg, split: str):
    """The split as a `datasets.Dataset` with hartkit's columns (image file names decoded on access)."""
    from datasets import Dataset

    from hartkit.data.builder import features

    folders = split_folders(cfg.path)
    if split not in folders:
        other = next(iter(folders))
        raise ConfigError(f"ImageNet split {split!r} needs {SPLIT_FOLDERS[split]}/ under {cfg.path} (data.path); "
                          f"only {SPLIT_FOLDERS[other]}/ exists")
    root = folders[split]
    classes = class_list(cfg.path)
    index = {c: i for i, c in enumerate(classes)}
    store = ImageStore(root)
    names = store.list_images()
    if not names:
        raise FileNotFoundError(f"no image files under {root} (data.path)")
    categories = [_category(n, root) for n in names]
    unknown = sorted(set(categories) - set(index))
    if unknown:
        raise ConfigError(f"{root} has synset folders that the train folder lacks ({unknown[:5]}); class ids follow "
                          f"the train folder's sorted synsets, so both splits need the same synsets")
    keep = list(range(len(names)))
    if cfg.categories is not None:
        missing = sorted(set(cfg.categories) - set(categories))
        if missing:
            raise ConfigError(f"data.categories names {missing}, which {root} does not have")
        wanted = set(cfg.categories)
        keep = [i for i in keep if categories[i] in wanted]
    if cfg.subset is not None and cfg.subset < 1:
        raise ConfigError(f"data.subset must be a positive number of images or null, got {cfg.subset}")
    names, categories = [names[i] for i in keep], [categories[i] for i in keep]
    if cfg.subset is not None or len(names) <= CHECK_LIMIT:
        good = check_images(store, names, categories, cfg.strict, limit=cfg.subset)
    else:
        log.info("%s: %d files, listed but not decoded up front (more than %d); an unreadable file fails when read",
                 root, len(names), CHECK_LIMIT)
        good = _round_robin(names, categories)
    if not good:
        raise FileNotFoundError(f"no readable images left under {root} (data.path) after filtering")
    readable = synset_names(cfg.path, cfg.captions)
    cats = [_category(n, root) for n in good]
    ds = Dataset.from_dict(
        {"image": good, "prompt": [class_prompt(c, readable) for c in cats], "category": cats,
         "category_id": [index[c] for c in cats]},
        features=features(classes, lazy=True),
    )
    mid = getattr(cfg, "mid_reso", None)
    mid = DEFAULT_MID_RESO if mid is None else mid
    return ds.with_transform(ImageNetTransform(store, cfg.resolution, cfg.resize_filter, mid))
