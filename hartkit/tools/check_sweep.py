"""Print and check the command lines a W&B agent runs for sweep configs: every run must compose through Hydra.

    python -m hartkit.tools.check_sweep sweeps/tokenizer_comparison.yaml [more.yaml ...]   (or: hartkit-check-sweep)

Exit status 1 names the first run that does not compose; the checks are ``hartkit.scaleout.sweep.check_sweep``'s.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from hartkit.scaleout.sweep import SweepConfigError, check_sweep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hartkit.tools.check_sweep",
                                     description="Print and check the command lines a W&B agent runs for a sweep config")
    parser.add_argument("sweep_configs", nargs="+", help="e.g. sweeps/tokenizer_comparison.yaml")
    args = parser.parse_args(argv)
    for path in args.sweep_configs:
        try:
            runs = check_sweep(path)
        except SweepConfigError as exc:
            print(f"FAIL {exc}", file=sys.stderr)
            return 1
        print(f"# {path}: {len(runs)} runs compose")
        for argv, _ in runs:
            print(shlex.join(argv))
    return 0



if __name__ == "__main__":
    sys.exit(main())
