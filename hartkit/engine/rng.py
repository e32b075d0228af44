"""One random-state policy for every stage and training step.

Every random draw of a run is a pure function of named integers: the run's
seed, the stage, the step and the rank. A stage starts from
``reseed(seed, stage, rank)``, a model's initial weights from
``reseed(seed, stage, "init")`` and a training step from
``reseed(seed, stage, step, rank)``. Whatever happened before
(a tokenizer trained in the same process or loaded from disk, a sample grid
drawn between two steps, a run killed and resumed at step ``s``) therefore
cannot shift the random stream: resuming is exact without replaying anything.
"""

from __future__ import annotations

import random
import zlib

import numpy as np
import torch


def stream_id(name: str) -> int:
    """A stable integer for a stage or stream name (crc32, identical in every process and Python version)."""
    return zlib.crc32(name.encode("utf-8"))


def derive_seed(*parts: int | str) -> int:
    """Mix integers (and names) into one 63-bit seed with numpy's SeedSequence (well-spread, order-sensitive)."""
    entropy = [stream_id(p) if isinstance(p, str) else int(p) for p in parts]
    if any(e < 0 for e in entropy):
        raise ValueError(f"seed parts must be non-negative, got {parts}")
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


def seed_all(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (CUDA included) from one integer."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def reseed(*parts: int | str) -> int:
    """Seed every global generator from ``derive_seed(*parts)``; returns that seed (for private generators)."""
    seed = derive_seed(*parts)
    seed_all(seed)
    return seed


def private_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A private torch generator for draws that must not touch (or depend on) the global stream."""
    return torch.Generator(device=device).manual_seed(seed)
