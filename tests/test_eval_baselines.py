"""Reconstruction baselines: same numbers as an independent computation, budgets matched, scored beside the tokenizer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from eval_fakes import install
from omegaconf import OmegaConf

from hartkit.eval.baselines import (
    mean_colour,
    reconstruction_baselines,
    size_for_bits,
    size_for_floats,
    thumbnail,
)


def _images(n=3, res=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 1, 1, generator=g)
    return (base + 0.4 * torch.rand(n, 3, res, res, generator=g)).clamp(0, 1)


# ------------------------------------------------------------- independent reference (numpy, loops)


def _cubic(t: float, a: float = -0.75) -> float:
    t = abs(t)
    if t <= 1:
        return (a + 2) * t**3 - (a + 3) * t**2 + 1
    if t < 2:
        return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return 0.0


def _upsample_1d_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Bicubic weights (Keys a=-0.75, half-pixel centres, edge samples repeated)."""
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        src = (o + 0.5) * n_in / n_out - 0.5
        base = math.floor(src)
        for k in range(base - 1, base + 3):
            m[o, min(max(k, 0), n_in - 1)] += _cubic(src - k)
    return m


def _reference_thumbnail(img_3HW: np.ndarray, s: int, bits: int | None) -> np.ndarray:
    c, h, w = img_3HW.shape
    f = h // s  # integer factors only in these tests: area = block mean
    small = img_3HW.reshape(c, s, f, s, f).mean(axis=(2, 4))
    if bits is not None:
        small = np.round(small * (2**bits - 1)) / (2**bits - 1)
    up_h, up_w = _upsample_1d_matrix(s, h), _upsample_1d_matrix(s, w)
    out = np.stack([up_h @ small[ch] @ up_w.T for ch in range(c)])
    return np.clip(out, 0, 1)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(1.0 / float(((a - b) ** 2).mean()))


@pytest.mark.parametrize("s,bits", [(4, 8), (8, None), (2, 8)])
def test_thumbnail_equals_an_independent_block_mean_and_bicubic(s, bits):
    x = _images()
    got = thumbnail(x, s, bits).double().numpy()
    for i in range(len(x)):
        want = _reference_thumbnail(x[i].double().numpy(), s, bits)
        # float32 (torch) vs float64 (numpy) of values in [0, 1]: a few float32 ulps
        np.testing.assert_allclose(got[i], want, atol=1e-5)


def test_baseline_psnr_through_recon_metrics_equals_the_independent_numbers():
    from hartkit.eval.reconstruction import ReconstructionMetrics

    x = _images(4)
    for name, fn, ref in [
        ("thumb", lambda t: thumbnail(t, 4, 8), lambda a: _reference_thumbnail(a, 4, 8)),
        ("mean", mean_colour, lambda a: np.broadcast_to(a.mean(axis=(1, 2), keepdims=True), a.shape)),
    ]:
        m = ReconstructionMetrics(None)
        m.update(x, fn(x))
        want = np.mean([_psnr(ref(x[i].double().numpy()), x[i].double().numpy()) for i in range(len(x))])
        # PSNR of float32 images: relative error ~1e-6 of the MSE -> ~1e-5 dB
        assert m.compute()["psnr"] == pytest.approx(want, abs=1e-3), name


def test_mean_colour_is_flat_and_keeps_the_mean():
    x = _images()
    y = mean_colour(x)
    assert torch.allclose(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)))
    assert (y.amax(dim=(2, 3)) - y.amin(dim=(2, 3))).abs().max() == 0


def test_budgets_are_matched_from_below():
    # discrete default: scales 1,2,3,4,6,8 -> 130 tokens x log2(1024) = 1300 bits; 24 s^2 <= 1300 -> s = 7
    assert size_for_bits(1300) == 7 and 24 * 7 * 7 <= 1300 < 24 * 8 * 8
    assert size_for_floats(16 * 8 * 8) == 18 and 3 * 18 * 18 <= 1024 < 3 * 19 * 19
    disc = reconstruction_baselines("discrete", (1, 2, 3, 4, 6, 8), 1024, (16, 8, 8), 64)
    assert [b.name for b in disc] == ["baseline: mean colour", "baseline: thumbnail 7px (8-bit)"]
    assert disc[1].bits_per_image == 1176 and disc[0].role == "floor" and disc[1].role == "baseline"
    hyb = reconstruction_baselines("hybrid", (1, 2, 3, 4, 6, 8), 1024, (16, 8, 8), 64, label="hybrid")
    names = [b.name for b in hyb]
    assert names == ["baseline: mean colour", "baseline: thumbnail 7px (8-bit)", "baseline: thumbnail 18px (float)"]
    assert "discrete-only" in hyb[1].matched_to and "discrete+residual" in hyb[2].matched_to
    cont = reconstruction_baselines("continuous", (1, 2, 4), 0, (4, 4, 4), 16)
    assert [b.size for b in cont] == [None, 4]  # 64 floats -> 4 px (48 values)


def test_recon_eval_scores_tokenizer_and_baselines_on_the_same_images(monkeypatch):
    from hartkit.eval.tables import format_comparison
    from hartkit.stages.recon_eval import score_reconstruction
    from hartkit.tokenizers import build_tokenizer

    install(monkeypatch)
    torch.manual_seed(0)
    model = build_tokenizer({
        "kind": "hybrid",
        "autoencoder": {"ch": 8, "ch_mult": [1, 2], "z_channels": 4, "norm_groups": 4},
        "quantizer": {"vocab_size": 16, "patch_nums": [1, 2, 8]},
    })
    x = _images(24, 16) * 2 - 1
    loader = [{"image": x[i:i + 8]} for i in range(0, 24, 8)]
    heldout = _images(24, 16, seed=5)
    baselines = reconstruction_baselines("hybrid", (1, 2, 8), 16, (4, 8, 8), 16)
    cfg = OmegaConf.create({"fd_features": ["fd_test"], "bootstrap": 200, "bootstrap_fd": 50})
    res = score_reconstruction(model, loader, cfg, torch.device("cpu"), baselines, heldout, "other images")
    for b in baselines:
        _, m, ci = res.baselines[b.name]
        want = np.mean([_psnr(b((x[i:i + 1] + 1) / 2).double().numpy()[0], ((x[i] + 1) / 2).double().numpy())
                        for i in range(24)])
        assert m["psnr"] == pytest.approx(want, abs=1e-3)
        assert ci["psnr"][0] <= m["psnr"] <= ci["psnr"][1]
        assert {"rfd_test", "rkid_test"} <= set(m) and {"rfd_test", "rkid_test"} <= set(ci)
    for key in ("psnr", "ssim", "rfd_test", "psnr_discrete"):
        lo, hi = res.intervals[key]
        assert lo <= res.metrics[key] <= hi, key
    assert res.noise_floor["num_images"] == 24 and res.noise_floor["sets"] == "other images"
    assert res.noise_floor["rfd_test"] > 0
    names = [name for name, _ in res.grid_rows]
    assert names[:3] == ["original", "hybrid: discrete+residual", "hybrid: discrete only"]
    assert "mean colour" in names
    text = format_comparison([("hybrid", "model", res.metrics, res.intervals)]
                             + [(n, b.role, m, ci) for n, (b, m, ci) in res.baselines.items()], res.noise_floor)
    assert "hybrid (discrete only)" in text and "[floor]" in text and "noise floor" in text
