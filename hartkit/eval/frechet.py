"""Streaming Fréchet distance: running float64 sums, exact sharding, cached references.

Statistics are kept as sums (count, sum of x, sum of x x^T) rather than as a
mean and covariance, because sums add: shards scored on different ranks (or
at different times) merge exactly by addition, and an all-reduce over ranks
gives the same statistics as one process would (up to float64 rounding).
The distance itself follows clean-fid's `frechet_distance` (scipy `sqrtm`,
unbiased covariance as `np.cov`, eps 1e-6 on the diagonals when the product is
singular), so numbers agree with clean-fid on the same features, with one
documented difference, the check of sqrtm's imaginary part:

- clean-fid: raise if any diagonal imaginary part exceeds 1e-3 (absolute);
- hartkit ("relative imaginary-part rule"): raise if any exceeds
  1e-3 * max(1, max |real diagonal|). An absolute 1e-3 assumes Inception's
  feature scale; features with larger norms carry proportionally larger
  round-off (the embedded evaluator's FDs are in the thousands). For Inception
  features the two rules coincide whenever the diagonal stays below 1.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

from hartkit.utils.distributed import all_reduce_sum, is_main
from hartkit.utils.io import atomic_write

log = logging.getLogger(__name__)


class FrechetStats:
    """Running first and second moments of a feature set (float64 sums)."""

    def __init__(self, dim: int):
        self.dim = int(dim)
        self.count = 0
        self.sum_D = torch.zeros(self.dim, dtype=torch.float64)
        self.outer_DD = torch.zeros(self.dim, self.dim, dtype=torch.float64)

    @torch.no_grad()
    def update(self, feats_BD: torch.Tensor) -> None:
        if feats_BD.ndim != 2 or feats_BD.shape[1] != self.dim:
            raise ValueError(f"features must have shape (B, {self.dim}), got {tuple(feats_BD.shape)}")
        x = feats_BD.detach().to("cpu", torch.float64)
        if not torch.isfinite(x).all():
            raise ValueError("features contain NaN or Inf; check the images fed to the feature extractor")
        self.count += x.shape[0]
        self.sum_D += x.sum(0)
        self.outer_DD += x.T @ x

    def merge(self, other: FrechetStats) -> FrechetStats:
        """Add another shard's sums into this one (in place) and return self."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimension {other.dim} into {self.dim}")
        self.count += other.count
        self.sum_D += other.sum_D
        self.outer_DD += other.outer_DD
        return self

    def all_reduce(self) -> FrechetStats:
        """Sum the statistics over all ranks (no-op in one process); every rank gets the total."""
        packed = torch.cat([torch.tensor([float(self.count)], dtype=torch.float64), self.sum_D, self.outer_DD.flatten()])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            backend = torch.distributed.get_backend()
            if backend == "nccl":
                packed = packed.cuda()
            packed = all_reduce_sum(packed).cpu()
        self.count = int(round(packed[0].item()))
        self.sum_D = packed[1 : 1 + self.dim].clone()
        self.outer_DD = packed[1 + self.dim :].reshape(self.dim, self.dim).clone()
        return self

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased covariance (ddof=1, as ``np.cov(feats, rowvar=False)``)."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.count}")
        n = self.count
        mu = (self.sum_D / n).numpy()
        sigma = (self.outer_DD.numpy() - n * np.outer(mu, mu)) / (n - 1)
        sigma = (sigma + sigma.T) / 2  # remove rounding asymmetry
        return mu, sigma

    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            "count": np.asarray(self.count, dtype=np.int64),
            "sum": self.sum_D.numpy(),
            "outer": self.outer_DD.numpy(),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> FrechetStats:
        total = np.asarray(state["sum"], dtype=np.float64)
        stats = cls(total.shape[0])
        stats.count = int(np.asarray(state["count"]))
        stats.sum_D = torch.from_numpy(total.copy())
        stats.outer_DD = torch.from_numpy(np.asarray(state["outer"], dtype=np.float64).copy())
        return stats

    @classmethod
    def from_features(cls, feats_ND) -> FrechetStats:
        feats = torch.as_tensor(np.asarray(feats_ND))
        stats = cls(feats.shape[1])
        stats.update(feats)
        return stats


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)), with scipy's sqrtm as in clean-fid."""
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        # a nearly singular product (few samples, many dims): regularise the diagonal, as clean-fid does
        log.warning("Fréchet distance: singular covariance product; adding %g to the diagonals", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        # hartkit's relative imaginary-part rule (module docstring): clean-fid's absolute 1e-3 scaled by the
        # matrix's diagonal, since features of larger norm carry proportionally larger round-off
        tol = 1e-3 * max(1.0, float(np.abs(np.diagonal(covmean).real).max()))
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=tol):
            raise ValueError(f"Fréchet distance: sqrtm has a large imaginary part ({np.max(np.abs(covmean.imag)):.3g})")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def compute_fd(stats_a: FrechetStats, stats_b: FrechetStats) -> float:
    mu_a, sigma_a = stats_a.mean_cov()
    mu_b, sigma_b = stats_b.mean_cov()
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


# ----------------------------------------------------------------------------------------------
# cached reference statistics


def stats_cache_path(cache_dir: str | os.PathLike, key: str) -> Path:
    """File of one reference set's statistics; the name carries a readable prefix and the key's hash."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)[:80]
    return Path(cache_dir) / f"{readable}-{digest}.npz"


def save_stats(path: str | os.PathLike, stats: FrechetStats, key: str) -> Path:
    """Write statistics atomically (a killed run never leaves a half-written cache file)."""
    state = stats.state_dict()

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file handle: np.savez would append ".npz" to a name
            np.savez(fh, key=np.asarray(key), **state)

    return atomic_write(path, _write)


def load_stats(path: str | os.PathLike, key: str | None = None) -> FrechetStats | None:
    """Statistics cached under ``path``; None when absent, unreadable or cached for another key."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            if key is not None and str(data["key"]) != key:
                log.warning("stats cache %s belongs to another protocol; recomputing", path)
                return None
            return FrechetStats.from_state_dict({k: data[k] for k in ("count", "sum", "outer")})
    except (OSError, ValueError, KeyError) as exc:
        log.warning("stats cache %s is unreadable (%s); recomputing", path, exc)
        return None


def cached_reference_stats(cache_dir: str | os.PathLike, key: str, compute_fn) -> tuple[FrechetStats, bool]:
    """Load the statistics cached for ``key`` or compute them with ``compute_fn()`` and cache them.

    Returns (stats, loaded_from_cache). Only rank 0 writes the cache file.
    """
    path = stats_cache_path(cache_dir, key)
    cached = load_stats(path, key)
    if cached is not None:
        log.info("reference statistics from cache %s (%d images)", path, cached.count)
        return cached, True
    stats = compute_fn()
    if is_main():
        save_stats(path, stats, key)
        log.info("cached reference statistics of %d images at %s", stats.count, path)
    return stats, False
