"""Reconstruction metrics over a stream of (original, reconstruction) batches.

Callers (the recon_eval stage) only use ``update`` and ``compute``; new metrics
(rFID / rFD) plug in here without changing them.
"""

from __future__ import annotations

import torch
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure


class ReconstructionMetrics:
    """PSNR and SSIM (torchmetrics) on images in [0, 1], shape (B, 3, H, W)."""

    def __init__(self, eval_cfg=None, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.psnr = PeakSignalNoiseRatio(data_range=1.0).to(self.device)
        self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0).to(self.device)
        self.count = 0

    @torch.no_grad()
    def update(self, originals: torch.Tensor, reconstructions: torch.Tensor) -> None:
        if originals.shape != reconstructions.shape:
            raise ValueError(f"originals {tuple(originals.shape)} and reconstructions {tuple(reconstructions.shape)} differ")
        x = originals.to(self.device, torch.float32).clamp(0, 1)
        y = reconstructions.to(self.device, torch.float32).clamp(0, 1)
        self.psnr.update(y, x)
        self.ssim.update(y, x)
        self.count += x.shape[0]

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no images were scored")
        return {"psnr": float(self.psnr.compute()), "ssim": float(self.ssim.compute())}

    def protocol_fields(self) -> dict:
        """Facts about how the numbers were measured, merged into the record's Protocol."""
        return {"implementation": "torchmetrics PSNR/SSIM (data_range 1)"}
