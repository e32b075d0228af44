"""Gradient accumulation: one optimizer step over several micro-batches.

The global batch of a step stays what ``StepBatches`` gives; ``split_batch``
cuts each rank's share into ``parts`` micro-batches so that activations of only
one micro-batch are alive at a time. Under DDP, gradients are all-reduced only
on the last micro-batch (``sync_only_on_last``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from hartkit.errors import ConfigError


def _split(value: Any, parts: int) -> list[Any]:
    if isinstance(value, torch.Tensor):
        return list(torch.tensor_split(value, parts, dim=0))
    if isinstance(value, (list, tuple)):
        # the same sizes as torch.tensor_split, so list fields stay aligned with tensor fields
        n = len(value)
        sizes = [n // parts + (1 if i < n % parts else 0) for i in range(parts)]
        bounds = [sum(sizes[:i]) for i in range(parts + 1)]
        return [value[bounds[i]:bounds[i + 1]] for i in range(parts)]
    if isinstance(value, dict):
        pieces = {k: _split(v, parts) for k, v in value.items()}
        return [{k: pieces[k][i] for k in value} for i in range(parts)]
    raise TypeError(f"cannot split a batch entry of type {type(value).__name__}")


def split_batch(batch: Any, parts: int) -> list[Any]:
    """Split tensors (dim 0), lists and dicts of them into ``parts`` micro-batches, in order."""
    if parts < 1:
        raise ConfigError(f"grad_accum must be >= 1, got {parts}")
    if parts == 1:
        return [batch]
    size = _batch_len(batch)
    if size < parts:
        raise ConfigError(f"a batch of {size} per process cannot be split into grad_accum={parts} micro-batches")
    return _split(batch, parts)


def _batch_len(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, (list, tuple)):
        return len(batch)
    if isinstance(batch, dict):
        return _batch_len(next(iter(batch.values())))
    raise TypeError(f"cannot measure a batch of type {type(batch).__name__}")


@contextlib.contextmanager
def sync_only_on_last(model: nn.Module, is_last: bool) -> Iterator[None]:
    """Skip DDP's gradient all-reduce for every micro-batch but the last."""
    if isinstance(model, DistributedDataParallel) and not is_last:
        with model.no_sync():
            yield
    else:
        yield
