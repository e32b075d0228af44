"""The research probes' log: one JSON line per run, with the commit and time it ran at."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def append_record(log: Path, rec: dict) -> None:
    """Stamp ``rec`` with ``git describe --dirty`` and the local time, and append it to ``log``."""
    rec["commit"] = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                                   cwd=ROOT).stdout.strip()
    rec["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(json.dumps(rec) + "\n")
