"""Triton kernels against their PyTorch references.

On a CPU the kernels run in Triton's interpreter, which needs ``TRITON_INTERPRET=1`` before
Triton itself is first imported (Triton's own library functions, e.g. the argmin combiner, are
``@triton.jit`` functions built at import). In a full pytest session torchvision has long imported
Triton by then, so on CPU this module runs its own tests in a fresh ``pytest`` subprocess with the
variable set (``test_kernels_in_triton_interpreter``). They run in-process when the process was
started with ``TRITON_INTERPRET=1`` (that subprocess) or when CUDA is available and the variable
is unset (compiled kernels on the GPU: scripts/gpu_check.sh).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed (it is on Linux; these tests need it)")


def _triton_built_interpreted() -> bool:
    """Whether Triton's own jit library functions were built by the interpreter (env set before import)."""
    import triton.language.standard as std
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(std.cdiv, InterpretedFunction)


_INTERPRET_ENV = os.environ.get("TRITON_INTERPRET", "0") == "1"
INTERPRET = _INTERPRET_ENV and _triton_built_interpreted()
ON_GPU = torch.cuda.is_available() and not _INTERPRET_ENV
RUN_HERE = ON_GPU or INTERPRET
DEVICE = torch.device("cuda" if ON_GPU else "cpu")

from hartkit.kernels.block_mask import key_tiles_visited, visible_key_lengths  # noqa: E402
from hartkit.kernels.reference import (  # noqa: E402
    apply_rope_torch,
    block_causal_attention_math,
    block_causal_attention_torch,
    nearest_code_naive,
    nearest_code_torch,
    scale_mask,
)
from hartkit.kernels.triton_attention import block_causal_attention_triton  # noqa: E402
from hartkit.kernels.triton_nearest_code import nearest_code_triton  # noqa: E402


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=_gen(seed)).to(device=DEVICE, dtype=dtype)


# ----------------------------------------------------------------------------- nearest_code


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("cosine", [False, True])
@pytest.mark.parametrize("blocks", [(16, 64), (None, None)], ids=["tiles16x64", "default"])
def test_nearest_code_matches_reference(dtype, cosine, blocks):
    # N=37, V=300, C=20: none divides a tile, V is not a power of two, C is padded to 32.
    z, e = _randn(37, 20, seed=1, dtype=dtype), _randn(300, 20, seed=2, dtype=dtype)
    got = nearest_code_triton(z, e, cosine=cosine, block_n=blocks[0], block_v=blocks[1])
    want = nearest_code_torch(z, e, cosine=cosine)
    assert got.dtype == torch.long and got.shape == (37,)
    assert torch.equal(got, want)


def test_nearest_code_ties_go_to_lowest_index_across_and_within_tiles():
    e = _randn(300, 20, seed=3)
    # The same vector at 5 (tile 0), 40 (tile 0) and 250 (tile 3 with block_v=64); another at 100 and 299.
    e[40] = e[5]
    e[250] = e[5]
    e[299] = e[100]
    z = torch.stack([e[5], e[250], e[299], e[100]])
    got = nearest_code_triton(z, e, block_n=16, block_v=64)
    assert got.tolist() == [5, 5, 100, 100]
    assert torch.equal(got, nearest_code_torch(z, e))


def test_nearest_code_recovers_codebook_rows_exactly():
    e = _randn(300, 20, seed=4)
    perm = torch.randperm(300, generator=_gen(5)).to(DEVICE)
    for cosine in (False, True):
        assert torch.equal(nearest_code_triton(e[perm], e, cosine=cosine, block_n=32, block_v=128), perm)


@pytest.mark.parametrize("n,v,c", [(20, 50, 256), (7, 65536, 4), (40, 17, 1)])
def test_nearest_code_extreme_sizes(n, v, c):
    z, e = _randn(n, c, seed=6), _randn(v, c, seed=7)
    assert torch.equal(nearest_code_triton(z, e), nearest_code_naive(z, e))


def test_nearest_code_fused_gather_and_codebook_gradient():
    z = _randn(37, 20, seed=8)
    e = _randn(300, 20, seed=9).requires_grad_()
    idx, codes = nearest_code_triton(z, e, return_codes=True, block_n=16, block_v=64)
    assert torch.equal(codes, e.detach()[idx])
    weight = _randn(37, 20, seed=10)
    (codes * weight).sum().backward()
    e_ref = e.detach().clone().requires_grad_()
    (e_ref[idx] * weight).sum().backward()
    torch.testing.assert_close(e.grad, e_ref.grad)


