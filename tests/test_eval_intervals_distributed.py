"""Under torchrun, per-image values and features are gathered over ranks: the same numbers and intervals."""

from __future__ import annotations

import json

import pytest
import torch


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 3, 16, 16, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ref = torch.rand(40, 3, 16, 16, generator=g)
    return x, y, ref


def _score(x, y, ref, gen_slice, distributed):
    from omegaconf import OmegaConf

    from hartkit.eval.generation import GenerationMetrics
    from hartkit.eval.reconstruction import ReconstructionMetrics

    cfg = OmegaConf.create({"fd_features": ["fd_test"], "clip_score": [], "prompt_accuracy": False,
                            "per_category": False, "stats_cache": "/nonexistent"})
    r = ReconstructionMetrics(cfg)
    r.update(x[gen_slice], y[gen_slice])
    g = GenerationMetrics(cfg, distributed=distributed)
    g.add_reference(ref[gen_slice])
    g.sync_reference()
    g.update(y[gen_slice])
    return {"recon": r.compute(), "recon_ci": r.intervals(200, 20),
            "gen": g.compute(), "gen_ci": g.intervals(200, 20)}


def _worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist
    from eval_fakes import PooledPixels

    from hartkit.eval import features

    torch.set_num_threads(1)
    features.EXTRACTORS["fd_test"] = lambda cfg, device: PooledPixels()
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x, y, ref = _data()
        half = slice(rank * 20, rank * 20 + 20)  # contiguous shards: gathered order = single-process order
        out = _score(x, y, ref, half, None)
        if rank == 0:
            with open(out_file, "w") as fh:
                json.dump(out, fh)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_give_the_single_process_numbers_and_intervals(tmp_path, monkeypatch):
    import torch.multiprocessing as mp
    from eval_fakes import install

    install(monkeypatch)
    out = tmp_path / "out.json"
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    sharded = json.loads(out.read_text())
    x, y, ref = _data()
    single = _score(x, y, ref, slice(0, 40), False)
    for part in ("recon", "gen"):
        for k, v in single[part].items():
            # float64 sums in another order: equal to round-off relative to the value
            assert sharded[part][k] == pytest.approx(v, rel=1e-9, abs=1e-9), (part, k)
    for part in ("recon_ci", "gen_ci"):
        assert set(sharded[part]) == set(single[part])
        for k, (lo, hi) in single[part].items():
            assert sharded[part][k] == pytest.approx([lo, hi], rel=1e-6, abs=1e-9), (part, k)
