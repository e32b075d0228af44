"""Multi-scale residual decomposition of a latent: VAR's quantizer and its continuous twin.

The walk (docs/reference.md, section 1), with ``f_rest = f`` and ``f_hat = 0``, for
each scale k of size pn_k (the last scale has the latent's own size):

1. ``z = area_resize(f_rest, pn_k)`` (the last scale uses ``f_rest`` itself);
2. discrete: ``z <- E[nearest_code(z)]``; continuous: ``z`` is kept as it is;
3. ``h = Phi_k(bicubic_resize(z, (h, w)))`` (no resize at the last scale);
4. ``f_hat += h``, ``f_rest -= h``.

Phi at the last scale is a per-tokenizer convention (``phi_on_last_scale``):
VAR applies it; HART's hybrid tokenizer does not (mit-han-lab/hart,
``hart/modules/models/autoencoder/quantize/hart_hybrid_quantize.py``,
``HARTHybridQuantizer.f_to_idxBl_and_frest``: ``if si != SN - 1: h_BChw =
self.quant_resi[...]``; ``get_next_autoregressive_input`` adds the last scale's
codes without Phi). Without Phi the last scale's contribution at a position is
the code's embedding itself, so the continuous residual of a token depends only
on that token's code. (HART's training ``forward`` of the same class does apply
Phi at the last scale; hartkit uses one convention per tokenizer everywhere.)

The module names (``embedding``, ``quant_resi.qresi_ls.{i}``, buffer
``ema_vocab_hit_SV``) match VAR's checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from hartkit.errors import ConfigError
from hartkit.kernels import nearest_code


def area_resize(x_BChw: torch.Tensor, pn: int) -> torch.Tensor:
    return F.interpolate(x_BChw, size=(pn, pn), mode="area")


def bicubic_resize(x_BChw: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    # PyTorch defaults (align_corners=False, no antialias), as VAR does
    return F.interpolate(x_BChw, size=hw, mode="bicubic", align_corners=False)


def phi_ticks(num_phi: int) -> np.ndarray:
    """Positions in [0, 1] of the shared Phi convs (VAR's formula; 4 Phis use 1/(3K) margins)."""
    margin = 1.0 / (3 * num_phi) if num_phi == 4 else 1.0 / (2 * num_phi)
    return np.linspace(margin, 1.0 - margin, num_phi)


def phi_index_map(num_scales: int, num_phi: int) -> list[int]:
    """Which Phi each scale uses.

    num_phi 0: one Phi per scale; 1: one shared Phi; K > 1: scale k uses the Phi
    whose tick is nearest to k / (num_scales - 1). Computed in float64 like VAR:
    the default 10 scales have exact ties (scales 2 and 7) that float32 breaks
    the other way, which would silently mismatch VAR's checkpoint.
    """
    if num_phi < 0:
        raise ConfigError(f"num_phi must be >= 0, got {num_phi}")
    if num_phi == 0:
        return list(range(num_scales))
    if num_phi == 1 or num_scales == 1:
        return [0] * num_scales
    ticks = phi_ticks(num_phi)
    return [int(np.argmin(np.abs(ticks - k / (num_scales - 1)))) for k in range(num_scales)]


class Phi(nn.Conv2d):
    """``(1 - r) * h + r * conv3x3(h)``: the residual refinement applied after up-sampling a scale."""

    def __init__(self, channels: int, ratio: float):
        super().__init__(channels, channels, 3, padding=1)
        self.ratio = ratio

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * (1.0 - self.ratio) + super().forward(h) * self.ratio


class PhiBank(nn.Module):
    """The list of Phi convs (``qresi_ls``) and the scale -> Phi map."""

    def __init__(self, channels: int, num_scales: int, num_phi: int, ratio: float):
        super().__init__()
        self.scale_to_phi = phi_index_map(num_scales, num_phi)
        n = num_scales if num_phi == 0 else num_phi
        self.qresi_ls = nn.ModuleList([Phi(channels, ratio) for _ in range(n)])

    def forward(self, h: torch.Tensor, k: int) -> torch.Tensor:
        return self.qresi_ls[self.scale_to_phi[k]](h)


@dataclass
class WalkOutput:
    """Result of one multi-scale walk over a latent f."""

    f_hat: torch.Tensor  # (B, C, h, w) sum of all scales (discrete: straight-through in training)
    indices: list[torch.Tensor] | None = None  # per scale (B, pn*pn)
    scales: list[torch.Tensor] | None = None  # continuous: per scale (B, C, pn, pn)
    vq_loss: torch.Tensor | None = None
    stats: dict[str, float] = field(default_factory=dict)


class ScaleWalk:
    """The scale walk every multi-scale quantizer shares (VAR's and the plug-ins in ``tokenizers/quantizers``):
    upsampling + Phi of a scale, encoding to indices, and indices back to ``f_hat``. A quantizer using it has
    ``patch_nums``, ``channels``, ``phi_on_last_scale``, ``quant_resi`` (a PhiBank) and defines
    ``scale_indices(z_NC, k)`` (the codes of scale k's vectors) and ``embed_scale(idx_Bl, k)``."""

    def upsample_scale(self, h_BCpp: torch.Tensor, k: int, hw: tuple[int, int]) -> torch.Tensor:
        """Bring scale k's map to the latent size and apply its Phi (what ``f_hat`` receives)."""
        last = k == len(self.patch_nums) - 1
        if not last:
            h_BCpp = bicubic_resize(h_BCpp, hw)
        if last and not self.phi_on_last_scale:
            return h_BCpp
        return self.quant_resi(h_BCpp, k)

    @torch.no_grad()
    def encode_indices(self, f_BChw: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-scale indices and the (non-STE) f_hat of the discrete scales."""
        indices, f_hat, _ = self.encode_walk(f_BChw)
        return indices, f_hat

    @torch.no_grad()
    def encode_walk(self, f_BChw: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Per-scale indices, the (non-STE) f_hat of the discrete scales, and ``f_rest`` just before the
        last scale's code is subtracted (HART's ``f_rest_wo_last_discrete`` in
        ``HARTHybridQuantizer.f_to_idxBl_and_frest``: the target its residual diffusion starts from)."""
        with torch.autocast(device_type=f_BChw.device.type, enabled=False):
            f_rest = f_BChw.float().clone()
            B, C, H, W = f_rest.shape
            f_hat = torch.zeros_like(f_rest)
            K = len(self.patch_nums)
            indices = []
            rest_before_last = f_rest
            for k, pn in enumerate(self.patch_nums):
                if k == K - 1:
                    rest_before_last = f_rest.clone()
                z_BCpp = f_rest if k == K - 1 else area_resize(f_rest, pn)
                idx_Bl = self.scale_indices(z_BCpp.permute(0, 2, 3, 1).reshape(-1, C), k).view(B, pn * pn)
                h = self.upsample_scale(self.embed_scale(idx_Bl, k), k, (H, W))
                f_hat += h
                f_rest -= h
                indices.append(idx_Bl)
            return indices, f_hat, rest_before_last

    def indices_to_f_hat(self, indices: list[torch.Tensor], hw: tuple[int, int]) -> torch.Tensor:
        B = indices[0].shape[0]
        f_hat = torch.zeros(B, self.channels, *hw, device=indices[0].device)
        for k, idx_Bl in enumerate(indices):
            f_hat = f_hat + self.upsample_scale(self.embed_scale(idx_Bl, k), k, hw)
        return f_hat


class MultiScaleQuantizer(ScaleWalk, nn.Module):
    """VAR's multi-scale residual vector quantizer with one codebook shared by all scales."""

    def __init__(self, vocab_size: int, channels: int, patch_nums, num_phi: int = 4, phi_ratio: float = 0.5,
                 using_znorm: bool = False, beta: float = 0.25, phi_on_last_scale: bool = True, chunk_size: int = 4096):
        super().__init__()
        self.vocab_size = vocab_size
        self.channels = channels
        self.patch_nums = tuple(int(p) for p in patch_nums)
        self.using_znorm = using_znorm
        self.beta = beta
        self.phi_on_last_scale = phi_on_last_scale
        self.chunk_size = chunk_size
        self.embedding = nn.Embedding(vocab_size, channels)
        nn.init.uniform_(self.embedding.weight, -1.0 / vocab_size, 1.0 / vocab_size)
        self.quant_resi = PhiBank(channels, len(self.patch_nums), num_phi, phi_ratio)
        # running (EMA) count of code hits per scale, as VAR keeps it; drives dead-code re-initialisation
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.patch_nums), vocab_size))
        self._hit_updates = 0
        self.last_rest_NC: torch.Tensor | None = None  # residual vectors of the last training batch

    # --- one scale --------------------------------------------------------------------------
    def lookup(self, z_NC: torch.Tensor) -> torch.Tensor:
        """Nearest code per row, in float32 with autocast off (ties: lowest index)."""
        with torch.autocast(device_type=z_NC.device.type, enabled=False):
            return nearest_code(z_NC.float(), self.embedding.weight.float(), cosine=self.using_znorm,
                                chunk=self.chunk_size)

    def scale_indices(self, z_NC: torch.Tensor, k: int) -> torch.Tensor:
        return self.lookup(z_NC)  # one codebook for every scale

    def embed_scale(self, idx_Bl: torch.Tensor, k: int) -> torch.Tensor:
        pn = self.patch_nums[k]
        B = idx_Bl.shape[0]
        return self.embedding(idx_Bl).view(B, pn, pn, self.channels).permute(0, 3, 1, 2)

    # --- the walk ---------------------------------------------------------------------------
    def forward(self, f_BChw: torch.Tensor) -> WalkOutput:
        """Quantize every scale; straight-through f_hat, the VQ loss and usage statistics."""
        with torch.autocast(device_type=f_BChw.device.type, enabled=False):
            f = f_BChw.float()
            B, C, H, W = f.shape
            f_nograd = f.detach()
            f_rest = f_nograd.clone()
            f_hat = torch.zeros_like(f)
            K = len(self.patch_nums)
            vq_loss = f.new_zeros(())
            indices, hits, rests = [], [], []
            for k, pn in enumerate(self.patch_nums):
                z_BCpp = f_rest if k == K - 1 else area_resize(f_rest, pn)
                z_NC = z_BCpp.permute(0, 2, 3, 1).reshape(-1, C)
                idx_N = self.lookup(z_NC)
                rests.append(z_NC)
                hits.append(torch.bincount(idx_N, minlength=self.vocab_size).float())
                idx_Bl = idx_N.view(B, pn * pn)
                h = self.upsample_scale(self.embed_scale(idx_Bl, k), k, (H, W))
                f_hat = f_hat + h
                f_rest = f_rest - h.detach()
                indices.append(idx_Bl)
                # codebook learns from the second term, the encoder commits through the first
                vq_loss = vq_loss + self.beta * F.mse_loss(f_hat.detach(), f) + F.mse_loss(f_hat, f_nograd)
            vq_loss = vq_loss / K
            f_hat_ste = f + (f_hat - f).detach()
            # keep the codebook trainable through the VQ loss only; the decoder sees the STE path
            out = WalkOutput(f_hat=f_hat_ste, indices=indices, vq_loss=vq_loss)
        if self.training:
            self._record_hits(torch.stack(hits))
            self.last_rest_NC = torch.cat(rests).detach()
        out.stats = usage_stats(torch.stack(hits))
        return out

    @torch.no_grad()
    def _record_hits(self, hit_SV: torch.Tensor) -> None:
        if self._hit_updates == 0:
            self.ema_vocab_hit_SV.copy_(hit_SV)
        else:
            decay = 0.9 if self._hit_updates < 100 else 0.99
            self.ema_vocab_hit_SV.mul_(decay).add_(hit_SV, alpha=1 - decay)
        self._hit_updates += 1


    @torch.no_grad()
    def reinit_dead_codes(self, threshold: float = 1e-3, generator: torch.Generator | None = None) -> int:
        """Replace codes nobody used lately by residual vectors of the last batch; returns how many.

        Without it a small codebook trained from scratch collapses (about 45% of
        1024 codes used, docs/reference.md section 7).
        """
        if self.last_rest_NC is None or self._hit_updates == 0:
            return 0
        dead = self.ema_vocab_hit_SV.sum(0) < threshold
        n_dead = int(dead.sum())
        if n_dead == 0:
            return 0
        pool = self.last_rest_NC.to(self.embedding.weight.device)
        pick = torch.randint(0, pool.shape[0], (n_dead,), generator=generator, device="cpu").to(pool.device)
        noise = torch.randn(n_dead, self.channels, generator=generator, device="cpu").to(pool.device)
        new = pool[pick] + 0.01 * pool.std() * noise
        self.embedding.weight.data[dead] = new.to(self.embedding.weight.dtype)
        # count the new codes as alive for a while so they get a chance to be picked
        self.ema_vocab_hit_SV[:, dead] = 2 * threshold
        return n_dead


