"""Self-attention with VAR's options, rotary positions and a KV cache.

Training runs the whole multi-scale sequence at once with the block-causal
mask (a token sees its own and all earlier scales). Sampling feeds one scale
at a time: the keys/values of earlier scales are kept in a cache, and a
scale's queries attend to the cache plus the scale itself without any mask,
which is exactly what the block-causal mask allows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hartkit.ar_models.positions import apply_rope
from hartkit.errors import ConfigError
from hartkit.kernels import block_causal_attention


class ScaleSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, qv_bias: bool = True, l2_norm: bool = True):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"ar.width={dim} is not divisible by ar.heads={heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.l2_norm = l2_norm
        self.mat_qkv = nn.Linear(dim, 3 * dim, bias=False)
        if qv_bias:  # VAR: q and v get biases, k does not (a k bias cancels in softmax)
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
            self.register_buffer("zero_k_bias", torch.zeros(dim), persistent=False)
        else:
            self.q_bias = self.v_bias = None
        if l2_norm:  # learned per-head temperature, init log 4, capped at log 100
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, heads, 1, 1), math.log(4.0)))
        self.proj = nn.Linear(dim, dim)
        self.caching = False
        self.cache_k: torch.Tensor | None = None
        self.cache_v: torch.Tensor | None = None

    def set_caching(self, enabled: bool) -> None:
        self.caching = enabled
        self.cache_k = self.cache_v = None

    def forward(self, x_BLC: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                scale_ids_L: torch.Tensor | None) -> torch.Tensor:
        B, L, C = x_BLC.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, self.zero_k_bias, self.v_bias])
        qkv = F.linear(x_BLC, self.mat_qkv.weight, bias).view(B, L, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, D)
        scale = None
        if self.l2_norm:
            temp = self.scale_mul_1H11.clamp(max=math.log(100.0)).exp()
            q = F.normalize(q, dim=-1) * temp
            k = F.normalize(k, dim=-1)
            scale = 1.0
        if rope is not None:  # rotation keeps the norms, so it composes with the l2 normalisation
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if self.caching:
            if self.cache_k is not None:
                k = torch.cat([self.cache_k, k], dim=2)
                v = torch.cat([self.cache_v, v], dim=2)
            self.cache_k, self.cache_v = k, v
            scale_ids_L = None  # earlier scales + this scale: everything is visible
        out = block_causal_attention(q, k, v, scale_ids_L, scale=scale)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))
