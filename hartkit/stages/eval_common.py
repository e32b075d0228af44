"""Helpers shared by the evaluation stages (not a stage): baseline records, provenance, interval tables."""

from __future__ import annotations

import logging
import sys

from omegaconf import OmegaConf

from hartkit.engine.artifact import read_summary
from hartkit.records import ResultRecord, write_record
from hartkit.utils import distributed as dist_utils
from hartkit.utils.env import git_commit, hardware_info

log = logging.getLogger(__name__)


def trained_commit(artifact_dir) -> str | None:
    """The commit at which an artifact was trained: ``git_commit`` of its DONE summary (None if absent)."""
    if not artifact_dir:
        return None
    try:
        summary = read_summary(artifact_dir)
    except (OSError, ValueError):
        return None
    return summary.get("git_commit") or summary.get("trained_commit")


def save_baseline_record(ctx, record: ResultRecord):
    """Write a baseline's record with the run's provenance, but not to the experiment logger: its summary
    holds the trained model's metrics (``<stage>/<metric>``, what sweeps optimise)."""
    record.run_id = ctx.run_id
    record.hardware = record.hardware or hardware_info(ctx.device)
    record.git_commit = record.git_commit or git_commit()
    record.command = record.command or " ".join(["python", *sys.argv])
    if not dist_utils.is_main():
        return None
    path = write_record(ctx.results_dir, record)
    log.info("wrote baseline record %s", path)
    return path


def baseline_config(cfg) -> dict:
    """A baseline's config: only what it depends on (data, eval, seed), so reruns for other tokenizers replace it."""
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, ["data", "eval", "seed"]), resolve=True)