def test_nearest_code_rejects_bad_input():
    with pytest.raises(ValueError, match="C <= 256"):
        nearest_code_triton(_randn(4, 257), _randn(8, 257))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        nearest_code_triton(_randn(4, 8), _randn(8, 9))
    with pytest.raises(ValueError, match="power of two"):
        nearest_code_triton(_randn(4, 8), _randn(8, 8), block_n=24)


# ----------------------------------------------------------------------------- attention


def _scale_ids(sizes) -> torch.Tensor:
    """Scale id per token: scale 0 = a text prefix of sizes[0] tokens, then the image scales."""
    return torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)).to(DEVICE)


SIDS_45 = [5, 1, 4, 9, 16, 10]  # L = 45: text prefix of 5, then scales of 1, 4, 9, 16, 10 tokens
TOL = {torch.float32: dict(atol=2e-5, rtol=1e-4), torch.float16: dict(atol=3e-3, rtol=3e-3),
       torch.bfloat16: dict(atol=4e-2, rtol=4e-2)}  # bf16 has 3 mantissa bits fewer than fp16


def _qkv(B, H, Lq, Lk, D, dtype, seed=0):
    q = _randn(B, H, Lq, D, seed=seed, dtype=dtype).requires_grad_()
    k = _randn(B, H, Lk, D, seed=seed + 1, dtype=dtype).requires_grad_()
    v = _randn(B, H, Lk, D, seed=seed + 2, dtype=dtype).requires_grad_()
    return q, k, v


def _reference_fwd_bwd(q, k, v, sid, grad, scale=None, rope=None):
    """The SDPA + dense mask reference in float32, with its autograd gradients."""
    qf, kf, vf = (t.detach().float().requires_grad_() for t in (q, k, v))
    out = block_causal_attention_torch(qf, kf, vf, sid, scale=scale, rope=rope)
    return (out, *torch.autograd.grad(out, (qf, kf, vf), grad.float()))


# (dtype, tiles): None = the default tiles (autotuned on a GPU; every config is a compile, so
# not for float32, whose IEEE dots compile slowly).
ATTENTION_CASES = [(torch.float32, (16, 16)), (torch.float32, (32, 16)), (torch.float16, (16, 16)),
                   (torch.float16, (None, None))] + ([(torch.bfloat16, (None, None)), (torch.bfloat16, (32, 16))]
                                                     if ON_GPU else [])


@pytest.mark.parametrize("dtype,blocks", ATTENTION_CASES,
                         ids=[f"{str(d)[6:]}-{f'{b[0]}x{b[1]}' if b[0] else 'default'}" for d, b in ATTENTION_CASES])
def test_attention_forward_and_gradients_match_reference(dtype, blocks):
    sid = _scale_ids(SIDS_45)
    q, k, v = _qkv(2, 2, 45, 45, 16, dtype)
    out = block_causal_attention_triton(q, k, v, sid, block_m=blocks[0], block_n=blocks[1])
    grad = _randn(*out.shape, seed=7, dtype=dtype)
    got = (out, *torch.autograd.grad(out, (q, k, v), grad))
    want = _reference_fwd_bwd(q, k, v, sid, grad)
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
        assert g.dtype == dtype, name
        torch.testing.assert_close(g.float(), w, **TOL[dtype], msg=lambda m, n=name: f"{n}: {m}")


