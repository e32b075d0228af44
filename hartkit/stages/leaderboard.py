"""Stage `leaderboard`: rebuild results/leaderboard.md, .csv and plots from every record (rank 0 only)."""

from __future__ import annotations

import logging

import pandas as pd

from hartkit.eval.leaderboard import build_leaderboard
from hartkit.utils.distributed import is_main

log = logging.getLogger(__name__)


def run(ctx) -> None:
    if not is_main():
        return
    out = build_leaderboard(ctx.results_dir)  # logs each malformed record it skips, by file name
    log.info("leaderboard: %s (%d records, %d skipped)", out["markdown"], out["records"], len(out["skipped"]))
    table = latest_rows(out["csv"])
    if table is not None:
        ctx.logger.log_table("leaderboard", table)
    for path in out["plots"]:
        ctx.logger.log_image(f"leaderboard_plots/{path.stem}", str(path))


def latest_rows(csv_path):
    """The leaderboard's current rows (newest run per config and seed), columns that hold a value: the table
    logged to the experiment tracker (W&B). None when there are no records."""
    frame = pd.read_csv(csv_path)
    if frame.empty:
        return None
    if "latest" in frame:
        frame = frame[frame["latest"].astype(bool)]
    return frame.dropna(axis=1, how="all").reset_index(drop=True)
