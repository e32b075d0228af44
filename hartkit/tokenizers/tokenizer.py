"""``MultiScaleTokenizer``: one module for the discrete (VAR), continuous and hybrid (HART) tokenizers.

Layout (names as VAR's checkpoint): ``encoder -> quant_conv -> quantize ->
post_quant_conv -> decoder``. The kinds differ only in what ``quantize`` does
with the latent f (docs/design.md, "The spine's value: Tokens"):

- discrete: every scale quantized; ``f_hat`` is the sum of the quantized scales.
- hybrid: the same, plus the continuous residual ``f - f_hat``; decoding with it
  gives back ``decode_latent(f)``. One decoder learns both paths. By default
  no Phi at the last scale (HART), so ``f_hat_{<K} + E[c] + (rest_before_last -
  E[c]) = f`` for *any* last-scale code c: the generator may sample c and still
  have a residual target that decodes to the latent.
- continuous: a KL-regularised latent (the encoder outputs mean and log-variance),
  walked through the same scales without a codebook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from hartkit.errors import ConfigError
from hartkit.tokenizers.autoencoder import Decoder, Encoder
from hartkit.tokenizers.protocol import teacher_forcing_input
from hartkit.tokenizers.quantizer import ContinuousScaleWalk, area_resize
from hartkit.tokenizers.quantizers import build_quantizer
from hartkit.tokenizers.tokens import KINDS, Tokens


def resolve_phi_on_last_scale(kind: str, value: bool | None) -> bool:
    """``tokenizer.quantizer.phi_on_last_scale``; None picks the published convention of the kind:
    discrete true (VAR), hybrid false (HART, ``HARTHybridQuantizer.f_to_idxBl_and_frest``)."""
    if value is None:
        return kind != "hybrid"
    return bool(value)


class ImageSizeError(ValueError):
    """The image size does not fit the tokenizer's downsampling factor or scale schedule."""


@dataclass
class TokenizerOutput:
    """What one training forward pass returns."""

    recon: torch.Tensor  # (B, 3, H, W), not clamped
    aux_loss: torch.Tensor  # VQ loss (discrete/hybrid) or weighted KL (continuous)
    used_residual: bool  # hybrid: whether the decoder saw discrete + residual
    stats: dict[str, float] = field(default_factory=dict)


