"""hartkit's on-disk cache (built datasets), shared by every run, process and rank on a machine.

Location, first that is set: ``paths.cache`` of the run (the pipeline exports it), the ``HARTKIT_CACHE_DIR``
environment variable, ``$XDG_CACHE_HOME/hartkit``, ``~/.cache/hartkit`` (the convention of the Hugging Face
and torch caches). Deleting it is always safe: everything in it is rebuilt on demand.

In a distributed job (an initialised ``torch.distributed`` process group, or torchrun's ``RANK`` /
``WORLD_SIZE``), rank 0 of each machine (``LOCAL_RANK`` 0) builds a missing entry and the other ranks wait
for the finished entry to appear (``wait_for``), up to ``HARTKIT_CACHE_TIMEOUT`` seconds. They wait by
watching the file system rather than in a barrier: a barrier would need every rank to ask for the same
entries in the same order, and some entries are only ever built by rank 0 (e.g. held-out baselines).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from hartkit.errors import ConfigError, UserError

log = logging.getLogger(__name__)

ENV_VAR = "HARTKIT_CACHE_DIR"
TIMEOUT_ENV_VAR = "HARTKIT_CACHE_TIMEOUT"
DEFAULT_TIMEOUT_S = 7200.0  # rendering 1024 px scenes or checking 30k MJHQ files takes minutes, not hours


class CacheWaitError(UserError, TimeoutError):
    """A rank waited for rank 0 to build a cache entry and it never appeared; the message names the folder."""


def cache_root() -> Path:
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "hartkit"


def set_cache_root(path: str | os.PathLike) -> None:
    """Use ``path`` in this process and in the processes it starts (DataLoader workers, launched jobs)."""
    os.environ[ENV_VAR] = str(Path(path).expanduser())


def distributed_ranks() -> tuple[int, int, int] | None:
    """(rank, rank on this machine, world size) of a distributed job, None in a single process.

    An initialised process group gives the rank and world size; otherwise torchrun's ``RANK`` and
    ``WORLD_SIZE`` do (the data may be built before the group is joined). The rank on the machine is
    ``LOCAL_RANK`` when set, else the rank."""
    try:
        import torch.distributed as dist

        initialised = dist.is_available() and dist.is_initialized()
    except ImportError:
        initialised = False
    if initialised:
        rank, world = dist.get_rank(), dist.get_world_size()
    elif "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        try:
            rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        except ValueError as exc:
            raise ConfigError(f"RANK={os.environ['RANK']!r} / WORLD_SIZE={os.environ['WORLD_SIZE']!r} are not "
                              "integers; launch with torchrun, or unset both for a single process") from exc
    else:
        return None
    if world <= 1:
        return None
    local = os.environ.get("LOCAL_RANK")
    return rank, int(local) if local not in (None, "") else rank, world


def builds_shared_entries() -> bool:
    """Whether this process builds missing cache entries: a single process, or rank 0 of its machine."""
    ranks = distributed_ranks()
    return ranks is None or ranks[1] == 0


def wait_timeout() -> float:
    """Seconds a rank waits for rank 0 to build an entry: ``$HARTKIT_CACHE_TIMEOUT``, default 7200."""
    raw = os.environ.get(TIMEOUT_ENV_VAR)
    if raw in (None, ""):
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{TIMEOUT_ENV_VAR}={raw!r} is not a positive number of seconds; set it to e.g. "
                          f"{int(DEFAULT_TIMEOUT_S)} or unset it")
    return value


def wait_for(marker: Path, what: str, timeout: float | None = None, poll_s: float = 0.2) -> None:
    """Block until ``marker`` (the last file of a finished entry) exists; raise CacheWaitError after ``timeout``."""
    timeout = wait_timeout() if timeout is None else timeout
    ranks = distributed_ranks()
    who = f"rank {ranks[0]}" if ranks else "this process"
    if marker.exists():
        return
    log.info("%s waits for rank 0 to build %s at %s", who, what, marker.parent)
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if time.monotonic() >= deadline:
            raise CacheWaitError(
                f"{who} waited {timeout:g} s for rank 0 (LOCAL_RANK 0) to build {what} in {marker.parent}, and it is "
                f"not there. Rank 0 failed or is still building: see its log. If the ranks do not see the same "
                f"folder, set paths.cache (or {ENV_VAR}) to a folder they share; to wait longer, set "
                f"{TIMEOUT_ENV_VAR}=<seconds>."
            )
        time.sleep(poll_s)
