"""Schema of the `data` config group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class DataConfig:
    name: str = "synthscenes"  # synthscenes | photos | mjhq30k | imagefolder
    resolution: int = 64
    train_size: int = 2000  # generated datasets: images in the train split
    test_size: int = 500  # generated datasets: images in the test split
    seed: int = 0
    path: Optional[str] = None  # mjhq30k / imagefolder: local folder or zip
    captions: Optional[str] = None  # imagefolder: optional captions file
    hub_id: Optional[str] = None  # mjhq30k: HF hub id, used only when path is unset
    categories: Optional[list[str]] = None  # keep only these categories
    subset: Optional[int] = None  # keep the first N images (after the category filter)
    resize_filter: str = "bicubic"  # PIL filter used by the centre-crop + resize protocol
    strict: bool = False  # raise on unreadable images instead of skipping them
    num_workers: int = 0
    cache_dir: Optional[str] = None
