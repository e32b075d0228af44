"""Kernel dispatch, the public ops on CPU, and the PyTorch references against each other."""

from __future__ import annotations

import logging

import pytest
import torch

from hartkit.kernels import block_causal_attention, dispatch, get_backend, nearest_code, set_backend
from hartkit.kernels.reference import (
    apply_rope_torch,
    block_causal_attention_math,
    block_causal_attention_torch,
    nearest_code_naive,
    nearest_code_torch,
)


@pytest.fixture(autouse=True)
def _restore_backend(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    before = get_backend()
    yield
    dispatch._BACKEND = before


def test_auto_uses_torch_on_cpu_and_logs_one_line(caplog):
    with caplog.at_level(logging.INFO, logger="hartkit.kernels.dispatch"):
        set_backend("auto")
    lines = [r.getMessage() for r in caplog.records if r.name == "hartkit.kernels.dispatch"]
    assert len(lines) == 1 and "kernels=auto" in lines[0]
    if not torch.cuda.is_available():
        assert "torch implementation" in lines[0]
    assert dispatch.resolve(torch.device("cpu")) == "torch"


def test_auto_picks_triton_on_cuda_only_when_triton_imports(monkeypatch):
    set_backend("auto")
    monkeypatch.setattr(dispatch, "triton_available", lambda: True)
    assert dispatch.resolve(torch.device("cuda")) == "triton"
    assert dispatch.resolve(torch.device("cpu")) == "torch"
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    assert dispatch.resolve(torch.device("cuda")) == "torch"


def test_triton_without_triton_raises_clearly(monkeypatch):
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    with pytest.raises(RuntimeError, match="Triton does not import.*kernels=torch"):
        set_backend("triton")


def test_triton_on_cpu_tensors_raises_clearly(monkeypatch):
    monkeypatch.setattr(dispatch, "triton_available", lambda: True)
    dispatch._BACKEND = "triton"
    with pytest.raises(RuntimeError, match="needs CUDA tensors, got cpu"):
        nearest_code(torch.randn(4, 3), torch.randn(5, 3))


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="kernels='cuda' is unknown"):
        set_backend("cuda")


def test_torch_backend_is_forced_everywhere():
    set_backend("torch")
    assert dispatch.resolve(torch.device("cuda")) == "torch"


@pytest.mark.parametrize("cosine", [False, True])
def test_nearest_code_op_on_cpu_matches_naive_with_chunks_smaller_than_n(cosine):
    set_backend("auto")
    g = torch.Generator().manual_seed(0)
    z, e = torch.randn(301, 12, generator=g), torch.randn(97, 12, generator=g)
    got = nearest_code(z, e, cosine=cosine, chunk=64)  # 5 chunks, the last partial
    assert torch.equal(got, nearest_code_naive(z, e, cosine=cosine))
    assert torch.equal(got, nearest_code_torch(z, e, cosine=cosine, chunk=4096))


def test_nearest_code_op_returns_differentiable_codes():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(50, 8, generator=g)
    e = torch.randn(20, 8, generator=g, requires_grad=True)
    idx, codes = nearest_code(z, e, return_codes=True)
    assert torch.equal(codes, e.detach()[idx])
    codes.sum().backward()
    assert torch.equal(e.grad[:, 0], torch.bincount(idx, minlength=20).float())


def test_nearest_code_references_break_ties_to_the_lowest_index():
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    assert nearest_code_torch(z, e).tolist() == [0, 1, 0]
    assert nearest_code_naive(z, e).tolist() == [0, 1, 0]


def test_attention_op_on_cpu_matches_the_textbook_reference_and_kv_cache_rows():
    set_backend("auto")
    sid = torch.repeat_interleave(torch.arange(4), torch.tensor([3, 1, 4, 9]))
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 2, 17, 8, generator=g) for _ in range(3))
    out = block_causal_attention(q, k, v, sid)
    torch.testing.assert_close(out, block_causal_attention_math(q, k, v, sid), atol=1e-5, rtol=1e-5)
    # The first query sees only the 3 text tokens; the last scale's queries see everything.
    torch.testing.assert_close(out[:, :, 0], torch.softmax(q[:, :, :1] @ k[:, :, :3].transpose(-1, -2) / 8**0.5, -1)
                               .matmul(v[:, :, :3]).squeeze(2), atol=1e-5, rtol=1e-5)
    tail = block_causal_attention(q[:, :, -9:], k, v, sid)  # KV-cache decoding of the last scale
    torch.testing.assert_close(tail, out[:, :, -9:], atol=1e-5, rtol=1e-5)
    unmasked = block_causal_attention_torch(q, k, v, None)
    torch.testing.assert_close(unmasked, torch.nn.functional.scaled_dot_product_attention(q, k, v))


def test_rope_reference_rotates_consecutive_pairs_and_ops_apply_it():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 4)
    cos = torch.tensor([[0.0, 1.0]])  # pair 0 turned by 90 degrees, pair 1 kept
    sin = torch.tensor([[1.0, 0.0]])
    assert apply_rope_torch(x, cos, sin).flatten().tolist() == [-2.0, 1.0, 3.0, 4.0]
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, 6, 4, generator=g) for _ in range(3))
    ang = torch.rand(6, 2, generator=g) * 3
    sid = torch.tensor([0, 0, 1, 1, 1, 2])
    got = block_causal_attention(q, k, v, sid, rope=(ang.cos(), ang.sin()))
    want = block_causal_attention_math(apply_rope_torch(q, ang.cos(), ang.sin()),
                                       apply_rope_torch(k, ang.cos(), ang.sin()), v, sid)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
