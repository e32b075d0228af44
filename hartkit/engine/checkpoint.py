"""Crash-safe training checkpoints.

Layout of a checkpoint folder::

    checkpoints/
      latest.json               {"step": 1200, "dir": "step_00001200"}  (for people and tools; rewritten last)
      step_00001200/
        model.safetensors       one file per module (weights; EMA copy too)
        state.pt                optimizers, schedulers, RNG states, extra (loaded with weights_only=True)

A step folder is built under a temporary name and renamed into place in one
``os.replace``; ``latest.json`` is replaced only afterwards. A process killed at
any point therefore leaves either the previous checkpoint or the new one, never
a half-written one that a reader could pick up. Readers take the newest step
folder (a complete one by construction), falling back past a damaged one. The
RNG states are saved for callers that resume a global stream; hartkit's
trainers reseed every step instead (``hartkit.engine.rng``).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from hartkit.errors import UserError
from hartkit.utils.distributed import barrier, is_dist, is_main, rank, world_size
from hartkit.utils.io import atomic_write_json

log = logging.getLogger(__name__)


class CheckpointError(UserError, RuntimeError):
    """No usable checkpoint, or one that does not fit the model (the message names the folder)."""


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _gather_rng_states() -> list[dict[str, Any]]:
    """Every rank's RNG state (index = rank): ranks draw different noise and must resume with their own."""
    mine = _rng_state()
    if not is_dist():
        return [mine]
    states: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(states, mine)
    return states


def _restore_rng(saved: Any) -> None:
    states = saved if isinstance(saved, list) else [saved]
    if len(states) == world_size():
        _set_rng_state(states[rank()])
        return
    # resumed with a different number of processes: rank 0's stream, then a distinct offset per rank
    _set_rng_state(states[0])
    if rank() > 0:
        offset = int(torch.randint(0, 2**31 - 1, (1,)).item()) + rank()
        torch.manual_seed(offset)
        np.random.seed(offset)
        random.seed(offset)


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointManager:
    def __init__(self, directory: str | os.PathLike, keep: int = 2):
        self.directory = Path(directory)
        self.keep = max(1, keep)

    # -- reading ---------------------------------------------------------------------------
    def step_dirs(self) -> list[Path]:
        """Complete step folders, newest first. A folder only gets its ``step_*`` name by an atomic rename
        after it was fully written, so one that exists is complete, even if ``latest.json`` (rewritten after
        the rename) does not point at it yet."""
        return sorted((p for p in self.directory.glob("step_*") if p.is_dir()), key=lambda p: p.name, reverse=True)

    def latest_step(self) -> int | None:
        dirs = self.step_dirs()
        return int(dirs[0].name.removeprefix("step_")) if dirs else None

    def latest_dir(self) -> Path | None:
        dirs = self.step_dirs()
        return dirs[0] if dirs else None

    def load_weights(self, models: dict[str, torch.nn.Module | None], step_dir: Path | None = None) -> None:
        step_dir = step_dir or self.latest_dir()
        if step_dir is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        for name, module in models.items():
            if module is None:
                continue
            path = step_dir / f"{name}.safetensors"
            if not path.exists():
                raise CheckpointError(f"checkpoint {step_dir} has no weights for {name!r} ({path.name})")
            missing, unexpected = load_model(module, str(path), strict=False)
            if missing or unexpected:
                raise CheckpointError(
                    f"{path} does not match the model {name!r}: missing keys {sorted(missing)}, "
                    f"unexpected keys {sorted(unexpected)}"
                )

    def load(self, models: dict[str, torch.nn.Module | None], optimizers: dict[str, Any] | None = None,
             schedulers: dict[str, Any] | None = None, map_location: Any = "cpu", restore_rng: bool = True) -> dict:
        """Restore everything saved by ``save`` from the newest readable checkpoint; returns ``extra`` with ``step``.

        A checkpoint that cannot be read (a truncated or damaged file: a full disk, a bad copy) is skipped with
        a warning and the previous one is used; the trainer then repeats the steps in between exactly."""
        candidates = self.step_dirs()
        if not candidates:
            raise CheckpointError(f"no checkpoint to resume from in {self.directory}")
        problems = []
        for step_dir in candidates:
            try:
                state = torch.load(step_dir / "state.pt", map_location=map_location, weights_only=True)
                self.load_weights(models, step_dir)
                for name, opt in (optimizers or {}).items():
                    opt.load_state_dict(state["optimizers"][name])
                for name, sched in (schedulers or {}).items():
                    if sched is not None:
                        sched.load_state_dict(state["schedulers"][name])
            except Exception as exc:  # any damage: try the previous checkpoint, report all if none works
                problems.append(f"{step_dir.name}: {type(exc).__name__}: {exc}")
                log.warning("checkpoint %s is unreadable (%s: %s); falling back to the previous one",
                            step_dir, type(exc).__name__, exc)
                continue
            if restore_rng:
                _restore_rng(state["rng"])
            extra = dict(state.get("extra", {}))
            extra["step"] = int(state["step"])
            log.info("resumed from %s (step %d)", step_dir, extra["step"])
            return extra
        raise CheckpointError(f"no readable checkpoint in {self.directory}; delete the folder to start over. "
                              "Problems: " + "; ".join(problems))

    # -- writing ---------------------------------------------------------------------------
    def set_aside(self) -> Path | None:
        """Starting from scratch: move existing checkpoints to ``checkpoints-old-<time>`` (rank 0), so that
        they are neither resumed from nor mistaken for this run's, yet nothing computed is deleted."""
        moved = None
        latest = self.latest_step()
        if is_main() and latest is not None:
            stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
            moved = self.directory.with_name(f"{self.directory.name}-old-{stamp}")
            os.replace(self.directory, moved)
            log.warning("%s held checkpoints up to step %d of an earlier run; moved them to %s "
                        "(pass resume=true to continue a run instead)", self.directory, latest, moved)
        barrier()
        return moved

    def save(self, step: int, models: dict[str, torch.nn.Module | None], optimizers: dict[str, Any] | None = None,
             schedulers: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path | None:
        """Write a checkpoint (rank 0) and wait for it on every rank."""
        final = self.directory / f"step_{step:08d}"
        rng_states = _gather_rng_states()  # collective: every rank takes part
        if is_main():
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self.directory / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                for name, module in models.items():
                    if module is not None:
                        save_model(module, str(tmp / f"{name}.safetensors"))
                state = {
                    "step": step,
                    "optimizers": {k: v.state_dict() for k, v in (optimizers or {}).items()},
                    "schedulers": {k: v.state_dict() for k, v in (schedulers or {}).items() if v is not None},
                    "rng": rng_states,
                    "extra": extra or {},
                }
                torch.save(state, tmp / "state.pt")
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            atomic_write_json(self.directory / "latest.json", {"step": step, "dir": final.name})
            self._prune(keep_dir=final)
        barrier()
        return final if is_main() else None

    def _prune(self, keep_dir: Path) -> None:
        step_dirs = sorted(p for p in self.directory.glob("step_*") if p.is_dir())
        for old in step_dirs[: -self.keep]:
            if old != keep_dir:
                shutil.rmtree(old, ignore_errors=True)
        for stale in self.directory.glob(".tmp-*"):  # left by a killed writer
            shutil.rmtree(stale, ignore_errors=True)
