"""Multi-scale quantizer: Phi map, code look-up, round trips, usage statistics, dead codes."""

import numpy as np
import pytest
import torch

from hartkit.tokenizers.quantizer import (
    ContinuousScaleWalk,
    MultiScaleQuantizer,
    perplexity,
    phi_index_map,
    phi_ticks,
    usage_stats,
)


def test_phi_map_for_var_default_10_scales():
    assert phi_index_map(10, 4) == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]


def test_phi_map_float32_trap_is_avoided():
    # the same formula in float32 breaks the ties at scales 2 and 7 the other way
    ticks32 = phi_ticks(4).astype(np.float32)
    f32 = [int(np.argmin(np.abs(ticks32 - np.float32(k) / np.float32(9)))) for k in range(10)]
    assert f32 != phi_index_map(10, 4)


def test_phi_map_variants():
    assert phi_index_map(6, 0) == list(range(6))  # non-shared: one per scale
    assert phi_index_map(6, 1) == [0] * 6  # shared
    m = phi_index_map(14, 4)
    assert m[0] == 0 and m[-1] == 3 and m == sorted(m)
    with pytest.raises(ValueError):
        phi_index_map(6, -1)


def _single_scale_quantizer(cosine=False):
    torch.manual_seed(0)
    q = MultiScaleQuantizer(vocab_size=16, channels=4, patch_nums=(4,), num_phi=1, using_znorm=cosine,
                            phi_on_last_scale=False)
    q.embedding.weight.data = torch.randn(16, 4) * 3
    return q


@pytest.mark.parametrize("cosine", [False, True])
def test_codebook_entries_are_recovered_exactly(cosine):
    q = _single_scale_quantizer(cosine)
    idx = torch.randint(0, 16, (2, 16))
    f = q.embed_scale(idx, 0).contiguous()  # a latent made of codebook entries
    indices, f_hat = q.encode_indices(f)
    assert torch.equal(indices[0], idx)
    assert torch.equal(f_hat, f)


def test_nearest_code_of_perturbed_entries():
    q = _single_scale_quantizer()
    idx = torch.randint(0, 16, (3, 16))
    f = q.embed_scale(idx, 0) + 1e-3 * torch.randn(3, 4, 4, 4)
    assert torch.equal(q.encode_indices(f)[0][0], idx)


def test_training_walk_matches_inference_walk():
    torch.manual_seed(1)
    q = MultiScaleQuantizer(vocab_size=32, channels=4, patch_nums=(1, 2, 3, 4), num_phi=4)
    q.embedding.weight.data.normal_()
    f = torch.randn(2, 4, 4, 4)
    out = q(f)
    indices, f_hat = q.encode_indices(f)
    for a, b in zip(out.indices, indices):
        assert torch.equal(a, b)
    torch.testing.assert_close(out.f_hat, f_hat, atol=1e-5, rtol=0)
    torch.testing.assert_close(q.indices_to_f_hat(indices, (4, 4)), f_hat, atol=1e-5, rtol=0)
    assert out.vq_loss.ndim == 0 and out.vq_loss > 0


def test_phi_on_last_scale_switch_changes_f_hat():
    torch.manual_seed(2)
    q = MultiScaleQuantizer(vocab_size=8, channels=4, patch_nums=(1, 2), num_phi=4)
    q.embedding.weight.data.normal_()
    idx = [torch.randint(0, 8, (1, 1)), torch.randint(0, 8, (1, 4))]
    with_phi = q.indices_to_f_hat(idx, (2, 2))
    q.phi_on_last_scale = False
    without = q.indices_to_f_hat(idx, (2, 2))
    assert not torch.allclose(with_phi, without)
    # without Phi, the last scale enters f_hat as the raw code embedding
    first = q.upsample_scale(q.embed_scale(idx[0], 0), 0, (2, 2))
    torch.testing.assert_close(without - first, q.embed_scale(idx[1], 1))


def test_continuous_walk_is_exact():
    walk = ContinuousScaleWalk(4, (1, 2, 3, 6))
    f = torch.randn(2, 4, 6, 6)
    out = walk(f)
    assert [tuple(s.shape) for s in out.scales] == [(2, 4, p, p) for p in (1, 2, 3, 6)]
    torch.testing.assert_close(out.f_hat, f, atol=1e-6, rtol=0)
    torch.testing.assert_close(walk.scales_to_f_hat(out.scales, (6, 6)), f, atol=1e-6, rtol=0)


def test_usage_and_perplexity():
    hits = torch.tensor([[4.0, 0, 0, 0], [1, 1, 1, 1]])
    s = usage_stats(hits)
    assert s["codebook_usage/scale_0"] == 0.25 and s["codebook_usage/scale_1"] == 1.0
    assert s["perplexity/scale_0"] == pytest.approx(1.0)
    assert s["perplexity/scale_1"] == pytest.approx(4.0)
    assert perplexity(torch.zeros(4)) == 0.0


def test_dead_codes_get_reinitialised():
    torch.manual_seed(3)
    q = MultiScaleQuantizer(vocab_size=64, channels=4, patch_nums=(1, 2, 4), num_phi=4)
    q.embedding.weight.data.fill_(0.0)
    q.embedding.weight.data[0] = 0.01  # all other codes tie: at most codes 0 and 1 get used
    q.train()
    f = torch.randn(8, 4, 4, 4)
    before = q(f).stats["codebook_usage"]
    n = q.reinit_dead_codes(threshold=0.5)
    after = q(f).stats["codebook_usage"]
    used_before = round(before * 64)
    assert used_before <= 2 and n == 64 - used_before
    assert after > 0.2
