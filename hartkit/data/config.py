"""Schema of the `data` config group (see hartkit/data/README.md for each dataset)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hartkit.utils.identity import hashed_when_set, setting


@dataclass
class DataConfig:
    name: str = "synthscenes"  # synthscenes | photos | mjhq30k | imagefolder | imagenet
    resolution: int = 64  # every image is square at this size (centre crop + resize)
    train_size: int = 2000  # generated datasets: images in the train split
    test_size: int = 500  # generated datasets: images in the test split
    seed: int = 0  # generated datasets: scene / crop i of a split is a function of (seed, split, i)
    # synthscenes
    max_objects: int = 3  # 1..max_objects objects per scene (at most 9: one per grid cell)
    backgrounds: list[str] = field(default_factory=lambda: ["photo", "gradient", "noise"])
    supersample: int = 0  # anti-aliasing factor for the shapes; 0: 4 up to 256 px, else 2
    # std of the per-pixel grain on noise backgrounds; None: 0.06 (in artifact hashes only when set)
    noise_grain: Optional[float] = hashed_when_set(default=None)
    # photos
    crop_scale: list[float] = field(default_factory=lambda: [0.25, 1.0])  # crop side / photo's shorter side
    # file-backed datasets (mjhq30k, imagefolder)
    path: Optional[str] = None  # local folder or zip
    captions: Optional[str] = None  # imagefolder: captions file; mjhq30k: meta_data.json (default: beside path)
    hub_id: Optional[str] = None  # mjhq30k: HF hub id, used only when path is unset
    categories: Optional[list[str]] = None  # keep only these categories
    subset: Optional[int] = None  # keep the first N images of the category-interleaved sorted order
    resize_filter: str = "bicubic"  # PIL filter of the centre-crop + resize protocol (and photos crops)
    # imagenet: shorter side resized to round(mid_reso * resolution), then centre-cropped (VAR utils/data.py)
    mid_reso: Optional[float] = hashed_when_set(default=None)  # None: VAR's 1.125 (in artifact hashes only when set)
    strict: bool = False  # raise on unreadable images instead of skipping them with a warning
    num_workers: int = setting(default=0)  # DataLoader workers, and processes rendering generated datasets (same data)
    cache_dir: Optional[str] = setting(default=None)  # built splits are saved here (None: <hartkit cache>/datasets)
