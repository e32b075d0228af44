"""Public entry points; pick Triton or PyTorch per call through dispatch."""

from __future__ import annotations

import torch

from hartkit.kernels import dispatch
from hartkit.kernels.reference import block_causal_attention_torch, nearest_code_torch


def nearest_code(z_NC: torch.Tensor, codebook_VC: torch.Tensor, cosine: bool = False, chunk: int = 4096,
                 backend: str | None = None, return_codes: bool = False):
    """Index of the nearest codebook row for each row of ``z_NC`` (LongTensor, N).

    With ``return_codes=True`` returns ``(idx_N, codes_NC)`` where ``codes_NC = codebook_VC[idx_N]``
    (gathered inside the kernel on the Triton path); the codes are differentiable w.r.t. the
    codebook on both paths, as ``codebook_VC[idx_N]`` is (the VQ loss trains the codebook).
    """
    if dispatch.resolve(z_NC.device, backend) == "triton":
        # optional and heavy: Triton (and its JIT) only on the Triton path
        from hartkit.kernels.triton_nearest_code import nearest_code_triton

        return nearest_code_triton(z_NC, codebook_VC, cosine=cosine, return_codes=return_codes)
    idx = nearest_code_torch(z_NC, codebook_VC, cosine=cosine, chunk=chunk)
    return (idx, codebook_VC[idx]) if return_codes else idx


def block_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale_ids_L: torch.Tensor | None,
                           scale: float | None = None, backend: str | None = None,
                           rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Attention where a token sees its own and all earlier scales. q, k, v: (B, H, L, D).

    ``scale_ids_L`` (non-decreasing, one per key) gives each token's scale; queries are the last
    ``q.shape[2]`` tokens (KV-cache decoding passes fewer queries than keys). None = no mask
    (SDPA everywhere). ``rope=(cos_LP, sin_LP)``: rotary tables (L_keys x D/2, pair i = dims
    2i, 2i+1, as ``hartkit.kernels.reference.apply_rope_torch``) applied to q and k, fused into
    the kernel on the Triton path.
    """
    if scale_ids_L is not None and dispatch.resolve(q.device, backend) == "triton":
        # optional and heavy: Triton (and its JIT) only on the Triton path
        from hartkit.kernels.triton_attention import block_causal_attention_triton

        return block_causal_attention_triton(q, k, v, scale_ids_L, scale=scale, rope=rope)
    return block_causal_attention_torch(q, k, v, scale_ids_L, scale=scale, rope=rope)
