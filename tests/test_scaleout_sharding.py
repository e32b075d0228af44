"""Sharded evaluation: rank r scores items r::W (as recon_eval and gen_eval split their work); merged statistics
equal the single-process ones."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hartkit.eval.frechet import FrechetStats, compute_fd

CATEGORIES = ["animals", "people", "objects"]


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """The items rank ``rank`` of ``world`` scores: every world-th one, from its rank on."""
    return list(range(rank, n, world))


def gather_names(local: list[str]) -> list[str]:
    """Every rank's names back in item order (rank r held items r, r + W, ...)."""
    world = dist.get_world_size()
    parts: list = [None] * world
    dist.all_gather_object(parts, local)
    out: list = [None] * sum(len(p) for p in parts)
    for r, part in enumerate(parts):
        out[r::world] = part
    return out


def test_frechet_sums_of_shards_merge_exactly():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(41, 8, generator=g, dtype=torch.float64), torch.randn(37, 8, generator=g, dtype=torch.float64) + 0.3
    whole = compute_fd(FrechetStats.from_features(a), FrechetStats.from_features(b))
    merged = FrechetStats(8)
    for r in range(3):
        merged.merge(FrechetStats.from_features(a[shard_indices(len(a), r, 3)]))
    assert compute_fd(merged, FrechetStats.from_features(b)) == pytest.approx(whole, rel=1e-9, abs=1e-12)


def _images(seed: int, n: int = 30) -> tuple[torch.Tensor, list[str]]:
    g = torch.Generator().manual_seed(seed)
    imgs = torch.rand(n, 3, 32, 32, generator=g)
    imgs[: n // 2] *= 0.6  # two populations, so the distance is far from zero
    return imgs, [CATEGORIES[i % len(CATEGORIES)] for i in range(n)]


def _metrics():
    from omegaconf import OmegaConf

    from hartkit.eval.generation import GenerationMetrics

    cfg = OmegaConf.create({"fd_features": ["fd_embedded"], "clip_score": [], "prompt_accuracy": False,
                            "per_category": True})
    return GenerationMetrics(cfg, "cpu")


def _score(rank: int | None, world: int | None) -> tuple[dict, list[str]]:
    ref, ref_cats = _images(0)
    gen, gen_cats = _images(1)
    m = _metrics()
    mine_ref = shard_indices(len(ref), rank, world) if rank is not None else list(range(len(ref)))
    mine_gen = shard_indices(len(gen), rank, world) if rank is not None else list(range(len(gen)))
    for chunk in (mine_ref[:4], mine_ref[4:]):  # several batches per rank, as a loader would give
        m.add_reference(ref[chunk], [ref_cats[i] for i in chunk])
    m.sync_reference()
    m.update(gen[mine_gen], None, [gen_cats[i] for i in mine_gen])
    local = [f"sample_{i:05d}.png" for i in mine_gen]
    names = gather_names(local) if rank is not None else local
    return m.compute(), names


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        metrics, names = _score(rank, world)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"metrics": metrics, "names": names}))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_give_the_single_process_fd(tmp_path):
    world = 2
    mp.start_processes(_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world,
                       start_method="spawn", join=True)
    single, names = _score(None, None)
    for r in range(world):
        got = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert got["names"] == names == [f"sample_{i:05d}.png" for i in range(30)]
        assert got["metrics"].keys() == single.keys()
        # per-category FD is not reported on fewer images than feature dimensions (10 here vs 64); KID is
        assert {"fd_embedded", "kid_embedded", "kid_embedded/animals", "num_images", "num_reference"} <= single.keys()
        assert "fd_embedded/animals" not in single
        assert single["fd_embedded"] > 1e-3
        for key, value in single.items():  # float64 sums in another order: equal to rounding
            assert got["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
