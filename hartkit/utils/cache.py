"""hartkit's on-disk cache (built datasets), shared by every run, process and rank on a machine.

Location, first that is set: ``paths.cache`` of the run (the pipeline exports it), the ``HARTKIT_CACHE_DIR``
environment variable, ``$XDG_CACHE_HOME/hartkit``, ``~/.cache/hartkit`` (the convention of the Hugging Face
and torch caches). Deleting it is always safe: everything in it is rebuilt on demand.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "HARTKIT_CACHE_DIR"


def cache_root() -> Path:
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "hartkit"


def set_cache_root(path: str | os.PathLike) -> None:
    """Use ``path`` in this process and in the processes it starts (DataLoader workers, launched jobs)."""
    os.environ[ENV_VAR] = str(Path(path).expanduser())
