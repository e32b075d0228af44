"""Norms, feed-forward layers and drop path used by the scale-wise transformer.

Two families, chosen by ``ar.norm``: VAR's LayerNorm + GELU MLP and HART's
RMSNorm + SwiGLU. The norms inside AdaLN blocks carry no affine parameters
(the AdaLN modulation supplies scale and shift).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hartkit.errors import ConfigError

NORMS = ("layernorm", "rmsnorm")


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps).to(x.dtype)
        return y * self.weight if self.weight is not None else y


def make_norm(kind: str, dim: int, affine: bool = False, eps: float = 1e-6) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps, affine=affine)
    raise ConfigError(f"ar.norm={kind!r} is unknown; choose one of {NORMS}")


class GeluMLP(nn.Module):
    """VAR's FFN: fc1 -> GELU(tanh) -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SwiGLU(nn.Module):
    """LLaMA-style gated FFN (HART): w2(silu(w1 x) * w3 x), no biases."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def swiglu_hidden(dim: int, mlp_ratio: float, multiple_of: int = 64) -> int:
    """LLaMA convention: 2/3 of the dense hidden width (same parameter count), rounded up."""
    hidden = int(2 * mlp_ratio * dim / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def make_ffn(norm_kind: str, dim: int, mlp_ratio: float) -> nn.Module:
    if norm_kind == "rmsnorm":
        return SwiGLU(dim, swiglu_hidden(dim, mlp_ratio))
    return GeluMLP(dim, round(dim * mlp_ratio))


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for whole samples during training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class AdaLNBeforeHead(nn.Module):
    """VAR's ``head_nm``: norm(h) * (1 + scale) + shift, with scale/shift from ``SiLU -> Linear(C, 2C)``."""

    def __init__(self, dim: int, cond_dim: int, norm_kind: str):
        super().__init__()
        self.norm = make_norm(norm_kind, dim)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * dim))

    def forward(self, h_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond_BD).unsqueeze(1).chunk(2, dim=-1)
        return self.norm(h_BLC) * (1 + scale) + shift
