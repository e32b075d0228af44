"""VAR's scale walk with a fixed code function instead of a learned nearest-neighbour codebook (FSQ, LFQ, BSQ).

For each scale k of size pn_k, with ``f_rest = f`` and ``f_hat = 0`` (the walk of
``hartkit/tokenizers/quantizer.py``, docs/reference.md section 1):

1. ``z = area_resize(f_rest, pn_k)`` (the last scale uses ``f_rest`` itself);
2. ``u = project_in(z) / g_k``: a linear map of each C-channel vector to the
   d dimensions the code function works in (identity when C == d), divided by
   the scale's gain ``g_k = exp(log_gain[k])``;
3. ``c, idx = code(u)``: the quantizer's own function (FSQ: bounded rounding;
   LFQ: signs; BSQ: signs on the unit sphere) and the integer index of c
   among the ``vocab_size`` codes;
4. ``e = g_k * project_out(c)``; ``h = Phi_k(bicubic_resize(e))`` (no resize at
   the last scale; ``phi_on_last_scale`` as in VAR / HART);
5. ``f_hat += h``, ``f_rest -= h``.

Design choices (hartkit's, not from the papers, which quantize one scale):

- **VAR's Phi convs are kept.** The rows of the comparison then differ from
  VAR's only in how a scale's map becomes a code and back; the last-scale
  convention (``phi_on_last_scale``: discrete true, hybrid false) is the same,
  so a hybrid tokenizer's last-scale contribution at a position is
  ``embedding(code)`` itself (what the hybrid generators' residual target uses).
  ``phi_ratio: 0`` turns every Phi into the identity.
- **One learned gain per scale** (``log_gain``, initialised to 0). The
  projections and the code function are shared by all scales (one "codebook",
  as in VAR), but residuals shrink from scale to scale; a fixed grid (FSQ) or
  codes of fixed norm (BSQ) cannot follow that without a per-scale
  magnitude. Residual FSQ / LFQ in vector-quantize-pytorch fix these factors
  per layer instead (``(L - 1)^-k``, ``2^-k``).
- **Gradients:** each scale's code carries a straight-through gradient, the
  residual handed to the next scale is detached (residual VQ's convention) and
  the decoder sees the walk's ``f_hat`` itself, so the encoder, the
  projections, the gains and Phi all learn from the reconstruction. The loss
  adds VAR's latent VQ loss (``beta * mse(sg[f_hat], f) + mse(f_hat_q, sg[f])``
  per scale, averaged: it keeps the discrete sum close to the latent, which the
  hybrid kind needs on the steps it decodes ``f``) and the quantizer's own
  code-space loss (LFQ / BSQ: entropy and commitment), averaged over scales.
  As in VAR, the encoder commits through the first term only: ``f_hat_q`` is
  the same sum built from the exact codes (no straight-through path), so the
  second term trains the projections, gains and Phi, not the encoder. Through
  the straight-through codes it would push ``f`` *away* from ``f_hat`` (the
  codes do not move with ``f``; the gradient says they do) with more weight
  than ``beta`` pulls it back: with LFQ's unbounded code inputs the latent then
  grew without limit (loss 1e6 within 150 steps; results/research_log.md).
- Nothing to re-initialise: the codes are fixed, so ``dead_code_reinit`` must
  be false.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from hartkit.errors import ConfigError
from hartkit.tokenizers.config import QuantizerConfig
from hartkit.tokenizers.quantizer import (
    PhiBank,
    ScaleWalk,
    WalkOutput,
    area_resize,
    usage_stats,
)


def parse_options(schema: type, cfg: Any) -> Any:
    """A schema instance from a quantizer config (dict / DictConfig); missing keys take the schema's defaults."""
    cfg = dict(cfg)
    names = {f.name for f in dataclasses.fields(schema)}
    unknown = sorted(set(cfg) - names)
    if unknown:
        raise ConfigError(f"tokenizer.quantizer has keys {unknown} that a {schema.__name__} does not know; "
                          f"known: {sorted(names)}")
    return schema(**cfg)


def power_of_two_bits(vocab_size: int, qtype: str) -> int:
    """log2 of a binary quantizer's vocabulary (LFQ / BSQ: 2^bits codes)."""
    bits = int(vocab_size).bit_length() - 1
    if vocab_size < 2 or 2**bits != vocab_size:
        raise ConfigError(f"tokenizer.quantizer.vocab_size={vocab_size} must be a power of two for {qtype} "
                          f"(2^bits codes), e.g. 1024 or 4096")
    return bits


