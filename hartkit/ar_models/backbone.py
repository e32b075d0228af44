"""AdaLN transformer blocks and the stack that runs them (VAR / HART style).

Each block gets six modulation vectors from ``SiLU -> Linear(C, 6C)`` of the
condition (class embedding or pooled text):

    x += attn(norm(x) * (1 + s1) + b1) * g1
    x += ffn(norm(x) * (1 + s2) + b2) * g2

with a norm that has no affine parameters.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hartkit.ar_models.attention import ScaleSelfAttention
from hartkit.ar_models.layers import DropPath, make_ffn, make_norm


class AdaLNBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, norm: str, qv_bias: bool, attn_l2_norm: bool,
                 drop_path: float):
        super().__init__()
        self.norm = make_norm(norm, dim)
        self.attn = ScaleSelfAttention(dim, heads, qv_bias=qv_bias, l2_norm=attn_l2_norm)
        self.ffn = make_ffn(norm, dim, mlp_ratio)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, x_BLC: torch.Tensor, cond_BC: torch.Tensor, rope, scale_ids_L) -> torch.Tensor:
        g1, g2, s1, b1, s2, b2 = self.ada_lin(cond_BC).unsqueeze(1).chunk(6, dim=-1)
        x_BLC = x_BLC + self.drop_path(self.attn(self.norm(x_BLC) * (1 + s1) + b1, rope, scale_ids_L) * g1)
        x_BLC = x_BLC + self.drop_path(self.ffn(self.norm(x_BLC) * (1 + s2) + b2) * g2)
        return x_BLC


class BlockStack(nn.Module):
    """``depth`` AdaLN blocks with linearly increasing drop-path rates (VAR)."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float, norm: str, qv_bias: bool,
                 attn_l2_norm: bool, drop_path: float):
        super().__init__()
        rates = [drop_path * i / (depth - 1) for i in range(depth)] if depth > 1 else [drop_path]
        self.blocks = nn.ModuleList(
            AdaLNBlock(dim, heads, mlp_ratio, norm, qv_bias, attn_l2_norm, r) for r in rates
        )

    def set_caching(self, enabled: bool) -> None:
        for b in self.blocks:
            b.attn.set_caching(enabled)

    def forward(self, x_BLC, cond_BC, rope, scale_ids_L):
        for b in self.blocks:
            x_BLC = b(x_BLC, cond_BC, rope, scale_ids_L)
        return x_BLC

    @torch.no_grad()
    def init_weights(self, dim: int, init_adaln: float = 0.5, init_gamma: float = 1e-5) -> None:
        """VAR-like init: small normal weights, residual projections scaled by depth, near-zero gates."""
        std = math.sqrt(1 / dim / 3)
        depth = len(self.blocks)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    m.bias.zero_()
        for b in self.blocks:
            b.attn.proj.weight.div_(math.sqrt(2 * depth))
            out_ffn = b.ffn.fc2 if hasattr(b.ffn, "fc2") else b.ffn.w2
            out_ffn.weight.div_(math.sqrt(2 * depth))
            lin = b.ada_lin[-1]
            lin.weight.mul_(init_adaln)
            C = lin.weight.shape[0] // 6
            lin.weight[: 2 * C].mul_(init_gamma / init_adaln)  # g1, g2: residual branches start almost closed