def _rope_tables(L, D, seed=0):
    angles = torch.rand(L, D // 2, generator=_gen(seed)) * 6.3 * torch.arange(1, L + 1)[:, None] / L
    return angles.cos().to(DEVICE), angles.sin().to(DEVICE)


@pytest.mark.parametrize("head_dim,dtype", [(32, torch.float32), (32, torch.float16), (16, torch.float32),
                                             (24, torch.float16)], ids=["D32-fp32", "D32-fp16", "D16-fp32", "D24-fp16"])
def test_attention_fused_rope_forward_and_gradients(dtype, head_dim):
    # D=16: 8 rotation pairs padded to a 16-wide tile; D=24: 12 pairs, not a power of two.
    sid = _scale_ids(SIDS_45)
    rope = _rope_tables(45, head_dim, seed=head_dim)
    q, k, v = _qkv(1, 2, 45, 45, head_dim, dtype, seed=40)
    out = block_causal_attention_triton(q, k, v, sid, rope=rope, block_m=16, block_n=32)
    grad = _randn(*out.shape, seed=41, dtype=dtype)
    got = (out, *torch.autograd.grad(out, (q, k, v), grad))
    want = _reference_fwd_bwd(q, k, v, sid, grad, rope=rope)
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
        torch.testing.assert_close(g.float(), w, **TOL[dtype], msg=lambda m, n=name: f"{n}: {m}")
    # RoPE matters here: without it the output differs.
    assert not torch.allclose(out.float(), block_causal_attention_torch(q, k, v, sid).float(), **TOL[dtype])


def test_attention_fused_rope_with_kv_cache_queries():
    sid = _scale_ids(SIDS_45)
    rope = _rope_tables(45, 32, seed=5)
    q, k, v = _qkv(1, 2, 10, 45, 32, torch.float32, seed=42)
    out = block_causal_attention_triton(q, k, v, sid, rope=rope, block_m=16, block_n=16)
    want = block_causal_attention_torch(apply_rope_torch(q, *rope), apply_rope_torch(k, *rope), v, sid)
    torch.testing.assert_close(out, want, **TOL[torch.float32])


def test_attention_rejects_bad_rope_tables():
    sid = _scale_ids(SIDS_45)
    q, k, v = _qkv(1, 1, 45, 45, 16, torch.float32)
    with pytest.raises(ValueError, match=r"rope tables must be \(L_keys, head_dim/2\) = \(45, 8\)"):
        block_causal_attention_triton(q, k, v, sid, rope=_rope_tables(45, 32))


def test_attention_head_dim_not_power_of_two_and_custom_scale():
    sid = _scale_ids([3, 1, 4, 9, 4])
    q, k, v = _qkv(1, 3, 21, 21, 24, torch.float32, seed=3)
    out = block_causal_attention_triton(q, k, v, sid, scale=0.3, block_m=16, block_n=16)
    grad = _randn(*out.shape, seed=9)
    got = (out, *torch.autograd.grad(out, (q, k, v), grad))
    for g, w in zip(got, _reference_fwd_bwd(q, k, v, sid, grad, scale=0.3)):
        torch.testing.assert_close(g, w, **TOL[torch.float32])


def test_attention_strided_inputs_from_a_fused_qkv_projection():
    # The backbone splits one (B, L, 3, H, D) projection, so q, k, v arrive as strided views.
    sid = _scale_ids(SIDS_45)
    qkv = _randn(2, 45, 3, 2, 16, seed=21).requires_grad_()
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    assert not q.is_contiguous()
    out = block_causal_attention_triton(q, k, v, sid, block_m=16, block_n=32)
    grad = _randn(*out.shape, seed=22)
    (g_qkv,) = torch.autograd.grad(out, qkv, grad)
    qkv_ref = qkv.detach().clone().requires_grad_()
    qr, kr, vr = qkv_ref.permute(2, 0, 3, 1, 4).unbind(0)
    ref = block_causal_attention_torch(qr, kr, vr, sid)
    (g_ref,) = torch.autograd.grad(ref, qkv_ref, grad)
    torch.testing.assert_close(out, ref, **TOL[torch.float32])
    torch.testing.assert_close(g_qkv, g_ref, **TOL[torch.float32])


def test_public_ops_route_to_the_triton_kernels():
    from hartkit.kernels import ops

    z, e = _randn(37, 20, seed=31), _randn(300, 20, seed=32)
    assert torch.equal(ops.nearest_code(z, e, backend="triton"), nearest_code_torch(z, e))
    idx, codes = ops.nearest_code(z, e, backend="triton", return_codes=True)
    assert torch.equal(codes, e[idx])
    sid = _scale_ids(SIDS_45)
    q, k, v = _qkv(1, 2, 45, 45, 16, torch.float32, seed=33)
    out = ops.block_causal_attention(q, k, v, sid, backend="triton")
    assert out.grad_fn is not None and "BlockCausalAttention" in type(out.grad_fn).__name__
    torch.testing.assert_close(out, block_causal_attention_torch(q, k, v, sid), **TOL[torch.float32])


def test_attention_kv_cache_queries_are_the_last_tokens():
    sid = _scale_ids(SIDS_45)
    q, k, v = _qkv(1, 2, 10, 45, 16, torch.float32, seed=5)  # the last scale's 10 queries
    out = block_causal_attention_triton(q, k, v, sid, block_m=16, block_n=16)
    torch.testing.assert_close(out, block_causal_attention_torch(q, k, v, sid), **TOL[torch.float32])


def test_attention_single_scale_is_full_attention_and_math_reference_agrees():
    sid = torch.zeros(33, dtype=torch.long, device=DEVICE)
    q, k, v = _qkv(1, 2, 33, 33, 16, torch.float32, seed=11)
    full = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(block_causal_attention_triton(q, k, v, sid, block_m=16, block_n=16), full,
                               **TOL[torch.float32])
    sid = _scale_ids(SIDS_45)
    q, k, v = _qkv(1, 2, 45, 45, 16, torch.float32, seed=12)
    torch.testing.assert_close(block_causal_attention_math(q, k, v, sid), block_causal_attention_torch(q, k, v, sid),
                               **TOL[torch.float32])


def test_attention_rejects_bad_scale_ids():
    q, k, v = _qkv(1, 1, 6, 6, 16, torch.float32)
    with pytest.raises(ValueError, match="non-decreasing"):
        block_causal_attention_triton(q, k, v, torch.tensor([0, 1, 1, 0, 2, 2], device=DEVICE))
    with pytest.raises(ValueError, match="scale_ids has 5"):
        block_causal_attention_triton(q, k, v, torch.tensor([0, 1, 1, 2, 2], device=DEVICE))


def test_prefix_lengths_reproduce_the_dense_mask():
    sid = _scale_ids([2, 1, 4, 9, 16, 25]).cpu()
    kv_len, q_start = visible_key_lengths(sid, sid.numel())
    j = torch.arange(sid.numel())
    assert torch.equal(j[None, :] < kv_len[:, None].long(), scale_mask(sid))
    mask = scale_mask(sid)
    first_q = torch.where(mask.any(0), mask.float().argmax(0), torch.tensor(sid.numel()))
    assert torch.equal(q_start.long(), first_q)


def test_bench_runs_the_triton_rows(tmp_path):
    # On CPU (interpreter) this checks the harness around the Triton rows; on a GPU, the real thing.
    from hartkit.tools import bench_kernel_ops as bench

    out = tmp_path / "kernels.md"
    assert bench.main(["all", "--smoke", "--device", DEVICE.type, "--no-flex", "--out", str(out)]) == 0
    text = out.read_text()
    for method in ("Triton fused", "Triton fused + gather codes", "Triton block-causal flash", "Triton + fused RoPE"):
        rows = [line for line in text.splitlines() if line.startswith(f"| {method} |")]
        assert rows and all(float(r.split("|")[2]) > 0 for r in rows), method
    assert text.count("| 100.00% |") == 2 * 5  # every quantize method agrees with naive on both shapes


def test_tile_skipping_at_var_256():
    pns = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    sid = torch.repeat_interleave(torch.arange(10), torch.tensor(pns) ** 2)
    visited, total = key_tiles_visited(sid, 64, 64)
    assert sid.numel() == 680 and visited < total
    # A tile is skipped iff its first key's scale exceeds the query tile's last scale; recount from the mask.
    mask = scale_mask(sid)
    recount = sum(bool(mask[i:i + 64, j:j + 64].any()) for i in range(0, 680, 64) for j in range(0, 680, 64))
    assert visited == recount


if not RUN_HERE:
    # CPU without the interpreter set at start: the tests above cannot run in this process (see the
    # module docstring). Replace them by one test that runs them all in an interpreter subprocess.
    _CASES = sorted(name for name in globals() if name.startswith("test_"))
    for _name in _CASES:
        del globals()[_name]

    def test_kernels_in_triton_interpreter():
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        cmd = [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-o", "addopts="]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        report = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"Triton interpreter tests failed:\n{report[-6000:]}"
        assert " passed" in report and "skipped" not in report and "failed" not in report, report[-3000:]
