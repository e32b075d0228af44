"""Schema of the `eval` config group (protocols and feature extractors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class EvalConfig:
    protocol: str = "embedded"  # embedded | mjhq30k
    num_images: int = 500  # images scored per protocol (generation: prompts)
    batch_size: int = 64
    resolution: Optional[int] = None  # None: the data resolution
    resize_filter: str = "bicubic"
    # Fréchet-distance feature spaces to compute; only "fid" (Inception-v3) is called FID.
    fd_features: list[str] = field(default_factory=lambda: ["fd_embedded"])
    clip_score: list[str] = field(default_factory=lambda: ["clip_score_embedded"])
    prompt_accuracy: bool = True
    inception_weights: Optional[str] = None  # local path to inception-2015-12-05.pt
    clip_model: str = "ViT-L-14"
    clip_pretrained: Optional[str] = None  # local checkpoint path or open_clip tag
    fd_clip_model: str = "ViT-B-32"
    fd_clip_pretrained: Optional[str] = None
    embedded_weights: Optional[str] = None  # None: the weights shipped in hartkit
    stats_cache: str = "artifacts/fd_stats"
    per_category: bool = True
