"""Stage `leaderboard`: rebuild results/leaderboard.md, .csv and plots from every record (rank 0 only)."""

from __future__ import annotations

import logging

from hartkit.eval.leaderboard import build_leaderboard
from hartkit.utils.distributed import is_main

log = logging.getLogger(__name__)


def run(ctx) -> None:
    if not is_main():
        return
    out = build_leaderboard(ctx.results_dir)  # logs each malformed record it skips, by file name
    log.info("leaderboard: %s (%d records, %d skipped)", out["markdown"], out["records"], len(out["skipped"]))