@dataclass
class EntropyQuantizerConfig(QuantizerConfig):
    """Keys of the quantizers with MAGVIT-v2's entropy loss (LFQ, BSQ)."""

    type: str = "entropy"
    dead_code_reinit: bool = False
    # loss = entropy_weight * (sample_entropy_weight * E[H(p(.|u))] - batch_entropy_weight * H(E[p(.|u)]))
    #        + commit_weight * mse(u, sg[code]),  p(c|u) = softmax_c(-||u - c||^2 / entropy_temperature)
    entropy_weight: float = 0.1
    sample_entropy_weight: float = 1.0
    batch_entropy_weight: float = 1.0  # MAGVIT-v2's gamma ("diversity_gamma" in vector-quantize-pytorch)
    entropy_temperature: float = 0.01  # vector-quantize-pytorch's inv_temperature 100
    commit_weight: float = 0.25


def batch_entropy_from_log_probs(log_p_NV: torch.Tensor) -> torch.Tensor:
    """H of the batch-averaged distribution, from per-sample log-probabilities (stable: logsumexp, no log 0)."""
    log_mean_V = torch.logsumexp(log_p_NV, dim=0) - math.log(log_p_NV.shape[0])
    return -(log_mean_V.exp() * log_mean_V).sum()


def sample_entropy_from_log_probs(log_p_NV: torch.Tensor) -> torch.Tensor:
    """Mean over samples of H(p(.|u_n))."""
    return -(log_p_NV.exp() * log_p_NV).sum(-1).mean()


