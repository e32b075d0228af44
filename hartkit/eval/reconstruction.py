"""Reconstruction metrics over a stream of (original, reconstruction) batches.

- PSNR: the mean over images of each image's PSNR (data range 1, on float
  images clamped to [0, 1]). Tokenizer papers report the per-image mean; the
  aggregate form (PSNR of the pooled MSE) is dominated by the worst images and
  is what torchmetrics computes by default, so hartkit asks torchmetrics for
  per-image values (``dim=(1, 2, 3)``) and averages them.
- SSIM: torchmetrics' mean SSIM (Gaussian 11x11, sigma 1.5).
- rFD / rFID: Fréchet distance between the features of the reconstructions and
  of the originals of the same split, in every space of ``eval.fd_features``:
  ``rfd_embedded`` (default, offline), ``rfid`` (Inception-v3 via clean-fid),
  ``rfd_clip``. Statistics are float64 sums, so shards merge exactly.

Callers (the recon_eval stage) only use ``update``, ``compute`` and
``protocol_fields``.
"""

from __future__ import annotations

import logging

import torch
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from hartkit.eval.features import build_feature_extractor
from hartkit.eval.frechet import FrechetStats, compute_fd
from hartkit.eval.generation import IMPLEMENTATION as FD_IMPLEMENTATION
from hartkit.eval.generation import combined_hash

log = logging.getLogger(__name__)


def recon_metric_name(fd_name: str) -> str:
    """fid -> rfid, fd_embedded -> rfd_embedded."""
    return "r" + fd_name


class ReconstructionMetrics:
    """PSNR, SSIM and rFD/rFID on images in [0, 1], shape (B, 3, H, W)."""

    def __init__(self, eval_cfg=None, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.psnr = PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3)).to(self.device)
        self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0).to(self.device)
        fd_names = [] if eval_cfg is None else list(_get(eval_cfg, "fd_features", []) or [])
        self.extractors = {n: build_feature_extractor(n, eval_cfg, self.device) for n in fd_names}
        self.orig_stats = {n: FrechetStats(e.dim) for n, e in self.extractors.items()}
        self.recon_stats = {n: FrechetStats(e.dim) for n, e in self.extractors.items()}
        self.count = 0

    @torch.no_grad()
    def update(self, originals: torch.Tensor, reconstructions: torch.Tensor) -> None:
        if originals.shape != reconstructions.shape:
            raise ValueError(f"originals {tuple(originals.shape)} and reconstructions {tuple(reconstructions.shape)} differ")
        if not torch.isfinite(reconstructions).all():
            raise ValueError("reconstructions contain NaN/Inf: the tokenizer diverged or was loaded wrongly")
        x = originals.to(self.device, torch.float32).clamp(0, 1)
        y = reconstructions.to(self.device, torch.float32).clamp(0, 1)
        self.psnr.update(y, x)
        self.ssim.update(y, x)
        for name, extractor in self.extractors.items():
            self.orig_stats[name].update(extractor(x))
            self.recon_stats[name].update(extractor(y))
        self.count += x.shape[0]

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no images were scored")
        metrics = {"psnr": float(self.psnr.compute()), "ssim": float(self.ssim.compute())}
        for name in self.extractors:
            orig = self.orig_stats[name].all_reduce()
            recon = self.recon_stats[name].all_reduce()
            if orig.count < 2:
                log.warning("%s needs at least 2 images, got %d; skipped", recon_metric_name(name), orig.count)
                continue
            metrics[recon_metric_name(name)] = compute_fd(recon, orig)
        return metrics

    def protocol_fields(self) -> dict:
        """Facts about how the numbers were measured, merged into the record's Protocol."""
        impl = "torchmetrics PSNR (mean of per-image, data_range 1) / SSIM"
        if not self.extractors:
            return {"implementation": impl}
        return {
            "feature_extractor": ", ".join(f"{recon_metric_name(n)}={e.model_name}" for n, e in self.extractors.items()),
            "extractor_hash": combined_hash([e.weights_hash for e in self.extractors.values()]),
            "implementation": f"{impl}; {FD_IMPLEMENTATION}",
            "extra": {recon_metric_name(n): f"{e.model_name}@{(e.weights_hash or '?')[:12]}; {e.resize}"
                      for n, e in self.extractors.items()},
        }


def _get(cfg, key, default=None):
    if hasattr(cfg, "get"):
        return cfg.get(key, default)
    return getattr(cfg, key, default)
