"""Read an offline W&B run (``wandb/offline-run-*/run-<id>.wandb``) back: its run record and history rows.

The file is W&B's transaction log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then LevelDB-log
blocks of 32 KiB whose records (checksum, length, type: full / first / middle / last) carry serialized
``wandb_internal_pb2.Record`` protos. Tests read what the run really wrote instead of mocking wandb.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 32768
HEADER = 7  # checksum (4), length (2), type (1); the file header has the same size
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path):
    """Every ``Record`` proto in the file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    assert ident == b":W&B" and magic == 0xBEE1 and version == 0, f"{path} is not a W&B transaction log"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += left
            continue
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (FULL, FIRST):
            pending = chunk
        else:
            pending += chunk
        if kind in (FULL, LAST):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending)
            yield rec


@dataclass
class OfflineRun:
    run_id: str
    group: str
    history: list[dict] = field(default_factory=list)  # one dict per wandb.log call (values JSON-decoded)
    summary: dict = field(default_factory=dict)
    metric_steps: dict = field(default_factory=dict)  # define_metric: name or glob -> step metric

    def series(self, key: str) -> list[tuple]:
        """(row's value of the key's step metric or _step, value) for every row holding ``key``."""
        step_key = next((s for g, s in self.metric_steps.items()
                         if g == key or (g.endswith("*") and key.startswith(g[:-1]))), "_step")
        return [(row.get(step_key), row[key]) for row in self.history if key in row]


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def read_run(path: str | Path) -> OfflineRun:
    """The run record, history rows, summary updates and step metrics of one ``.wandb`` file (or run folder)."""
    path = Path(path)
    if path.is_dir():
        [path] = list(path.glob("run-*.wandb"))
    run = OfflineRun(run_id="", group="")
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.group = rec.run.run_id, rec.run.run_group
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            run.summary.update({_key(i): json.loads(i.value_json) for i in rec.summary.update})
        elif kind == "metric":
            name = rec.metric.name or rec.metric.glob_name
            if rec.metric.step_metric:
                run.metric_steps[name] = rec.metric.step_metric
    return run
