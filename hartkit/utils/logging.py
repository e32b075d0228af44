"""Python logging set-up: one format, quiet on non-zero ranks."""

from __future__ import annotations

import logging
import sys

from hartkit.utils.distributed import is_main


def setup_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if getattr(root, "_hartkit_configured", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s", "%H:%M:%S"))
    root.handlers[:] = [handler]
    root.setLevel(level if is_main() else logging.WARNING)
    root._hartkit_configured = True  # type: ignore[attr-defined]
    for noisy in ("PIL", "matplotlib", "urllib3", "datasets", "fsspec", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
