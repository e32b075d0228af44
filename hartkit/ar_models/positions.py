"""Position schemes of the scale-wise transformer.

``absolute`` (VAR): a learned embedding per token position of the whole
multi-scale sequence, added to the input (plus VAR's learned start position).

``rope2d`` (HART): rotary embeddings on q and k. Every scale's (row, col) grid
is rescaled onto the final grid (``coord * last_pn / pn``), so all scales share
one coordinate frame and a model can be sampled at a larger final grid. Text
prefix tokens get 1-D RoPE (position ``i`` on both axes, which is ordinary 1-D
RoPE with each frequency used twice).
"""

from __future__ import annotations

import torch

from hartkit.errors import ConfigError

POSITION_SCHEMES = ("rope2d", "absolute")


def scale_grid_coords(patch_nums: tuple[int, ...], rescale: bool = True) -> torch.Tensor:
    """(L, 2) float (row, col) of every image token, scales concatenated small to large, row-major."""
    last = patch_nums[-1]
    out = []
    for pn in patch_nums:
        r, c = torch.meshgrid(torch.arange(pn, dtype=torch.float64), torch.arange(pn, dtype=torch.float64), indexing="ij")
        rc = torch.stack([r.flatten(), c.flatten()], dim=1)
        out.append(rc * (last / pn) if rescale else rc)
    return torch.cat(out).float()


def text_coords(num_tokens: int) -> torch.Tensor:
    """(T, 2): token i sits at (i, i), i.e. 1-D RoPE."""
    i = torch.arange(num_tokens, dtype=torch.float32)
    return torch.stack([i, i], dim=1)


def rope_tables(coords_L2: torch.Tensor, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (L, head_dim // 2): the first half of the rotation pairs follows the row, the second the column."""
    if head_dim % 4:
        raise ConfigError(f"rope2d needs a head dimension divisible by 4, got {head_dim}; change ar.width or ar.heads")
    quarter = head_dim // 4
    freqs = base ** (-torch.arange(quarter, dtype=torch.float64, device=coords_L2.device) / quarter)
    ang = torch.cat([coords_L2[:, :1].double() * freqs, coords_L2[:, 1:2].double() * freqs], dim=1)
    return ang.cos().float(), ang.sin().float()


def apply_rope(x_BHLD: torch.Tensor, cos_LP: torch.Tensor, sin_LP: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs (x[2i], x[2i+1]) by the angle of pair i."""
    x = x_BHLD.float().unflatten(-1, (-1, 2))
    x0, x1 = x.unbind(-1)
    cos, sin = cos_LP.to(x.device), sin_LP.to(x.device)
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    return out.flatten(-2).to(x_BHLD.dtype)