class ImplicitScaleQuantizer(ScaleWalk, nn.Module):
    """Base of the quantizers whose codes are a fixed function (no learned codebook); see the module docstring.

    A subclass sets ``config_class`` and defines ``code(u) -> (codes, indices)`` (codes with a straight-through
    gradient in training), ``codes_of(idx)`` (the exact codes of indices), optionally ``code_input(u)`` (BSQ:
    the projection to the unit sphere) and ``code_loss(u, codes) -> (loss, stats)``, and a ``from_config``
    that reads its own keys and calls this ``__init__``.
    """

    config_class: type = QuantizerConfig
    type_name: str = "implicit"

    def __init__(self, channels: int, patch_nums, code_dim: int, vocab_size: int, num_phi: int = 4,
                 phi_ratio: float = 0.5, beta: float = 0.25, phi_on_last_scale: bool = True):
        super().__init__()
        self.channels = int(channels)
        self.patch_nums = tuple(int(p) for p in patch_nums)
        self.code_dim = int(code_dim)
        self.vocab_size = int(vocab_size)
        self.beta = float(beta)
        self.phi_on_last_scale = bool(phi_on_last_scale)
        projections = self.channels != self.code_dim
        self.project_in = nn.Linear(self.channels, self.code_dim) if projections else nn.Identity()
        self.project_out = nn.Linear(self.code_dim, self.channels) if projections else nn.Identity()
        self.log_gain = nn.Parameter(torch.zeros(len(self.patch_nums)))
        self.quant_resi = PhiBank(self.channels, len(self.patch_nums), num_phi, phi_ratio)
        self._hit_updates = 0  # the trainer saves it with VAR's quantizer; nothing is counted here

    @staticmethod
    def walk_kwargs(opts: Any, phi_on_last_scale: bool) -> dict[str, Any]:
        """The keys of the shared walk, from a parsed config; refuses VAR-only settings that cannot work."""
        if opts.dead_code_reinit:
            raise ConfigError(f"tokenizer.quantizer.type={opts.type} has a fixed code set (no learned codebook "
                              f"to re-initialise): set tokenizer.quantizer.dead_code_reinit=false")
        if opts.using_znorm:
            raise ConfigError(f"tokenizer.quantizer.using_znorm (VAR's cosine look-up) does not apply to "
                              f"type={opts.type}: set it to false")
        return dict(num_phi=opts.num_phi, phi_ratio=opts.phi_ratio, beta=opts.beta,
                    phi_on_last_scale=phi_on_last_scale)

    # --- what a quantizer defines ------------------------------------------------------------
    def code_input(self, u_Nd: torch.Tensor) -> torch.Tensor:
        return u_Nd

    def code(self, v_Nd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def codes_of(self, idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def code_loss(self, v_Nd: torch.Tensor, codes_Nd: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return v_Nd.new_zeros(()), {}

    # --- one scale ----------------------------------------------------------------------------
    def gain(self, k: int) -> torch.Tensor:
        return self.log_gain[k].exp()

    def scale_input(self, z_NC: torch.Tensor, k: int) -> torch.Tensor:
        """What the code function sees of scale k's vectors."""
        return self.code_input(self.project_in(z_NC) / self.gain(k))

    def code_to_latent(self, codes: torch.Tensor, k: int) -> torch.Tensor:
        """(..., d) codes -> (..., C) contribution of scale k at a position (before resize and Phi)."""
        return self.gain(k) * self.project_out(codes)

    def embed_scale(self, idx_Bl: torch.Tensor, k: int) -> torch.Tensor:
        pn = self.patch_nums[k]
        B = idx_Bl.shape[0]
        return self.code_to_latent(self.codes_of(idx_Bl), k).view(B, pn, pn, self.channels).permute(0, 3, 1, 2)

    def embedding(self, idx: torch.Tensor) -> torch.Tensor:
        """(..., C): the last scale's contribution of each code (the tokenizer's ``code_embedding``)."""
        return self.code_to_latent(self.codes_of(idx), len(self.patch_nums) - 1)

    def scale_indices(self, z_NC: torch.Tensor, k: int) -> torch.Tensor:
        return self.code(self.scale_input(z_NC, k))[1]

    # --- the walk -----------------------------------------------------------------------------
    def forward(self, f_BChw: torch.Tensor) -> WalkOutput:
        """Training walk: f_hat with straight-through codes, the VQ + code losses and usage statistics."""
        with torch.autocast(device_type=f_BChw.device.type, enabled=False):
            f = f_BChw.float()
            B, C, H, W = f.shape
            K = len(self.patch_nums)
            f_rest = f
            f_hat = torch.zeros_like(f)
            f_hat_q = torch.zeros_like(f)
            latent_loss = f.new_zeros(())
            code_loss = f.new_zeros(())
            indices, hits = [], []
            code_stats: dict[str, float] = {}
            for k, pn in enumerate(self.patch_nums):
                z_BCpp = f_rest if k == K - 1 else area_resize(f_rest, pn)
                v = self.scale_input(z_BCpp.permute(0, 2, 3, 1).reshape(-1, C), k)
                codes, idx_N = self.code(v)
                loss_k, stats_k = self.code_loss(v, codes)
                code_loss = code_loss + loss_k
                for name, value in stats_k.items():
                    code_stats[name] = code_stats.get(name, 0.0) + value / K
                h = self.upsample_scale(self.code_to_latent(codes, k).view(B, pn, pn, C).permute(0, 3, 1, 2), k,
                                        (H, W))
                f_hat = f_hat + h
                f_rest = f_rest - h.detach()
                # the same contribution from the exact codes (no straight-through path to the encoder): what
                # VAR's codebook term sees; equal to h in value
                h_q = self.upsample_scale(
                    self.code_to_latent(codes.detach(), k).view(B, pn, pn, C).permute(0, 3, 1, 2), k, (H, W))
                f_hat_q = f_hat_q + h_q
                indices.append(idx_N.view(B, pn * pn))
                hits.append(torch.bincount(idx_N, minlength=self.vocab_size).float())
                # as VAR: the encoder commits through the first term, the code side (projections, gains, Phi)
                # learns from the second
                latent_loss = latent_loss + self.beta * F.mse_loss(f_hat.detach(), f) \
                    + F.mse_loss(f_hat_q, f.detach())
            out = WalkOutput(f_hat=f_hat, indices=indices, vq_loss=(latent_loss + code_loss) / K)
        out.stats = {**usage_stats(torch.stack(hits)), **code_stats}
        return out

    def reinit_dead_codes(self, threshold: float = 1e-3, generator: torch.Generator | None = None) -> int:
        return 0  # fixed codes: nothing to re-initialise

    def extra_repr(self) -> str:
        return f"type={self.type_name}, vocab_size={self.vocab_size}, code_dim={self.code_dim}, " \
               f"patch_nums={self.patch_nums}, phi_on_last_scale={self.phi_on_last_scale}"
