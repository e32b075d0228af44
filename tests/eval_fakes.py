"""A tiny deterministic feature extractor for evaluation tests that must not depend on shipped weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hartkit.eval import features


class PooledPixels(features.FeatureExtractor):
    """Features: 4x4 area-pooled pixels (48-d) through a fixed random projection to 16-d, plus their mean."""

    name = "fd_test"
    model_name = "test pooled pixels"
    weights_hash = "0" * 64
    resize = "area to 4x4"
    dim = 16

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.proj = torch.randn(48, self.dim, generator=g) / 48**0.5

    def features(self, images_uint8_B3HW: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(images_uint8_B3HW.float() / 255.0, 4).flatten(1)
        return x @ self.proj * 10


def install(monkeypatch) -> None:
    """Register the fake as ``eval.fd_features=[fd_test]``."""
    monkeypatch.setitem(features.EXTRACTORS, "fd_test", lambda cfg, device: PooledPixels())
    features.clear_extractor_cache()
