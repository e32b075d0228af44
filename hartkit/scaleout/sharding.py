"""Split evaluation work (prompts to generate, images to score) across ranks, and put results back in order.

Rank ``r`` of ``W`` takes items ``r, r + W, r + 2W, ...``: every rank gets a
share of every part of the list (MJHQ-30K's prompts are grouped by category, so
contiguous blocks would give one rank all the "people" prompts and a longer
run). Statistics that are sums (``hartkit.eval.frechet.FrechetStats``, CLIP
score sums, accuracy counts) merge exactly by an all-reduce; per-item results
(file names, failures) come back in the original order with ``gather_in_order``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import torch

from hartkit.utils import distributed as dist_utils

T = TypeVar("T")


def shard_indices(num_items: int, rank: int | None = None, world_size: int | None = None) -> list[int]:
    """The item indices of this rank: ``range(rank, num_items, world_size)``."""
    rank = dist_utils.rank() if rank is None else rank
    world_size = dist_utils.world_size() if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size} processes")
    if num_items < 0:
        raise ValueError(f"num_items must be >= 0, got {num_items}")
    return list(range(rank, num_items, world_size))


def shard(items: Sequence[T], rank: int | None = None, world_size: int | None = None) -> list[T]:
    """This rank's items (``items[rank::world_size]``)."""
    return [items[i] for i in shard_indices(len(items), rank, world_size)]


def shard_dataset(dataset, rank: int | None = None, world_size: int | None = None):
    """A ``torch.utils.data.Subset`` (or ``datasets.Dataset.select``) holding this rank's items."""
    idx = shard_indices(len(dataset), rank, world_size)
    if hasattr(dataset, "select") and not isinstance(dataset, torch.utils.data.Dataset):
        return dataset.select(idx)  # Hugging Face datasets
    return torch.utils.data.Subset(dataset, idx)


def unshard(parts: Sequence[Sequence[T]]) -> list[T]:
    """Inverse of ``shard``: ``parts[r]`` holds rank r's items; returns them in the original order."""
    world = len(parts)
    total = sum(len(p) for p in parts)
    out: list[Any] = [None] * total
    for r, part in enumerate(parts):
        expected = len(range(r, total, world))
        if len(part) != expected:
            raise ValueError(f"rank {r} holds {len(part)} items, but a {world}-way shard of {total} gives it {expected}")
        out[r::world] = list(part)
    return out


def gather_in_order(local_items: Sequence[T]) -> list[T]:
    """All ranks' per-item results (picklable) in the original item order; identity in one process."""
    if not dist_utils.is_dist():
        return list(local_items)
    parts: list[Any] = [None] * dist_utils.world_size()
    torch.distributed.all_gather_object(parts, list(local_items))
    return unshard(parts)
