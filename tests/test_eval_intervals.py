"""Bootstrap intervals, KID and the separation rule: checked against known truths and torchmetrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hartkit.eval.frechet import frechet_distance
from hartkit.eval.intervals import (
    KID,
    FrechetBootstrap,
    bootstrap_mean,
    clip_score_transform,
    intervals_separate,
    kid,
    resample_counts,
)


def test_bootstrap_interval_covers_the_true_mean_in_at_least_90_of_100_draws():
    true_mean = 3.0
    covered = 0
    for draw in range(100):
        rng = np.random.default_rng(1000 + draw)
        sample = rng.exponential(true_mean, size=150)  # skewed, like per-image PSNR gaps
        lo, hi = bootstrap_mean(sample, resamples=500, seed=draw)
        covered += lo <= true_mean <= hi
    assert covered >= 90, covered


def test_bootstrap_interval_shrinks_with_n_and_holds_the_mean():
    rng = np.random.default_rng(0)
    small, large = rng.normal(0, 1, 50), rng.normal(0, 1, 5000)
    lo_s, hi_s = bootstrap_mean(small)
    lo_l, hi_l = bootstrap_mean(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    # the width scales like 1/sqrt(n): 10x more images -> about 10x narrower (3.92 sigma / sqrt(n))
    assert (hi_l - lo_l) == pytest.approx(3.92 / np.sqrt(5000), rel=0.15)
    assert (hi_s - lo_s) / (hi_l - lo_l) > 5


def test_resample_counts_are_draws_with_replacement():
    c = resample_counts(7, 20, seed=3)
    assert c.shape == (20, 7) and (c.sum(1) == 7).all() and (c >= 0).all()
    assert (resample_counts(7, 20, seed=3) == c).all()


def test_clip_score_interval_is_mapped_through_torchmetrics_scaling():
    cos = np.full(10, -0.2)
    assert bootstrap_mean(cos, transform=clip_score_transform) == (0.0, 0.0)
    lo, hi = bootstrap_mean(np.linspace(0.2, 0.3, 40), transform=clip_score_transform)
    assert 20 < lo < 25 < hi < 30


def test_eigen_fd_equals_clean_fid_sqrtm_path():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (300, 16))
    b = rng.normal(0.3, 1.2, (250, 16)) @ rng.normal(0, 0.5, (16, 16))
    expected = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    got = FrechetBootstrap(b).of_features(a)
    # float64 eigen vs Schur square root of 16x16 matrices: agree to round-off relative to the scale
    assert got == pytest.approx(expected, rel=1e-8, abs=1e-8 * np.trace(np.cov(b, rowvar=False)))


def test_fd_bootstrap_interval_brackets_the_distance_and_separates_distinct_sets():
    rng = np.random.default_rng(1)
    ref = rng.normal(0, 1, (400, 8))
    near, far = rng.normal(0.05, 1, (200, 8)), rng.normal(0.8, 1, (200, 8))
    fb = FrechetBootstrap(ref)
    near_ci, far_ci = fb.interval(near, resamples=200), fb.interval(far, resamples=200)
    assert near_ci[0] < fb.of_features(near) < near_ci[1]
    assert far_ci[0] < fb.of_features(far) < far_ci[1]
    assert intervals_separate(near_ci, far_ci)


def test_kid_matches_torchmetrics_on_the_same_features():
    from torchmetrics.image.kid import KernelInceptionDistance

    torch.manual_seed(0)
    real = torch.randn(60, 12, dtype=torch.float64)
    fake = torch.randn(60, 12, dtype=torch.float64) * 1.3 + 0.2
    metric = KernelInceptionDistance(feature=torch.nn.Identity(), subsets=1, subset_size=60)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    expected, _ = metric.compute()
    got = kid(fake.numpy(), real.numpy())
    # both float64; the sums differ only in order: round-off relative to the kernel values' scale
    scale = float(((fake @ real.T / 12 + 1) ** 3).abs().mean())
    assert got == pytest.approx(float(expected), abs=1e-10 * scale)
    assert got > 0


def test_kid_is_near_zero_for_one_distribution_and_unbiased_under_resampling():
    rng = np.random.default_rng(2)
    ref = rng.normal(0, 1, (300, 6))
    same = rng.normal(0, 1, (300, 6))
    k = KID(ref)
    value = k(same)
    lo, hi = k.interval(same, resamples=300)
    assert lo < 0 < hi or abs(value) < 0.05  # unbiased: can go below 0
    assert lo <= value <= hi
    shifted = rng.normal(1, 1, (300, 6))
    assert intervals_separate((lo, hi), k.interval(shifted, resamples=300))


@pytest.mark.parametrize("a,b,separate", [
    ((1.0, 2.0), (2.5, 3.0), True),
    ((1.0, 2.0), (2.0, 3.0), False),  # touching intervals overlap
    ((1.0, 2.0), (1.5, 3.0), False),
    ((3.0, 4.0), (1.0, 2.9), True),
    ((1.0, 2.0), (float("nan"), 3.0), False),
    (None, (1.0, 2.0), False),
])
def test_intervals_separate_exactly_when_they_do_not_overlap(a, b, separate):
    assert intervals_separate(a, b) is separate
    assert intervals_separate(b, a) is separate


def test_paired_kid_is_the_u_statistic_over_distinct_pairs():
    from hartkit.eval.intervals import PairedKID, poly_kernel

    rng = np.random.default_rng(4)
    y = rng.normal(0, 1, (12, 5))
    x = y + rng.normal(0, 0.3, (12, 5))
    k = lambda a, b: float(poly_kernel(a[None], b[None])[0, 0])  # noqa: E731
    n = len(x)
    want = sum(k(x[i], x[j]) + k(y[i], y[j]) - k(x[i], y[j]) - k(x[j], y[i])
               for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    assert PairedKID(y, x).value() == pytest.approx(want, rel=1e-10)
    assert PairedKID(y, y).value() == 0.0  # a perfect reconstruction
    # near-identical pairs: the two-sample estimator counts k(x_i, y_i) and drops below zero, the paired one does not
    close = y + rng.normal(0, 0.01, y.shape)
    assert kid(close, y) < 0 < PairedKID(y, close).value() + 1e-3
    lo, hi = PairedKID(y, x).interval(300)
    assert lo <= want <= hi


def test_kid_of_large_sets_uses_a_fixed_subset(monkeypatch):
    from hartkit.eval import intervals

    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, (90, 4)), rng.normal(0.5, 1, (80, 4))
    monkeypatch.setattr(intervals, "KID_MAX_IMAGES", 50)
    monkeypatch.setattr(intervals.cap_rows, "__defaults__", (50, 0))
    value = kid(a, b)
    assert value == kid(a, b)  # deterministic subset
    assert value == pytest.approx(kid(intervals.cap_rows(a), intervals.cap_rows(b, seed=1)), rel=1e-12)
    assert len(intervals.cap_rows(a)) == 50 and len(intervals.cap_rows(a[:30])) == 30