class MultiScaleTokenizer(nn.Module):
    def __init__(self, kind: str, autoencoder: dict[str, Any], quantizer: dict[str, Any], kl_weight: float = 1e-6,
                 residual_drop_p: float = 0.5, name: str | None = None, freeze_quantizer_path: bool = False):
        super().__init__()
        if kind not in KINDS:
            raise ConfigError(f"tokenizer.kind={kind!r} is unknown; choose one of {KINDS}")
        ae, q = dict(autoencoder), dict(quantizer)
        self.kind = kind
        self.name = name or kind
        self.patch_nums = tuple(int(p) for p in q["patch_nums"])
        if list(self.patch_nums) != sorted(set(self.patch_nums)):
            raise ConfigError(f"tokenizer.quantizer.patch_nums must increase strictly, got {list(self.patch_nums)}")
        self.latent_channels = int(ae["z_channels"])
        self.downsample = 2 ** (len(ae["ch_mult"]) - 1)
        self.vocab_size = 0  # discrete / hybrid: the quantizer's (VAR: q["vocab_size"]; FSQ: prod(levels))
        self.kl_weight = kl_weight
        self.residual_drop_p = residual_drop_p
        C = self.latent_channels
        moments = 2 * C if kind == "continuous" else C  # continuous: mean and log-variance
        common = dict(ch=ae["ch"], ch_mult=ae["ch_mult"], attn_levels=ae.get("attn_levels", ()),
                      mid_attn=ae.get("mid_attn", True), dropout=ae.get("dropout", 0.0),
                      norm_groups=ae.get("norm_groups", 32), patch_shortcut=ae.get("patch_shortcut", False))
        self.encoder = Encoder(num_res_blocks=ae["num_res_blocks"], out_channels=moments, **common)
        self.quant_conv = nn.Conv2d(moments, moments, 3, padding=1)
        if kind == "continuous":
            self.quantize = ContinuousScaleWalk(C, self.patch_nums)
        else:  # tokenizer.quantizer.type (hartkit/tokenizers/quantizers/); none: VAR's codebook, as always
            self.quantize = build_quantizer(q, C, self.patch_nums,
                                            resolve_phi_on_last_scale(kind, q.get("phi_on_last_scale")))
            self.vocab_size = int(self.quantize.vocab_size)
        self.post_quant_conv = nn.Conv2d(C, C, 3, padding=1)
        self.decoder = Decoder(num_res_blocks=ae["dec_res_blocks"], in_channels=C, **common)
        self.frozen_quantizer_path = False
        if freeze_quantizer_path:
            self.freeze_quantizer_path()

    # --- sizes --------------------------------------------------------------------------------
    @property
    def latent_size(self) -> int:
        return self.patch_nums[-1]

    @property
    def image_size(self) -> int:
        return self.latent_size * self.downsample

    @property
    def num_tokens(self) -> int:
        return sum(p * p for p in self.patch_nums)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def check_images(self, img: torch.Tensor) -> None:
        if img.ndim != 4 or img.shape[1] != 3:
            raise ImageSizeError(f"expected images of shape (B, 3, H, W), got {tuple(img.shape)}")
        self.check_image_size(img.shape[-2], img.shape[-1])

    def check_image_size(self, H: int, W: int | None = None) -> None:
        """Raise ImageSizeError (naming the numbers and the fix) unless H x W images fit this tokenizer."""
        W = H if W is None else W
        for side in (H, W):
            if side % self.downsample:
                raise ImageSizeError(
                    f"image size {H}x{W} is not divisible by the tokenizer's downsampling factor {self.downsample}; "
                    f"resize the data (data.resolution) to a multiple of {self.downsample}")
        if H != W or H // self.downsample != self.latent_size:
            raise ImageSizeError(
                f"image size {H}x{W} gives a {H // self.downsample}x{W // self.downsample} latent, but the last scale "
                f"of tokenizer.quantizer.patch_nums is {self.latent_size} (expects {self.image_size}x{self.image_size} "
                f"images); set data.resolution={self.image_size} or change patch_nums")

    # --- HART's freezing --------------------------------------------------------------------
    def freeze_quantizer_path(self) -> None:
        """Freeze encoder, quant_conv and the quantizer (codebook + Phi): only post_quant_conv and the decoder train."""
        for module in (self.encoder, self.quant_conv, self.quantize):
            module.requires_grad_(False)
        self.frozen_quantizer_path = True

    def train(self, mode: bool = True) -> MultiScaleTokenizer:
        super().train(mode)
        if self.frozen_quantizer_path:  # a frozen quantizer must not record hits or re-initialise codes
            for module in (self.encoder, self.quant_conv, self.quantize):
                module.train(False)
        return self

    # --- encoder side -----------------------------------------------------------------------
    def _moments(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.quant_conv(self.encoder(img)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode_latent(self, img: torch.Tensor) -> torch.Tensor:
        """The continuous latent f (B, C, h, w); continuous kind: the posterior mean."""
        self.check_images(img)
        if self.kind == "continuous":
            return self._moments(img)[0]
        return self.quant_conv(self.encoder(img))

    def encode(self, img: torch.Tensor) -> Tokens:
        """Images in [-1, 1] -> Tokens (deterministic: no posterior sampling)."""
        f = self.encode_latent(img)
        if self.kind == "continuous":
            walk = self.quantize(f)
            return Tokens(kind=self.kind, patch_nums=self.patch_nums, scales=walk.scales)
        indices, f_hat, rest_before_last = self.quantize.encode_walk(f)
        if self.kind != "hybrid":
            return Tokens(kind=self.kind, patch_nums=self.patch_nums, indices=indices)
        return Tokens(kind=self.kind, patch_nums=self.patch_nums, indices=indices, residual=f.float() - f_hat,
                      rest_before_last=rest_before_last)

    # --- decoder side -----------------------------------------------------------------------
    def decode_latent(self, f_hat_BChw: torch.Tensor) -> torch.Tensor:
        """Latent -> image in [-1, 1]."""
        return self.decoder(self.post_quant_conv(f_hat_BChw)).clamp(-1.0, 1.0)

    def tokens_to_latent(self, tokens: Tokens, use_residual: bool = True) -> torch.Tensor:
        hw = (self.latent_size, self.latent_size)
        if tokens.kind != self.kind:
            raise ValueError(f"{tokens.kind} tokens cannot be decoded by a {self.kind} tokenizer")
        if self.kind == "continuous":
            return self.quantize.scales_to_f_hat(tokens.scales, hw)
        f_hat = self.quantize.indices_to_f_hat(tokens.indices, hw)
        if use_residual and tokens.residual is not None:
            f_hat = f_hat + tokens.residual.to(f_hat.dtype)
        return f_hat

    def decode(self, tokens: Tokens, use_residual: bool = True) -> torch.Tensor:
        """Tokens -> images in [-1, 1]; hybrid with ``use_residual=False`` decodes the discrete part only."""
        return self.decode_latent(self.tokens_to_latent(tokens, use_residual))

    # --- training ---------------------------------------------------------------------------
    def forward(self, img: torch.Tensor, use_residual: bool | None = None) -> TokenizerOutput:
        """Training pass. Hybrid: ``use_residual=None`` keeps the residual with probability 1 - residual_drop_p."""
        self.check_images(img)
        if self.kind == "continuous":
            mean, logvar = self._moments(img)
            f = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if self.training else mean
            # KL per image as in LDM (summed over latent dims), divided by the image's elements
            # because the reconstruction losses here are means; kl_weight keeps LDM's meaning.
            kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2, 3)).mean() / img[0].numel()
            recon = self.decoder(self.post_quant_conv(f))
            return TokenizerOutput(recon=recon, aux_loss=self.kl_weight * kl, used_residual=True,
                                   stats={"kl": float(kl.detach()) * img[0].numel()})
        f = self.quant_conv(self.encoder(img))
        walk = self.quantize(f)
        keep = False
        if self.kind == "hybrid":
            keep = bool(torch.rand(()) >= self.residual_drop_p) if use_residual is None else use_residual
        latent = f if keep else walk.f_hat  # with the residual, discrete + residual is f itself
        recon = self.decoder(self.post_quant_conv(latent.to(f.dtype)))
        return TokenizerOutput(recon=recon, aux_loss=walk.vq_loss, used_residual=keep, stats=walk.stats)

    # --- the helpers the AR models use -----------------------------------------------------
    def empty_f_hat(self, B: int, device: torch.device | str | None = None) -> torch.Tensor:
        device = device if device is not None else self.post_quant_conv.weight.device
        return torch.zeros(B, self.latent_channels, self.latent_size, self.latent_size, device=device)

    def add_scale(self, f_hat: torch.Tensor, k: int, value: torch.Tensor) -> torch.Tensor:
        """f_hat plus scale k: indices (B, pn_k**2) or, continuous, a map (B, C, pn_k, pn_k)."""
        hw = tuple(f_hat.shape[-2:])
        if self.kind == "continuous":
            return f_hat + self.quantize.upsample_scale(value.to(f_hat.dtype), k, hw)
        return f_hat + self.quantize.upsample_scale(self.quantize.embed_scale(value, k), k, hw).to(f_hat.dtype)

    def next_scale_input(self, f_hat: torch.Tensor, k: int) -> torch.Tensor:
        """Input of scale k+1: the cumulative f_hat area-resized to pn_{k+1}, as (B, pn_{k+1}**2, C)."""
        if not 0 <= k < len(self.patch_nums) - 1:
            raise IndexError(f"next_scale_input needs 0 <= k < {len(self.patch_nums) - 1}, got {k}")
        return area_resize(f_hat, self.patch_nums[k + 1]).flatten(2).transpose(1, 2)

    def teacher_forcing_input(self, tokens: Tokens) -> torch.Tensor:
        """(B, L - pn_1**2, C): the inputs of scales 2..K built from the ground-truth tokens
        (``hartkit.tokenizers.protocol.teacher_forcing_input``, the one implementation)."""
        return teacher_forcing_input(self, tokens)

    @property
    def phi_on_last_scale(self) -> bool:
        """Whether the last scale's codes pass through Phi (VAR: yes; HART's hybrid: no; continuous: no Phi)."""
        return bool(getattr(self.quantize, "phi_on_last_scale", False))

    def code_embedding(self, idx: torch.Tensor) -> torch.Tensor:
        """Codebook rows of ``idx`` (..., C)."""
        if self.kind == "continuous":
            raise ValueError("a continuous tokenizer has no codebook")
        return self.quantize.embedding(idx)
