"""Command-line tools that measure or maintain hartkit (benchmarks, the leaderboard, folder scoring, evaluator
training, sweep checks); the library functions they call live in the packages. Each is
``python -m hartkit.tools.<name> --help``, and has a console entry point in pyproject.toml."""
