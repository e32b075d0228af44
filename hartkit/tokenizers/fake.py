"""A weight-free multi-scale tokenizer that satisfies ``ScaleTokenizer``, for generator tests and sizing.

Generator unit tests and benchmarks must not depend on a trained tokenizer:
this one encodes with a fixed random patch projection, walks VAR's residual
scales (area down, nearest code, bicubic up; no Phi, so
``phi_on_last_scale`` is false) and decodes with a fixed random linear map.
Nothing in it is learned and its images are not meant to look like anything;
what it guarantees is the protocol's shapes and semantics
(``hartkit.tokenizers.protocol``; ``tests/test_architecture.py`` checks it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hartkit.tokenizers.tokens import Tokens


class FakeMultiScaleTokenizer(nn.Module):
    def __init__(self, kind: str = "discrete", patch_nums: tuple[int, ...] = (1, 2, 3, 4), vocab_size: int = 32,
                 latent_channels: int = 8, downsample: int = 4, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.kind, self.patch_nums, self.downsample = kind, tuple(patch_nums), downsample
        self.vocab_size = 0 if kind == "continuous" else vocab_size
        self.latent_channels = latent_channels
        self.register_buffer("codebook", torch.randn(max(vocab_size, 1), latent_channels, generator=g))
        self.register_buffer("enc", torch.randn(latent_channels, 3 * downsample * downsample, generator=g) * 0.3)
        self.register_buffer("dec", torch.randn(3 * downsample * downsample, latent_channels, generator=g) * 0.3)

    @property
    def latent_size(self) -> int:
        return self.patch_nums[-1]

    @property
    def phi_on_last_scale(self) -> bool:
        return False  # no Phi at any scale

    def empty_f_hat(self, B: int, device=None) -> torch.Tensor:
        s = self.latent_size
        return torch.zeros(B, self.latent_channels, s, s, device=device or self.codebook.device)

    def code_embedding(self, idx: torch.Tensor) -> torch.Tensor:
        return self.codebook[idx]

    def _scale_map(self, k: int, value: torch.Tensor) -> torch.Tensor:
        pn = self.patch_nums[k]
        if value.dtype == torch.long:
            value = self.codebook[value].view(value.shape[0], pn, pn, -1).permute(0, 3, 1, 2)
        if pn != self.latent_size:
            value = F.interpolate(value, size=(self.latent_size,) * 2, mode="bicubic")
        return value

    def add_scale(self, f_hat: torch.Tensor, k: int, value: torch.Tensor) -> torch.Tensor:
        return f_hat + self._scale_map(k, value)

    def next_scale_input(self, f_hat: torch.Tensor, k: int) -> torch.Tensor:
        pn = self.patch_nums[k + 1]
        return F.interpolate(f_hat, size=(pn, pn), mode="area").flatten(2).transpose(1, 2)

    def encode(self, img_B3HW: torch.Tensor) -> Tokens:
        B, d = img_B3HW.shape[0], self.downsample
        patches = F.unfold(img_B3HW, d, stride=d)  # (B, 3*d*d, hw)
        s = self.latent_size
        f = (self.enc @ patches).view(B, self.latent_channels, s, s)
        f_rest, f_hat = f.clone(), torch.zeros_like(f)
        indices, scales = [], []
        rest_before_last = None
        for k, pn in enumerate(self.patch_nums):
            if k == len(self.patch_nums) - 1:
                rest_before_last = f_rest.clone()
            z = F.interpolate(f_rest, size=(pn, pn), mode="area")
            if self.kind == "continuous":
                value = z
                scales.append(z)
            else:
                zf = z.flatten(2).transpose(1, 2)
                value = torch.cdist(zf, self.codebook[None].expand(B, -1, -1)).argmin(-1)
                indices.append(value)
            h = self._scale_map(k, value)
            f_hat, f_rest = f_hat + h, f_rest - h
        hybrid = self.kind == "hybrid"
        return Tokens(self.kind, self.patch_nums, indices=indices or None, scales=scales or None,
                      residual=(f - f_hat) if hybrid else None, rest_before_last=rest_before_last if hybrid else None)

    def f_hat_of(self, tokens: Tokens, use_residual: bool = True) -> torch.Tensor:
        values = tokens.indices if tokens.indices is not None else tokens.scales
        f_hat = self.empty_f_hat(values[0].shape[0], values[0].device)
        for k, v in enumerate(values):
            f_hat = self.add_scale(f_hat, k, v)
        if use_residual and tokens.residual is not None:
            f_hat = f_hat + tokens.residual
        return f_hat

    def decode_latent(self, f_hat: torch.Tensor) -> torch.Tensor:
        s, d = self.latent_size, self.downsample
        cols = self.dec @ f_hat.flatten(2)
        return torch.tanh(F.fold(cols, (s * d, s * d), d, stride=d))

    def decode(self, tokens: Tokens, use_residual: bool = True) -> torch.Tensor:
        return self.decode_latent(self.f_hat_of(tokens, use_residual))
