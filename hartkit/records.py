"""Result records: one JSON file per run and stage, shared by writer and reader.

A number means something only together with its protocol (dataset, split,
image count, resolution, resize filter, feature extractor and its weights'
hash, implementation), so every record stores it and the leaderboard groups
by it. Schema 2 adds what a reader needs to judge a number:

- ``intervals``: metric -> [low, high], 95% bootstrap interval over images;
- ``role``: ``model`` (a trained or loaded model), ``floor`` / ``ceiling`` (the
  baselines every table shows), ``baseline`` (e.g. a thumbnail at the
  tokenizer's budget);
- ``noise_floor``: real-vs-real distances of two disjoint real sets at the
  protocol's n, with how they were drawn;
- ``notes``: caveats of this record's numbers (e.g. a per-category FD left out);
- ``trained_commit``: the git commit at which the scored artifact was trained
  (``git_commit`` is where it was scored); None when the artifact does not say.

Records of schema 1 still load (the new fields take their defaults).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hartkit.utils.io import atomic_write_json

SCHEMA_VERSION = 2
ROLES = ("model", "floor", "ceiling", "baseline")


class RecordError(ValueError):
    """A record file that does not follow the schema."""


@dataclass
class Protocol:
    """What a number was measured on. Two records compare only if their keys match."""

    task: str  # "reconstruction" | "generation"
    dataset: str
    split: str
    num_images: int
    resolution: int
    resize_filter: str = "bicubic"
    feature_extractor: Optional[str] = None  # e.g. "inception-v3 (clean-fid)", "embedded-clip"
    extractor_hash: Optional[str] = None  # sha256 (prefix) of the extractor's weights
    implementation: Optional[str] = None  # e.g. "hartkit streaming FD + clean-fid clean mode"
    extra: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        parts = [self.task, self.dataset, self.split, f"n{self.num_images}", f"{self.resolution}px", self.resize_filter]
        if self.feature_extractor:
            parts.append(self.feature_extractor + (f"@{self.extractor_hash[:8]}" if self.extractor_hash else ""))
        if self.implementation:
            parts.append(self.implementation)
        parts += [f"{k}={self.extra[k]}" for k in sorted(self.extra)]
        return " | ".join(parts)


@dataclass
class ResultRecord:
    stage: str  # pipeline stage that measured it, e.g. "recon_eval", "gen_eval"
    label: str  # what is being ranked, e.g. "hybrid" or "hybrid+tiny"
    protocol: Protocol
    metrics: dict[str, float]
    config: dict[str, Any] = field(default_factory=dict)  # resolved config of the run
    model: dict[str, Any] = field(default_factory=dict)  # parameters, tokens per image, ...
    hardware: dict[str, Any] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: new_run_id())
    created: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    git_commit: Optional[str] = None  # where the numbers were computed
    command: Optional[str] = None  # the command line that produced it
    intervals: dict[str, list[float]] = field(default_factory=dict)  # metric -> [low, high] (95% bootstrap)
    role: str = "model"  # model | floor | ceiling | baseline
    noise_floor: dict[str, Any] = field(default_factory=dict)  # real-vs-real distances at the protocol's n
    notes: list[str] = field(default_factory=list)
    trained_commit: Optional[str] = None  # where the scored artifact was trained
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResultRecord:
        if not isinstance(d, dict):
            raise RecordError("record is not a JSON object")
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in d and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]  # type: ignore[misc]
        if missing:
            raise RecordError(f"missing fields: {missing}")
        if d.get("schema_version", SCHEMA_VERSION) > SCHEMA_VERSION:
            raise RecordError(f"schema_version {d['schema_version']} is newer than this hartkit ({SCHEMA_VERSION})")
        try:
            proto = Protocol(**d["protocol"])
            known = {f.name for f in dataclasses.fields(cls)}
            rec = cls(**{k: v for k, v in d.items() if k in known and k != "protocol"}, protocol=proto)
        except TypeError as exc:
            raise RecordError(str(exc)) from exc
        if not isinstance(rec.metrics, dict) or not all(
            isinstance(v, (int, float)) or v is None for v in rec.metrics.values()
        ):
            raise RecordError("metrics must map names to numbers")
        if not isinstance(rec.intervals, dict) or not all(
            isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)
            for v in rec.intervals.values()
        ):
            raise RecordError("intervals must map metric names to [low, high]")
        if rec.role not in ROLES:
            raise RecordError(f"role {rec.role!r} is not one of {list(ROLES)}")
        return rec


def new_run_id() -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


def record_path(results_dir: str | os.PathLike, record: ResultRecord) -> Path:
    safe = lambda text: "".join(c if c.isalnum() or c in "-_+." else "_" for c in text)
    # the suffix keeps records of jobs that share a run_name (multirun, sweeps) from overwriting each other
    suffix = uuid.uuid4().hex[:6]
    return Path(results_dir) / "records" / record.stage / f"{safe(record.label)}__{safe(record.run_id)}__{suffix}.json"


def write_record(results_dir: str | os.PathLike, record: ResultRecord) -> Path:
    return atomic_write_json(record_path(results_dir, record), record.to_dict())


def read_record(path: str | os.PathLike) -> ResultRecord:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise RecordError(f"not valid JSON: {exc}") from exc
    return ResultRecord.from_dict(data)


def iter_records(results_dir: str | os.PathLike) -> tuple[list[tuple[Path, ResultRecord]], list[tuple[Path, str]]]:
    """All records under ``results_dir/records`` and the files that failed to parse (with why)."""
    good, bad = [], []
    for path in sorted((Path(results_dir) / "records").rglob("*.json")):
        try:
            good.append((path, read_record(path)))
        except (RecordError, OSError, UnicodeDecodeError) as exc:
            bad.append((path, str(exc)))
    return good, bad