class ContinuousScaleWalk(nn.Module):
    """The same scale walk without a codebook and without Phi: each scale keeps its area-resized map.

    Because the last scale takes the whole remaining ``f_rest`` at full size,
    the scales sum back to ``f`` exactly: the decomposition loses nothing, and
    the continuous AR head predicts each scale's map.
    """

    def __init__(self, channels: int, patch_nums):
        super().__init__()
        self.channels = channels
        self.patch_nums = tuple(int(p) for p in patch_nums)

    def upsample_scale(self, z_BCpp: torch.Tensor, k: int, hw: tuple[int, int]) -> torch.Tensor:
        return z_BCpp if k == len(self.patch_nums) - 1 else bicubic_resize(z_BCpp, hw)

    def forward(self, f_BChw: torch.Tensor) -> WalkOutput:
        H, W = f_BChw.shape[-2:]
        f_rest = f_BChw
        f_hat = torch.zeros_like(f_BChw)
        scales = []
        for k, pn in enumerate(self.patch_nums):
            z = f_rest if k == len(self.patch_nums) - 1 else area_resize(f_rest, pn)
            h = self.upsample_scale(z, k, (H, W))
            f_hat = f_hat + h
            f_rest = f_rest - h
            scales.append(z)
        return WalkOutput(f_hat=f_hat, scales=scales)

    def scales_to_f_hat(self, scales: list[torch.Tensor], hw: tuple[int, int]) -> torch.Tensor:
        f_hat = torch.zeros(scales[0].shape[0], self.channels, *hw, device=scales[0].device, dtype=scales[0].dtype)
        for k, z in enumerate(scales):
            f_hat = f_hat + self.upsample_scale(z, k, hw)
        return f_hat


def usage_stats(hit_SV: torch.Tensor) -> dict[str, float]:
    """Codebook usage (fraction of codes hit) and perplexity, overall and per scale, from hit counts."""
    stats = {}
    total = hit_SV.sum(0)
    stats["codebook_usage"] = float((total > 0).float().mean())
    stats["perplexity"] = perplexity(total)
    for k in range(hit_SV.shape[0]):
        stats[f"codebook_usage/scale_{k}"] = float((hit_SV[k] > 0).float().mean())
        stats[f"perplexity/scale_{k}"] = perplexity(hit_SV[k])
    return stats


def perplexity(counts_V: torch.Tensor) -> float:
    """exp(entropy) of the code distribution (1: one code, V: uniform)."""
    n = counts_V.sum()
    if n <= 0:
        return 0.0
    p = counts_V.double() / n
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))
