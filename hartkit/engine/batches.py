"""Deterministic, resumable, rank-sharded training batches.

The global batch of step ``s`` depends only on (seed, s): epoch ``e`` shuffles
the dataset with a generator seeded by (seed, e). Resuming at step ``s``
therefore continues at the same data position, and under torchrun every rank
takes its contiguous slice of the same global batch, so N processes see
exactly the samples one process would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from hartkit.errors import ConfigError
from hartkit.utils.distributed import rank, world_size


class _StepBatchSampler:
    def __init__(self, num_items: int, batch_size: int, seed: int, start_step: int, rank_: int, world: int):
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.step = start_step
        self.rank = rank_
        self.per_rank = batch_size // world
        self.steps_per_epoch = num_items // batch_size
        self._epoch = -1
        self._perm: torch.Tensor | None = None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.num_items, generator=g)
            self._epoch = epoch
        assert self._perm is not None
        return self._perm

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            epoch, pos = divmod(self.step, self.steps_per_epoch)
            perm = self._permutation(epoch)
            global_idx = perm[pos * self.batch_size : (pos + 1) * self.batch_size]
            mine = global_idx[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]
            self.step += 1
            yield mine.tolist()


class StepBatches:
    """Endless iterator of collated batches, starting at ``start_step``."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, start_step: int = 0,
                 collate_fn: Callable[[list[Any]], Any] | None = None, num_workers: int = 0):
        world = world_size()
        if batch_size % world:
            raise ConfigError(f"batch_size={batch_size} must be divisible by the number of processes ({world})")
        n = len(dataset)  # type: ignore[arg-type]
        if n < batch_size:
            raise ConfigError(
                f"the training set has {n} images but batch_size is {batch_size}; "
                "use a smaller batch size or a larger data.train_size"
            )
        self.sampler = _StepBatchSampler(n, batch_size, seed, start_step, rank(), world)
        # a private generator: creating the loader iterator must not draw from the global RNG,
        # or a resumed run's random stream would be shifted by one draw
        self.loader = DataLoader(dataset, batch_sampler=self.sampler, collate_fn=collate_fn, num_workers=num_workers,
                                 persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed))
        self._it: Iterator | None = None

    def __iter__(self) -> StepBatches:
        return self

    def __next__(self):
        if self._it is None:
            self._it = iter(self.loader)
        return next(self._it)
