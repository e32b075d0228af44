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
            # numbers match the full-matrix formula bit for bit on ties. In-place addmm_: one
            # (chunk x V) buffer, not two.
            d = (e_sq.unsqueeze(0) + (zc * zc).sum(1, keepdim=True)).addmm_(zc, e.t(), alpha=-2.0)
            out[start : start + chunk] = d.argmin(dim=1)
            del d  # free this chunk's matrix before the next one is allocated
        return out


def scale_mask(scale_ids_L: torch.Tensor) -> torch.Tensor:
    """Boolean (L, L) mask: query i may attend key j iff scale(j) <= scale(i)."""
    return scale_ids_L.unsqueeze(1) >= scale_ids_L.unsqueeze(0)


def apply_rope_torch(x_BHLD: torch.Tensor, cos_LP: torch.Tensor, sin_LP: torch.Tensor) -> torch.Tensor:
    """Rotary embedding: pair i = dims (2i, 2i+1) rotated by the angle whose cos/sin are column i
    of the (L, D/2) tables; computed in float32, returned in x's dtype. The tables' last L rows
    are used when they are longer than x (queries of a KV-cache step)."""
    L = x_BHLD.shape[-2]
    cos, sin = cos_LP[-L:].to(x_BHLD.device, torch.float32), sin_LP[-L:].to(x_BHLD.device, torch.float32)
    x0, x1 = x_BHLD.float().unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2).to(x_BHLD.dtype)


def block_causal_attention_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale_ids_L: torch.Tensor | None,
                                 scale: float | None = None,
                                 rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """SDPA over (B, H, L, D) with the block-causal scale mask (None: no mask, e.g. KV-cache decoding).

    ``rope=(cos_LP, sin_LP)`` rotates q and k first (``apply_rope_torch``; tables cover the keys).
    """
    if rope is not None:
        q, k = apply_rope_torch(q, *rope), apply_rope_torch(k, *rope)
    mask = None if scale_ids_L is None else scale_mask(scale_ids_L.to(q.device))
    if mask is not None and mask.shape[-2] != q.shape[-2]:
        mask = mask[-q.shape[-2]:]  # queries are the last rows (KV-cache decoding)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def nearest_code_naive(z_NC: torch.Tensor, codebook_VC: torch.Tensor, cosine: bool = False) -> torch.Tensor:
    """What VAR, HART, LlamaGen and vector-quantize-pytorch do: the full N x V distance matrix,
    then argmin. The benchmark's baseline; do not use it on large N."""
    with torch.autocast(device_type=z_NC.device.type, enabled=False):
        z = z_NC.float()
        e = codebook_VC.float()
        if cosine:
            z = F.normalize(z, dim=-1)
            e = F.normalize(e, dim=-1)
        # VAR's form: |z|^2 + |e|^2 as an (N x V) matrix, then an in-place addmm_ (one N x V buffer).
        d = ((e * e).sum(dim=1).unsqueeze(0) + (z * z).sum(1, keepdim=True)).addmm_(z, e.t(), alpha=-2.0)
        return d.argmin(dim=1)


def block_causal_attention_math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale_ids_L: torch.Tensor,
                                scale: float | None = None) -> torch.Tensor:
    """Textbook attention (scores materialised, softmax in float32) with the scale mask; the
    benchmark's 'naive PyTorch' row and an independent check of the SDPA reference."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    mask = scale_mask(scale_ids_L.to(q.device))[-q.shape[-2]:]
    s = torch.matmul(q.float(), k.float().transpose(-2, -1)) * scale
    s = s.masked_fill(~mask, float("-inf"))
    return torch.matmul(s.softmax(dim=-1), v.float()).to(q.dtype)
