"""Fused nearest-codebook search: distance + running argmin over codebook tiles.

Every peer builds the full N x V distance matrix (``addmm`` then ``argmin``). Here each
program keeps a tile of BLOCK_N latent rows in registers, streams the codebook through in
BLOCK_V-row tiles, and keeps only a running (best distance, best index) per row, so the
N x V matrix never exists: memory traffic is one read of z, one read of the codebook per
program (N/BLOCK_N of them; the codebook stays in L2) and one write of the indices.

Numerics follow ``reference.nearest_code_torch``: float32 everywhere (IEEE dot, no TF32,
because TF32 would flip near-ties), ``d = (|z|^2 + |e|^2) - 2 z.e``, ties to the lowest
index (strict ``<`` across tiles, left tie-break inside a tile), cosine = L2 between
normalised vectors (``x / max(|x|, 1e-12)`` like ``F.normalize``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hartkit.kernels._triton_env import check_device, interpreting, next_pow2

# Fixed when the @triton.jit decorators run: interpreted (CPU tensors) or compiled (CUDA).
INTERPRETED = interpreting()

MAX_C = 256

# Candidate tiles on a GPU; the autotuner keeps the fastest per (V, C_PAD, COSINE). Few on
# purpose: each candidate is a compile the first time a shape is seen.
_GPU_CONFIGS = [
    triton.Config({"BLOCK_N": bn, "BLOCK_V": bv}, num_warps=w, num_stages=s)
    for bn, bv, w, s in [(64, 128, 4, 3), (128, 64, 4, 3), (128, 128, 8, 3), (64, 256, 8, 2)]
]


@triton.jit
def _nearest_code_kernel(z_ptr, e_ptr, idx_ptr, codes_ptr, N, V, C, stride_zn, stride_ev, stride_cn,
                         COSINE: tl.constexpr, RETURN_CODES: tl.constexpr, C_PAD: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr):
    pid = tl.program_id(0)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_c = tl.arange(0, C_PAD)
    n_mask = offs_n < N
    c_mask = offs_c < C
    rows_n = offs_n.to(tl.int64)[:, None]

    z = tl.load(z_ptr + rows_n * stride_zn + offs_c[None, :], mask=n_mask[:, None] & c_mask[None, :],
                other=0.0).to(tl.float32)
    if COSINE:
        z = z / tl.maximum(tl.sqrt(tl.sum(z * z, axis=1)), 1e-12)[:, None]
    z_sq = tl.sum(z * z, axis=1)

    best_d = tl.full([BLOCK_N], float("inf"), tl.float32)
    best_i = tl.zeros([BLOCK_N], tl.int32)
    for v0 in range(0, V, BLOCK_V):
        offs_v = v0 + tl.arange(0, BLOCK_V)
        v_mask = offs_v < V
        e = tl.load(e_ptr + offs_v.to(tl.int64)[:, None] * stride_ev + offs_c[None, :],
                    mask=v_mask[:, None] & c_mask[None, :], other=0.0).to(tl.float32)
        if COSINE:
            e = e / tl.maximum(tl.sqrt(tl.sum(e * e, axis=1)), 1e-12)[:, None]
        e_sq = tl.sum(e * e, axis=1)
        dot = tl.dot(z, tl.trans(e), input_precision="ieee")
        d = (z_sq[:, None] + e_sq[None, :]) - 2.0 * dot
        d = tl.where(v_mask[None, :], d, float("inf"))
        tile_d, tile_i = tl.min(d, axis=1, return_indices=True, return_indices_tie_break_left=True)
        better = tile_d < best_d  # strict: an earlier tile keeps a tie
        best_d = tl.where(better, tile_d, best_d)
        best_i = tl.where(better, tile_i + v0, best_i)

    tl.store(idx_ptr + offs_n, best_i.to(tl.int64), mask=n_mask)
    if RETURN_CODES:
        # Fused gather of the chosen (raw, un-normalised) codebook rows.
        code = tl.load(e_ptr + best_i.to(tl.int64)[:, None] * stride_ev + offs_c[None, :],
                       mask=n_mask[:, None] & c_mask[None, :], other=0.0)
        tl.store(codes_ptr + rows_n * stride_cn + offs_c[None, :], code, mask=n_mask[:, None] & c_mask[None, :])


# The autotuner needs the compiled path (more than one config fails in the interpreter), so it
# is only built when not interpreting.
_nearest_code_tuned = None if INTERPRETED else triton.autotune(
    configs=_GPU_CONFIGS, key=["V", "C_PAD", "COSINE"])(_nearest_code_kernel)


class _FusedNearestCode(torch.autograd.Function):
    """Indices + gathered codes from the kernel; the codes' gradient flows to the codebook like
    ``codebook[idx]`` (scatter-add of the rows), none to z (argmin has no gradient)."""

    @staticmethod
    def forward(ctx, z, codebook, cosine, block_n, block_v):
        idx, codes = _launch(z, codebook, cosine, True, block_n, block_v)
        ctx.save_for_backward(idx)
        ctx.codebook_shape = codebook.shape
        ctx.mark_non_differentiable(idx)
        return idx, codes

    @staticmethod
    def backward(ctx, _grad_idx, grad_codes):
        (idx,) = ctx.saved_tensors
        grad_cb = None
        if ctx.needs_input_grad[1]:
            grad_cb = grad_codes.new_zeros(ctx.codebook_shape).index_add_(0, idx, grad_codes)
        return None, grad_cb, None, None, None


def nearest_code_triton(z_NC: torch.Tensor, codebook_VC: torch.Tensor, cosine: bool = False,
                        return_codes: bool = False, block_n: int | None = None, block_v: int | None = None):
    """Index (LongTensor N) of the nearest codebook row per row of ``z_NC``; with ``return_codes``
    also the chosen rows ``(N, C)`` in the codebook's dtype. ``block_n``/``block_v`` pin the tile
    sizes (powers of two >= 16; tests use them to force several tiles), otherwise autotuned."""
    if z_NC.dim() != 2 or codebook_VC.dim() != 2 or z_NC.shape[1] != codebook_VC.shape[1]:
        raise ValueError(f"nearest_code wants z (N, C) and codebook (V, C); got {tuple(z_NC.shape)} "
                         f"and {tuple(codebook_VC.shape)}")
    N, C = z_NC.shape
    V = codebook_VC.shape[0]
    if C > MAX_C:
        raise ValueError(f"the Triton nearest_code supports C <= {MAX_C}, got C={C}; use kernels=torch")
    if V == 0:
        raise ValueError("nearest_code got an empty codebook (V=0)")
    check_device(INTERPRETED, z_NC, codebook_VC)
    for name, b in (("block_n", block_n), ("block_v", block_v)):
        if b is not None and (b < 16 or b & (b - 1)):
            raise ValueError(f"{name}={b} must be a power of two >= 16")

    if return_codes:
        return _FusedNearestCode.apply(z_NC, codebook_VC, cosine, block_n, block_v)
    return _launch(z_NC, codebook_VC, cosine, False, block_n, block_v)[0]


def _launch(z_NC, codebook_VC, cosine, return_codes, block_n, block_v):
    N, C = z_NC.shape
    V = codebook_VC.shape[0]
    z = z_NC.detach() if z_NC.stride(-1) == 1 and not INTERPRETED else z_NC.detach().contiguous()
    e = codebook_VC.detach() if codebook_VC.stride(-1) == 1 and not INTERPRETED else codebook_VC.detach().contiguous()
    idx = torch.empty(N, dtype=torch.long, device=z.device)
    codes = torch.empty((N, C), dtype=e.dtype, device=z.device) if return_codes else None
    if N > 0:
        args = (z, e, idx, codes if codes is not None else idx, N, V, C, z.stride(0), e.stride(0),
                codes.stride(0) if codes is not None else 0)
        meta = dict(COSINE=bool(cosine), RETURN_CODES=bool(return_codes), C_PAD=max(16, next_pow2(C)))
        if block_n is None and block_v is None and _nearest_code_tuned is not None:
            grid = lambda m: (triton.cdiv(N, m["BLOCK_N"]),)
            _nearest_code_tuned[grid](*args, **meta)
        else:
            # Interpreter default: big tiles (numpy is fast on large blocks, slow per program).
            bn = block_n or min(128, max(16, next_pow2(N)))
            bv = block_v or min(1024 if INTERPRETED else 128, max(16, next_pow2(V)))
            _nearest_code_kernel[(triton.cdiv(N, bn),)](*args, **meta, BLOCK_N=bn, BLOCK_V=bv)
    return idx, codes
