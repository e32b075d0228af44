"""Reconstruction metrics over a stream of (original, reconstruction) batches.

- PSNR: the mean over images of each image's PSNR (data range 1, on float
  images clamped to [0, 1]). Tokenizer papers report the per-image mean; the
  aggregate form (PSNR of the pooled MSE) is dominated by the worst images and
  is what torchmetrics computes by default, so hartkit asks torchmetrics for
  per-image values (``dim=(1, 2, 3)``) and averages them.
- SSIM: torchmetrics' SSIM (Gaussian 11x11, sigma 1.5), per image, averaged.
- rFD / rFID: Fréchet distance between the features of the reconstructions and
  of the originals of the same split, in every space of ``eval.fd_features``:
  ``rfd_embedded`` (default, offline), ``rfid`` (Inception-v3 via clean-fid),
  ``rfd_clip``. Statistics are float64 sums, so shards merge exactly.
- rKID (``rkid_embedded``, ``rkid``, ...): unbiased KID of the same features
  for paired sets (``hartkit.eval.intervals.PairedKID``: the pairs of an image
  with its own reconstruction are left out), better behaved than FD at small n.
- ``intervals()``: 95% bootstrap intervals over images of every number above
  (per-image values and features are kept; only the resampling repeats).

Callers (the recon_eval stage) use ``update``, ``compute``, ``intervals`` and
``protocol_fields``; ``features_of`` lets several scorers of the same originals
(a tokenizer and its baselines) share the originals' features.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from hartkit.eval.features import build_feature_extractor
from hartkit.eval.frechet import FrechetStats, compute_fd
from hartkit.eval.generation import IMPLEMENTATION as FD_IMPLEMENTATION
from hartkit.eval.generation import combined_hash, gather_rows, kid_name
from hartkit.eval.intervals import (
    DEFAULT_FD_RESAMPLES,
    DEFAULT_RESAMPLES,
    FrechetBootstrap,
    PairedKID,
    bootstrap_mean,
)

log = logging.getLogger(__name__)


def recon_metric_name(fd_name: str) -> str:
    """fid -> rfid, fd_embedded -> rfd_embedded."""
    return "r" + fd_name




class ReconstructionMetrics:
    """PSNR, SSIM and rFD/rFID on images in [0, 1], shape (B, 3, H, W)."""

    def __init__(self, eval_cfg=None, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        fd_names = [] if eval_cfg is None else list(_get(eval_cfg, "fd_features", []) or [])
        self.extractors = {n: build_feature_extractor(n, eval_cfg, self.device) for n in fd_names}
        self.orig_stats = {n: FrechetStats(e.dim) for n, e in self.extractors.items()}
        self.recon_stats = {n: FrechetStats(e.dim) for n, e in self.extractors.items()}
        self.orig_feats: dict[str, list[torch.Tensor]] = {n: [] for n in self.extractors}
        self.recon_feats: dict[str, list[torch.Tensor]] = {n: [] for n in self.extractors}
        self.psnr_values: list[torch.Tensor] = []
        self.ssim_values: list[torch.Tensor] = []
        self.count = 0

    @torch.no_grad()
    def features_of(self, images_B3HW_01: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features of images in every configured space (to share the originals' between scorers)."""
        x = images_B3HW_01.to(self.device, torch.float32).clamp(0, 1)
        return {name: extractor(x) for name, extractor in self.extractors.items()}

    @torch.no_grad()
    def update(self, originals: torch.Tensor, reconstructions: torch.Tensor,
               original_features: dict[str, torch.Tensor] | None = None) -> None:
        if originals.shape != reconstructions.shape:
            raise ValueError(f"originals {tuple(originals.shape)} and reconstructions {tuple(reconstructions.shape)} differ")
        if not torch.isfinite(reconstructions).all():
            raise ValueError("reconstructions contain NaN/Inf: the tokenizer diverged or was loaded wrongly")
        x = originals.to(self.device, torch.float32).clamp(0, 1)
        y = reconstructions.to(self.device, torch.float32).clamp(0, 1)
        self.psnr_values.append(peak_signal_noise_ratio(y, x, data_range=1.0, reduction="none", dim=(1, 2, 3))
                                .reshape(-1).double().cpu())
        self.ssim_values.append(structural_similarity_index_measure(y, x, data_range=1.0, reduction="none")
                                .reshape(-1).double().cpu())
        orig = original_features or self.features_of(x)
        for name, extractor in self.extractors.items():
            f_orig, f_recon = orig[name], extractor(y)
            self.orig_stats[name].update(f_orig)
            self.recon_stats[name].update(f_recon)
            self.orig_feats[name].append(f_orig.float().cpu())
            self.recon_feats[name].append(f_recon.float().cpu())
        self.count += x.shape[0]

    def _gathered(self) -> dict:
        """Per-image values and features of every rank, in rank order (this process's alone without torchrun)."""
        cat = lambda parts: torch.cat(parts) if parts else torch.zeros(0)  # noqa: E731
        out = {"psnr": gather_rows(cat(self.psnr_values)), "ssim": gather_rows(cat(self.ssim_values))}
        for name in self.extractors:
            out[f"orig/{name}"] = gather_rows(cat(self.orig_feats[name]))
            out[f"recon/{name}"] = gather_rows(cat(self.recon_feats[name]))
        return out

    def compute(self) -> dict[str, float]:
        values = self._gathered()
        if values["psnr"].numel() == 0:
            raise ValueError("no images were scored")
        metrics = {"psnr": float(values["psnr"].mean()), "ssim": float(values["ssim"].mean())}
        for name in self.extractors:
            orig = self.orig_stats[name].all_reduce()
            recon = self.recon_stats[name].all_reduce()
            if orig.count < 2:
                log.warning("%s needs at least 2 images, got %d; skipped", recon_metric_name(name), orig.count)
                continue
            metrics[recon_metric_name(name)] = compute_fd(recon, orig)
            metrics["r" + kid_name(name)] = PairedKID(values[f"orig/{name}"].numpy(), values[f"recon/{name}"].numpy()).value()
        return metrics

    def intervals(self, resamples: int = DEFAULT_RESAMPLES, fd_resamples: int = DEFAULT_FD_RESAMPLES,
                  seed: int = 0) -> dict[str, list[float]]:
        """95% percentile-bootstrap intervals over images: {metric: [low, high]}."""
        values = self._gathered()
        out = {k: list(bootstrap_mean(values[k].numpy(), resamples, seed)) for k in ("psnr", "ssim")}
        for name in self.extractors:
            orig, recon = values[f"orig/{name}"].numpy(), values[f"recon/{name}"].numpy()
            if len(orig) < 2:
                continue
            if fd_resamples > 0:
                out[recon_metric_name(name)] = list(FrechetBootstrap(orig).interval(recon, fd_resamples, seed))
            out["r" + kid_name(name)] = list(PairedKID(orig, recon).interval(resamples, seed))
        return {k: [float(a), float(b)] for k, (a, b) in out.items() if np.isfinite([a, b]).all()}

    def protocol_fields(self) -> dict:
        """Facts about how the numbers were measured, merged into the record's Protocol."""
        impl = "torchmetrics PSNR (mean of per-image, data_range 1) / SSIM (mean of per-image, 11x11 Gaussian)"
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
