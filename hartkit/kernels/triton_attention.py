"""Block-causal (scale-wise) flash attention, forward and backward, in Triton.

The mask: a query of scale s sees every key of scale <= s (its own and all earlier scales;
text prefix tokens are scale 0). Scale ids never decrease along the sequence, so the keys a
query sees are a prefix ``[0, kv_len[i])`` of the key sequence and ``kv_len`` never decreases
along the queries. That turns the mask into one integer per query, and makes tile skipping
exact: a query tile needs key tiles ``[0, max kv_len of the tile)`` only, and a key tile is
needed by queries ``[first query with kv_len > tile start, Lq)`` only. Fully masked tiles are
never loaded.

FlashAttention-2 scheme: online softmax in base 2 with float32 accumulators; the forward
stores the log-sum-exp per query; the backward recomputes the probabilities, with one kernel
for dK/dV (parallel over key tiles) and one for dQ (parallel over query tiles), so no atomics.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from hartkit.kernels._triton_env import check_device, interpreting, next_pow2
from hartkit.kernels.block_mask import visible_key_lengths

# Fixed when the @triton.jit decorators run: interpreted (CPU tensors) or compiled (CUDA).
INTERPRETED = interpreting()

_LOG2E = 1.4426950408889634


def _configs(pairs):
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in pairs]


# Few candidates on purpose: each one is a compile (seconds) the first time a shape is seen.
_FWD_CONFIGS = _configs([(128, 64, 4, 3), (128, 64, 8, 3), (64, 64, 4, 3), (128, 128, 8, 2)])
_BWD_CONFIGS = _configs([(64, 64, 4, 2), (64, 64, 8, 3), (32, 64, 4, 3), (128, 64, 8, 2)])


@triton.jit
def _load_pairs(row_ptrs, offs_r, sd, mask):
    """Even and odd columns of a (rows, D) tile: the two members of each RoPE rotation pair."""
    even = tl.load(row_ptrs + (2 * offs_r)[None, :] * sd, mask=mask, other=0.0)
    odd = tl.load(row_ptrs + (2 * offs_r + 1)[None, :] * sd, mask=mask, other=0.0)
    return even, odd


@triton.jit
def _load_cos_sin(COS, SIN, pos, offs_r, DH, mask):
    off = pos.to(tl.int64)[:, None] * DH + offs_r[None, :]
    return tl.load(COS + off, mask=mask, other=1.0), tl.load(SIN + off, mask=mask, other=0.0)


@triton.jit
def _rotate(even, odd, c, s):
    """Rotate each pair by its angle in float32 (as the reference does), back to the input dtype."""
    e = even.to(tl.float32)
    o = odd.to(tl.float32)
    return (e * c - o * s).to(even.dtype), (e * s + o * c).to(even.dtype)


@triton.jit
def _rotate_back(g_even, g_odd, c, s):
    """The gradient through a rotation is the inverse rotation."""
    return g_even * c + g_odd * s, g_odd * c - g_even * s


@triton.jit
def _attn_fwd_kernel(Q, K, V, O, LSE, KVLEN, COS, SIN,
                     sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sob, soh, som, sod,
                     H, Lq, Lk, D, qk_scale, TUNE_LQ, TUNE_LK,
                     ROPE: tl.constexpr, DOT_PREC: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < Lq
    d_ok = offs_d < D

    q_rows = Q + b * sqb + h * sqh + offs_m[:, None] * sqm
    if ROPE:  # q as rotated (even, odd) halves; q . k = even . even + odd . odd
        offs_r = tl.arange(0, BLOCK_R)
        r_ok = offs_r < D // 2
        mr_ok = m_ok[:, None] & r_ok[None, :]
        q_even, q_odd = _load_pairs(q_rows, offs_r, sqd, mr_ok)
        cos_q, sin_q = _load_cos_sin(COS, SIN, Lk - Lq + offs_m, offs_r, D // 2, mr_ok)
        q_even, q_odd = _rotate(q_even, q_odd, cos_q, sin_q)
    else:
        q = tl.load(q_rows + offs_d[None, :] * sqd, mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    # Rows past Lq see key 0 only, so they stay finite; they are never stored.
    kvl = tl.load(KVLEN + offs_m, mask=m_ok, other=1)
    hi = tl.max(kvl, axis=0)  # key tiles at or past hi are fully masked for this query tile

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < Lk
        k_rows = k_base + offs_n[:, None] * skn
        if ROPE:
            nr_ok = n_ok[:, None] & r_ok[None, :]
            k_even, k_odd = _load_pairs(k_rows, offs_r, skd, nr_ok)
            cos_k, sin_k = _load_cos_sin(COS, SIN, offs_n, offs_r, D // 2, nr_ok)
            k_even, k_odd = _rotate(k_even, k_odd, cos_k, sin_k)
            qk = tl.dot(q_even, tl.trans(k_even), input_precision=DOT_PREC)
            qk += tl.dot(q_odd, tl.trans(k_odd), input_precision=DOT_PREC)
        else:
            k = tl.load(k_rows + offs_d[None, :] * skd, mask=n_ok[:, None] & d_ok[None, :], other=0.0)
            qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)
        v = tl.load(v_base + offs_n[:, None] * svn + offs_d[None, :] * svd, mask=n_ok[:, None] & d_ok[None, :],
                    other=0.0)
        qk = tl.where(offs_n[None, :] < kvl[:, None], qk * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, axis=1))
        p = tl.math.exp2(qk - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
        m_i = m_new

    out = acc / l_i[:, None]
    tl.store(O + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :] * sod, out.to(O.dtype.element_ty),
             mask=m_ok[:, None] & d_ok[None, :])
    tl.store(LSE + pid_bh.to(tl.int64) * Lq + offs_m, m_i + tl.math.log2(l_i), mask=m_ok)


@triton.jit
def _attn_bwd_dkdv_kernel(Q, K, V, DO, DK, DV, LSE, DELTA, KVLEN, QSTART, COS, SIN,
                          sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sdb, sdh, sdm, sdd,
                          H, Lq, Lk, D, sm_scale, qk_scale, TUNE_LQ, TUNE_LK,
                          ROPE: tl.constexpr, DOT_PREC: tl.constexpr, BLOCK_D: tl.constexpr,
                          BLOCK_R: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # DK/DV share K's/V's strides: the wrapper allocates them like K and V (contiguous).
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    n_ok = offs_n < Lk
    d_ok = offs_d < D
    nd_ok = n_ok[:, None] & d_ok[None, :]
    k_rows = K + b * skb + h * skh + offs_n[:, None] * skn
    if ROPE:
        offs_r = tl.arange(0, BLOCK_R)
        r_ok = offs_r < D // 2
        nr_ok = n_ok[:, None] & r_ok[None, :]
        k_even, k_odd = _load_pairs(k_rows, offs_r, skd, nr_ok)
        cos_k, sin_k = _load_cos_sin(COS, SIN, offs_n, offs_r, D // 2, nr_ok)
        k_even, k_odd = _rotate(k_even, k_odd, cos_k, sin_k)
        dk_even = tl.zeros([BLOCK_N, BLOCK_R], tl.float32)
        dk_odd = tl.zeros([BLOCK_N, BLOCK_R], tl.float32)
    else:
        k = tl.load(k_rows + offs_d[None, :] * skd, mask=nd_ok, other=0.0)
        dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    v = tl.load(V + b * svb + h * svh + offs_n[:, None] * svn + offs_d[None, :] * svd, mask=nd_ok, other=0.0)

    # The first query that sees this key tile; earlier query tiles are fully masked.
    q_lo = tl.load(QSTART + pid_n * BLOCK_N)
    lo = (q_lo // BLOCK_M) * BLOCK_M

    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    q_base = Q + b * sqb + h * sqh
    do_base = DO + b * sdb + h * sdh
    row_base = pid_bh.to(tl.int64) * Lq
    for start_m in range(lo, Lq, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_ok = offs_m < Lq
        md_ok = m_ok[:, None] & d_ok[None, :]
        q_rows = q_base + offs_m[:, None] * sqm
        if ROPE:
            mr_ok = m_ok[:, None] & r_ok[None, :]
            q_even, q_odd = _load_pairs(q_rows, offs_r, sqd, mr_ok)
            cos_q, sin_q = _load_cos_sin(COS, SIN, Lk - Lq + offs_m, offs_r, D // 2, mr_ok)
            q_even, q_odd = _rotate(q_even, q_odd, cos_q, sin_q)
            qk_t = tl.dot(k_even, tl.trans(q_even), input_precision=DOT_PREC)
            qk_t += tl.dot(k_odd, tl.trans(q_odd), input_precision=DOT_PREC)  # (BLOCK_N, BLOCK_M)
        else:
            q = tl.load(q_rows + offs_d[None, :] * sqd, mask=md_ok, other=0.0)
            qk_t = tl.dot(k, tl.trans(q), input_precision=DOT_PREC)  # (BLOCK_N, BLOCK_M)
        do = tl.load(do_base + offs_m[:, None] * sdm + offs_d[None, :] * sdd, mask=md_ok, other=0.0)
        lse = tl.load(LSE + row_base + offs_m, mask=m_ok, other=float("inf"))  # rows past Lq: p = 0
        delta = tl.load(DELTA + row_base + offs_m, mask=m_ok, other=0.0)
        kvl = tl.load(KVLEN + offs_m, mask=m_ok, other=0)
        p_t = tl.math.exp2(qk_t * qk_scale - lse[None, :])
        p_t = tl.where(offs_n[:, None] < kvl[None, :], p_t, 0.0)
        dv += tl.dot(p_t.to(do.dtype), do, input_precision=DOT_PREC)
        dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)
        ds_t = (p_t * (dp_t - delta[None, :])).to(Q.dtype.element_ty)
        if ROPE:
            dk_even += tl.dot(ds_t, q_even, input_precision=DOT_PREC)
            dk_odd += tl.dot(ds_t, q_odd, input_precision=DOT_PREC)
        else:
            dk += tl.dot(ds_t, q, input_precision=DOT_PREC)

    dk_rows = DK + b * skb + h * skh + offs_n[:, None] * skn
    if ROPE:
        dk_even, dk_odd = _rotate_back(dk_even * sm_scale, dk_odd * sm_scale, cos_k, sin_k)
        tl.store(dk_rows + (2 * offs_r)[None, :] * skd, dk_even.to(DK.dtype.element_ty), mask=nr_ok)
        tl.store(dk_rows + (2 * offs_r + 1)[None, :] * skd, dk_odd.to(DK.dtype.element_ty), mask=nr_ok)
    else:
        tl.store(dk_rows + offs_d[None, :] * skd, (dk * sm_scale).to(DK.dtype.element_ty), mask=nd_ok)
    dv_off = b * svb + h * svh + offs_n[:, None] * svn + offs_d[None, :] * svd
    tl.store(DV + dv_off, dv.to(DV.dtype.element_ty), mask=nd_ok)


@triton.jit
def _attn_bwd_dq_kernel(Q, K, V, DO, DQ, LSE, DELTA, KVLEN, COS, SIN,
                        sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sdb, sdh, sdm, sdd,
                        H, Lq, Lk, D, sm_scale, qk_scale, TUNE_LQ, TUNE_LK,
                        ROPE: tl.constexpr, DOT_PREC: tl.constexpr, BLOCK_D: tl.constexpr,
                        BLOCK_R: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # DQ shares Q's strides.
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < Lq
    d_ok = offs_d < D
    md_ok = m_ok[:, None] & d_ok[None, :]
    q_rows = Q + b * sqb + h * sqh + offs_m[:, None] * sqm
    if ROPE:
        offs_r = tl.arange(0, BLOCK_R)
        r_ok = offs_r < D // 2
        mr_ok = m_ok[:, None] & r_ok[None, :]
        q_even, q_odd = _load_pairs(q_rows, offs_r, sqd, mr_ok)
        cos_q, sin_q = _load_cos_sin(COS, SIN, Lk - Lq + offs_m, offs_r, D // 2, mr_ok)
        q_even, q_odd = _rotate(q_even, q_odd, cos_q, sin_q)
        dq_even = tl.zeros([BLOCK_M, BLOCK_R], tl.float32)
        dq_odd = tl.zeros([BLOCK_M, BLOCK_R], tl.float32)
    else:
        q = tl.load(q_rows + offs_d[None, :] * sqd, mask=md_ok, other=0.0)
        dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    do = tl.load(DO + b * sdb + h * sdh + offs_m[:, None] * sdm + offs_d[None, :] * sdd, mask=md_ok, other=0.0)
    row_base = pid_bh.to(tl.int64) * Lq
    lse = tl.load(LSE + row_base + offs_m, mask=m_ok, other=float("inf"))
    delta = tl.load(DELTA + row_base + offs_m, mask=m_ok, other=0.0)
    kvl = tl.load(KVLEN + offs_m, mask=m_ok, other=0)
    hi = tl.max(kvl, axis=0)

    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < Lk
        nd_ok = n_ok[:, None] & d_ok[None, :]
        k_rows = k_base + offs_n[:, None] * skn
        if ROPE:
            nr_ok = n_ok[:, None] & r_ok[None, :]
            k_even, k_odd = _load_pairs(k_rows, offs_r, skd, nr_ok)
            cos_k, sin_k = _load_cos_sin(COS, SIN, offs_n, offs_r, D // 2, nr_ok)
            k_even, k_odd = _rotate(k_even, k_odd, cos_k, sin_k)
            qk = tl.dot(q_even, tl.trans(k_even), input_precision=DOT_PREC)
            qk += tl.dot(q_odd, tl.trans(k_odd), input_precision=DOT_PREC)
        else:
            k = tl.load(k_rows + offs_d[None, :] * skd, mask=nd_ok, other=0.0)
            qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)
        v = tl.load(v_base + offs_n[:, None] * svn + offs_d[None, :] * svd, mask=nd_ok, other=0.0)
        p = tl.math.exp2(qk * qk_scale - lse[:, None])
        p = tl.where(offs_n[None, :] < kvl[:, None], p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
        ds = (p * (dp - delta[:, None])).to(K.dtype.element_ty)
        if ROPE:
            dq_even += tl.dot(ds, k_even, input_precision=DOT_PREC)
            dq_odd += tl.dot(ds, k_odd, input_precision=DOT_PREC)
        else:
            dq += tl.dot(ds, k, input_precision=DOT_PREC)

    dq_rows = DQ + b * sqb + h * sqh + offs_m[:, None] * sqm
    if ROPE:
        dq_even, dq_odd = _rotate_back(dq_even * sm_scale, dq_odd * sm_scale, cos_q, sin_q)
        tl.store(dq_rows + (2 * offs_r)[None, :] * sqd, dq_even.to(DQ.dtype.element_ty), mask=mr_ok)
        tl.store(dq_rows + (2 * offs_r + 1)[None, :] * sqd, dq_odd.to(DQ.dtype.element_ty), mask=mr_ok)
    else:
        tl.store(dq_rows + offs_d[None, :] * sqd, (dq * sm_scale).to(DQ.dtype.element_ty), mask=md_ok)


# More than one autotune config fails in the interpreter, so the tuned launchers exist on GPU only.
# They are keyed on the lengths rounded up to powers of two (TUNE_LQ/TUNE_LK, unused in the
# kernels), so a sequence length that varies a little does not retune on every call.
if INTERPRETED:
    _fwd_tuned = _dkdv_tuned = _dq_tuned = None
else:
    _fwd_tuned = triton.autotune(_FWD_CONFIGS, key=["TUNE_LQ", "TUNE_LK", "BLOCK_D", "ROPE"])(_attn_fwd_kernel)
    _dkdv_tuned = triton.autotune(_BWD_CONFIGS, key=["TUNE_LQ", "TUNE_LK", "BLOCK_D", "ROPE"])(_attn_bwd_dkdv_kernel)
    _dq_tuned = triton.autotune(_BWD_CONFIGS, key=["TUNE_LQ", "TUNE_LK", "BLOCK_D", "ROPE"])(_attn_bwd_dq_kernel)


def _dot_precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"  # keep fp32 comparable with the reference unless the user opted into TF32
    return "tf32"


def _strides(t: torch.Tensor) -> tuple[int, int, int, int]:
    return tuple(t.stride())


def _launch(tuned, kernel, grid_len: int, BH: int, blocks: tuple[int, int] | None, dim_of_grid: str, *args,
            **meta):
    if blocks is None and tuned is not None:
        tuned[lambda m: (triton.cdiv(grid_len, m[dim_of_grid]), BH)](*args, **meta)
    else:
        bm, bn = blocks or (32, 32)
        size = {"BLOCK_M": bm, "BLOCK_N": bn}[dim_of_grid]
        kernel[(triton.cdiv(grid_len, size), BH)](*args, **meta, BLOCK_M=bm, BLOCK_N=bn)


def _meta(q: torch.Tensor, rope) -> dict:
    D = q.shape[3]
    return dict(ROPE=rope is not None, DOT_PREC=_dot_precision(q.dtype), BLOCK_D=max(16, next_pow2(D)),
                BLOCK_R=max(16, next_pow2(D // 2)))


def _forward(q, k, v, kv_len, sm_scale, blocks, rope):
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty((B * H, Lq), dtype=torch.float32, device=q.device)
    cos, sin = rope if rope is not None else (lse, lse)  # unused placeholders without RoPE
    _launch(_fwd_tuned, _attn_fwd_kernel, Lq, B * H, blocks, "BLOCK_M",
            q, k, v, o, lse, kv_len, cos, sin, *_strides(q), *_strides(k), *_strides(v), *_strides(o),
            H, Lq, Lk, D, sm_scale * _LOG2E, next_pow2(Lq), next_pow2(Lk), **_meta(q, rope))
    return o, lse


def _backward(do, q, k, v, o, lse, kv_len, q_start, sm_scale, blocks, rope):
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    if INTERPRETED or do.stride(-1) != 1:
        do = do.contiguous()
    delta = (o.float() * do.float()).sum(-1).reshape(B * H, Lq)  # rowsum(dO * O), the softmax-backward term
    # Gradients take the strides of the tensors they belong to: allocate them contiguous like q/k/v.
    dq, dk, dv = (torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v))
    k, v, q = (t if t.is_contiguous() else t.contiguous() for t in (k, v, q))
    cos, sin = rope if rope is not None else (lse, lse)
    common = (*_strides(q), *_strides(k), *_strides(v), *_strides(do), H, Lq, Lk, D, sm_scale, sm_scale * _LOG2E,
              next_pow2(Lq), next_pow2(Lk))
    _launch(_dkdv_tuned, _attn_bwd_dkdv_kernel, Lk, B * H, blocks, "BLOCK_N",
            q, k, v, do, dk, dv, lse, delta, kv_len, q_start, cos, sin, *common, **_meta(q, rope))
    _launch(_dq_tuned, _attn_bwd_dq_kernel, Lq, B * H, blocks, "BLOCK_M",
            q, k, v, do, dq, lse, delta, kv_len, cos, sin, *common, **_meta(q, rope))
    return dq, dk, dv


class BlockCausalAttention(torch.autograd.Function):
    """Autograd wrapper: forward and backward both in Triton (gradients flow to q, k, v; the
    RoPE tables are constants)."""

    @staticmethod
    def forward(ctx, q, k, v, kv_len, q_start, sm_scale, blocks, cos, sin):
        rope = None if cos is None else (cos, sin)
        o, lse = _forward(q, k, v, kv_len, sm_scale, blocks, rope)
        ctx.save_for_backward(q, k, v, o, lse, kv_len, q_start, *(rope or ()))
        ctx.sm_scale = sm_scale
        ctx.blocks = blocks
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, kv_len, q_start, *rope = ctx.saved_tensors
        dq, dk, dv = _backward(do, q, k, v, o, lse, kv_len, q_start, ctx.sm_scale, ctx.blocks,
                               tuple(rope) if rope else None)
        return dq, dk, dv, None, None, None, None, None, None


def block_causal_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale_ids_L: torch.Tensor,
                                  scale: float | None = None, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                                  block_m: int | None = None, block_n: int | None = None) -> torch.Tensor:
    """Block-causal attention over (B, H, L, D) tensors, differentiable in q, k and v.

    ``scale_ids_L`` (length Lk, non-decreasing) gives each token's scale; queries are the last
    Lq tokens. ``rope=(cos_LP, sin_LP)`` (Lk x D/2 tables) rotates q and k inside the kernel
    exactly as ``reference.apply_rope_torch`` does (pair i = dims 2i, 2i+1; queries use the
    last Lq rows). ``block_m``/``block_n`` pin the tile sizes (tests), otherwise autotuned on GPU.
    """
    if q.dim() != 4 or k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"q, k, v must be (B, H, L, D) with matching B, H, D; got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"q, k, v must share one of float16/bfloat16/float32, got {q.dtype}, {k.dtype}, {v.dtype}")
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    if D > 256:
        raise ValueError(f"head dim {D} > 256 is not supported by the Triton kernel; use kernels=torch")
    if scale_ids_L.numel() != Lk:
        raise ValueError(f"scale_ids has {scale_ids_L.numel()} entries but there are {Lk} keys")
    check_device(INTERPRETED, q, k, v)
    if INTERPRETED and q.dtype == torch.bfloat16:
        raise ValueError("Triton's interpreter computes bf16 dots wrongly; test with float16/float32")
    cos = sin = None
    if rope is not None:
        cos, sin = (t.to(device=q.device, dtype=torch.float32).contiguous() for t in rope)
        if D % 2 or cos.shape != (Lk, D // 2) or sin.shape != (Lk, D // 2):
            raise ValueError(f"rope tables must be (L_keys, head_dim/2) = ({Lk}, {D // 2}) with an even head dim; "
                             f"got cos {tuple(cos.shape)}, sin {tuple(sin.shape)}")
    if (block_m is None) != (block_n is None):
        raise ValueError("give both block_m and block_n, or neither")
    blocks = None if block_m is None else (int(block_m), int(block_n))
    if blocks is None and INTERPRETED:
        blocks = (32, 32)
    if blocks is not None and any(b < 16 or b & (b - 1) for b in blocks):
        raise ValueError(f"block sizes {blocks} must be powers of two >= 16")
    if INTERPRETED:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # the interpreter reads storage order
    kv_len, q_start = visible_key_lengths(scale_ids_L.to(q.device), Lq)
    if Lq and int(kv_len[0]) == 0:
        raise ValueError("a query sees no key at all (its scale is below every key's); check scale_ids")
    sm_scale = float(scale) if scale is not None else 1.0 / math.sqrt(D)
    return BlockCausalAttention.apply(q, k, v, kv_len, q_start, sm_scale, blocks, cos, sin)
