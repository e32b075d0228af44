"""Reconstruction metrics: mean-of-per-image PSNR, SSIM, rFD in the embedded feature space."""

from __future__ import annotations

import math

import pytest
import torch

from hartkit.eval.config import EvalConfig
from hartkit.eval.reconstruction import ReconstructionMetrics


def _images(n=24, res=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 1, 1, generator=g)  # flat colours + texture: varied, like real scenes
    return (base + 0.2 * torch.rand(n, 3, res, res, generator=g)).clamp(0, 1)


def test_psnr_is_the_mean_of_per_image_psnr():
    x = _images(2)
    y = x.clone()
    y[0] = (y[0] + 0.01).clamp(0, 1)
    y[1] = (y[1] + 0.1).clamp(0, 1)
    m = ReconstructionMetrics(None)  # no eval config: PSNR / SSIM only
    m.update(x[:1], y[:1])
    m.update(x[1:], y[1:])
    per_image = [10 * math.log10(1 / float(((y[i] - x[i]) ** 2).mean())) for i in range(2)]
    out = m.compute()
    assert out["psnr"] == pytest.approx(sum(per_image) / 2, rel=1e-4)
    pooled = 10 * math.log10(1 / float(((y - x) ** 2).mean()))
    assert abs(out["psnr"] - pooled) > 1  # differs from the pooled-MSE form
    assert set(out) == {"psnr", "ssim"}


def test_rfd_is_zero_for_perfect_reconstructions_and_grows_with_error():
    cfg = EvalConfig(fd_features=["fd_embedded"])
    x = _images()
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g)
    values = []
    for sigma in (0.0, 0.1, 0.3):
        m = ReconstructionMetrics(cfg)
        y = (x + sigma * noise).clamp(0, 1)
        m.update(x[:10], y[:10])
        m.update(x[10:], y[10:])
        values.append(m.compute()["rfd_embedded"])
    assert values[0] == pytest.approx(0.0, abs=1e-4)  # 24 images, 64-d: sqrtm of a singular product
    assert values[0] < values[1] < values[2] and values[1] > 1e-2
    fields = m.protocol_fields()
    assert fields["feature_extractor"].startswith("rfd_embedded=")
    assert "mean of per-image" in fields["implementation"] and len(fields["extractor_hash"]) == 64


def test_bad_reconstructions_are_rejected():
    m = ReconstructionMetrics(None)
    x = _images(2)
    with pytest.raises(ValueError, match="differ"):
        m.update(x, x[:, :, :16])
    with pytest.raises(ValueError, match="NaN"):
        m.update(x, torch.full_like(x, float("nan")))
    with pytest.raises(ValueError, match="no images"):
        m.compute()
