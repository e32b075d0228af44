"""Python logging set-up: one format, quiet on non-zero ranks."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if getattr(root, "_hartkit_configured", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s", "%H:%M:%S"))
    root.handlers[:] = [handler]
    # read RANK from torchrun's environment: this runs before the process group exists
    is_rank_zero = int(os.environ.get("RANK", "0")) == 0
    root.setLevel(level if is_rank_zero else logging.WARNING)
    root._hartkit_configured = True  # type: ignore[attr-defined]
    for noisy in ("PIL", "matplotlib", "urllib3", "datasets", "fsspec", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
