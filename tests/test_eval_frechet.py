"""Streaming Fréchet statistics: agreement with clean-fid, exact sharding, cached references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cleanfid import fid as cleanfid_fid

from hartkit.eval.frechet import (
    FrechetStats,
    cached_reference_stats,
    compute_fd,
    load_stats,
    save_stats,
    stats_cache_path,
)


def _feats(n=400, d=16, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mix + shift


def test_fd_of_a_set_with_itself_is_zero():
    stats = FrechetStats.from_features(_feats())
    assert abs(compute_fd(stats, stats)) < 1e-6


def test_streaming_fd_matches_clean_fid_on_the_same_features():
    a, b = _feats(seed=1), _feats(seed=2, shift=0.3)
    streamed_a, streamed_b = FrechetStats(a.shape[1]), FrechetStats(b.shape[1])
    for s in range(0, len(a), 37):  # uneven batches
        streamed_a.update(torch.from_numpy(a[s : s + 37]).float())
        streamed_b.update(torch.from_numpy(b[s : s + 37]).float())
    a32, b32 = a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)
    reference = cleanfid_fid.frechet_distance(a32.mean(0), np.cov(a32, rowvar=False),
                                              b32.mean(0), np.cov(b32, rowvar=False))
    ours = compute_fd(streamed_a, streamed_b)
    assert reference > 0.1
    assert abs(ours - reference) / reference < 1e-4


def test_fd_grows_with_the_distance_between_feature_sets():
    ref = FrechetStats.from_features(_feats(seed=3))
    values = [compute_fd(FrechetStats.from_features(_feats(seed=4, shift=s)), ref) for s in (0.0, 0.2, 0.5, 1.0)]
    assert values == sorted(values) and values[-1] > values[0]


def test_sharded_statistics_equal_unsharded():
    a, b = _feats(seed=5), _feats(seed=6, shift=0.1)
    whole = FrechetStats.from_features(a)
    shard1, shard2 = FrechetStats.from_features(a[:150]), FrechetStats.from_features(a[150:])
    merged = FrechetStats(a.shape[1]).merge(shard1).merge(shard2)
    ref = FrechetStats.from_features(b)
    assert merged.count == whole.count
    assert torch.allclose(merged.outer_DD, whole.outer_DD, rtol=1e-12, atol=1e-9)
    assert compute_fd(merged, ref) == pytest.approx(compute_fd(whole, ref), rel=1e-9)
    # all_reduce in one process leaves the sums unchanged (the torchrun path sums over ranks)
    assert compute_fd(merged.all_reduce(), ref) == pytest.approx(compute_fd(whole, ref), rel=1e-9)


def test_bad_features_are_rejected():
    stats = FrechetStats(4)
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        stats.update(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="NaN"):
        stats.update(torch.full((2, 4), float("nan")))
    stats.update(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="at least 2"):
        stats.mean_cov()


def test_reference_cache_round_trip_and_key_check(tmp_path):
    stats = FrechetStats.from_features(_feats(seed=7))
    path = stats_cache_path(tmp_path, "embedded|synthscenes|test|n400")
    save_stats(path, stats, "embedded|synthscenes|test|n400")
    assert not list(tmp_path.glob("*.tmp"))
    back = load_stats(path, "embedded|synthscenes|test|n400")
    assert back.count == stats.count and torch.equal(back.outer_DD, stats.outer_DD)
    assert load_stats(path, "another protocol") is None  # a key mismatch is never reused
    path.write_bytes(b"garbage")
    assert load_stats(path, "embedded|synthscenes|test|n400") is None


def test_cached_reference_stats_computes_once(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return FrechetStats.from_features(_feats(seed=8))

    first, hit1 = cached_reference_stats(tmp_path, "key-a", compute)
    second, hit2 = cached_reference_stats(tmp_path, "key-a", compute)
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    assert compute_fd(first, second) == pytest.approx(0.0, abs=1e-6)


def _shard_worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        a = _feats(seed=9)
        shard = FrechetStats.from_features(a[rank::world]).all_reduce()
        if rank == 0:
            ref = FrechetStats.from_features(_feats(seed=10, shift=0.2))
            np.save(out_file, np.array([compute_fd(shard, ref), shard.count], dtype=np.float64))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_all_reduce_over_two_gloo_ranks_equals_unsharded(tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "fd.npy"
    mp.spawn(_shard_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    fd_sharded, count = np.load(out)
    ref = FrechetStats.from_features(_feats(seed=10, shift=0.2))
    assert count == 400
    assert fd_sharded == pytest.approx(compute_fd(FrechetStats.from_features(_feats(seed=9)), ref), rel=1e-9)
