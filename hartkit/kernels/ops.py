"""Public entry points; pick Triton or PyTorch per call through dispatch."""

from __future__ import annotations

import torch

from hartkit.kernels import dispatch
from hartkit.kernels.reference import block_causal_attention_torch, nearest_code_torch


def nearest_code(z_NC: torch.Tensor, codebook_VC: torch.Tensor, cosine: bool = False, chunk: int = 4096,
                 backend: str | None = None) -> torch.Tensor:
    """Index of the nearest codebook row for each row of ``z_NC`` (LongTensor, N)."""
    if dispatch.resolve(z_NC.device, backend) == "triton":
        from hartkit.kernels.triton_nearest_code import nearest_code_triton

        return nearest_code_triton(z_NC, codebook_VC, cosine=cosine)
    return nearest_code_torch(z_NC, codebook_VC, cosine=cosine, chunk=chunk)


def block_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale_ids_L: torch.Tensor | None,
                           scale: float | None = None, backend: str | None = None) -> torch.Tensor:
    """Attention where a token sees its own and all earlier scales. q, k, v: (B, H, L, D)."""
    if scale_ids_L is not None and dispatch.resolve(q.device, backend) == "triton":
        from hartkit.kernels.triton_attention import block_causal_attention_triton

        return block_causal_attention_triton(q, k, v, scale_ids_L, scale=scale)
    return block_causal_attention_torch(q, k, v, scale_ids_L, scale=scale)
