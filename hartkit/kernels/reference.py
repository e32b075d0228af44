"""Pure-PyTorch references of the hot paths (the ground truth the Triton kernels are tested against)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nearest_code_torch(z_NC: torch.Tensor, codebook_VC: torch.Tensor, cosine: bool = False, chunk: int = 4096) -> torch.Tensor:
    """argmin_j ||z - e_j||^2 (or max cosine) in float32, computed over row chunks.

    Only a (chunk x V) slice of the distance matrix exists at any time.
    Ties go to the lowest index, like ``torch.argmin``.
    """
    with torch.autocast(device_type=z_NC.device.type, enabled=False):
        z = z_NC.float()
        e = codebook_VC.float()
        if cosine:
            z = F.normalize(z, dim=-1)
            e = F.normalize(e, dim=-1)
        e_sq = (e * e).sum(dim=1)
        out = torch.empty(z.shape[0], dtype=torch.long, device=z.device)
        for start in range(0, z.shape[0], chunk):
            zc = z[start : start + chunk]
            # ||z||^2 is constant per row and does not change the argmin, but is kept so the
            # numbers match the full-matrix formula bit for bit on ties.
            d = torch.addmm(e_sq.unsqueeze(0) + (zc * zc).sum(1, keepdim=True), zc, e.t(), alpha=-2.0)
            out[start : start + chunk] = d.argmin(dim=1)
        return out


def scale_mask(scale_ids_L: torch.Tensor) -> torch.Tensor:
    """Boolean (L, L) mask: query i may attend key j iff scale(j) <= scale(i)."""
    return scale_ids_L.unsqueeze(1) >= scale_ids_L.unsqueeze(0)


def block_causal_attention_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale_ids_L: torch.Tensor | None,
                                 scale: float | None = None) -> torch.Tensor:
    """SDPA over (B, H, L, D) with the block-causal scale mask (None: no mask, e.g. KV-cache decoding)."""
    mask = None if scale_ids_L is None else scale_mask(scale_ids_L.to(q.device))
    if mask is not None and mask.shape[-2] != q.shape[-2]:
        mask = mask[-q.shape[-2]:]  # queries are the last rows (KV-cache decoding)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
