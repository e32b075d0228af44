"""Command-line tools that measure or maintain hartkit (benchmarks); the library functions they call live in the
packages. Each is ``python -m hartkit.tools.<name> --help``."""
