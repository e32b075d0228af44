"""Datasets: embedded synthetic scenes and photos, MJHQ-30K, any image folder (see README.md here).

All yield the same columns through Hugging Face `datasets`: image (PIL RGB,
square, data.resolution), prompt, category, category_id.
"""

from hartkit.data.builder import DATASETS, SPLITS, build_dataset, category_counts, clear_cache, head
from hartkit.data.synthscenes import CATEGORIES, COLORS, SHAPES, parse_caption, render_scene
from hartkit.data.torch_dataset import ImageTensorDataset, collate, pil_to_tensor

__all__ = [
    "CATEGORIES",
    "COLORS",
    "DATASETS",
    "SHAPES",
    "SPLITS",
    "ImageTensorDataset",
    "build_dataset",
    "category_counts",
    "clear_cache",
    "collate",
    "head",
    "parse_caption",
    "pil_to_tensor",
    "render_scene",
]
