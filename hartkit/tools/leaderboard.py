"""Rebuild the leaderboard from the result records:

    python -m hartkit.tools.leaderboard [--results results] [--no-plots]     (or: hartkit-leaderboard)

The tables, plots and their rules are ``hartkit.eval.leaderboard.build_leaderboard``'s; the pipeline's
``leaderboard`` stage calls the same function.
"""

from __future__ import annotations

import argparse

from hartkit.eval.leaderboard import build_leaderboard
from hartkit.utils.logging import setup_logging

COMMAND = "python -m hartkit.tools.leaderboard"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=COMMAND, description="Build results/leaderboard.md and .csv (and plots) "
                                                               "from the records.")
    parser.add_argument("--results", default="results", help="results folder holding records/ (default: results)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)
    setup_logging()
    out = build_leaderboard(args.results, plots=not args.no_plots)
    print(f"wrote {out['markdown']} and {out['csv']} ({out['records']} records, {len(out['skipped'])} skipped)")
    for path, why in out["skipped"]:
        print(f"skipped malformed record {path}: {why}")


if __name__ == "__main__":
    main()
