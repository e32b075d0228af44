#!/usr/bin/env bash
# Create .venv (if missing) and install hartkit with its test tools. Idempotent.
#   bash scripts/setup.sh            # CPU or GPU machine, Python >= 3.10
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# torch first, so that torchvision resolves against the same build (any torch 2.3 .. 2.x works).
python -m pip install --quiet "torch>=2.3,<3" "torchvision>=0.18"
python -m pip install --quiet -e ".[dev,slurm]"  # slurm: the submitit launcher, whose local mode the tests use
python -c "import hartkit, torch; print(f'hartkit {hartkit.__version__} ready (torch {torch.__version__})')"
