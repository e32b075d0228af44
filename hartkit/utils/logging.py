"""Python logging set-up: one format, quiet on non-zero ranks.

Under ``run.py`` Hydra has already configured the handlers (console + the run
folder's log file); they are kept, given hartkit's format, and the console one
moves to stderr (beside tqdm's bars; stdout stays for results). Outside Hydra
(scripts, notebooks) a console handler with the same format is added.
"""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"
DATEFMT = "%H:%M:%S"


def setup_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in root.handlers:
        handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
        if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is sys.stdout:
            handler.setStream(sys.stderr)
    # read RANK from torchrun's environment: this runs before the process group exists
    is_rank_zero = int(os.environ.get("RANK", "0")) == 0
    root.setLevel(level if is_rank_zero else logging.WARNING)
    for noisy in ("PIL", "matplotlib", "urllib3", "datasets", "fsspec", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
