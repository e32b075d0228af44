#!/usr/bin/env bash
# CI step: hartkit as a new user gets it. Build the wheel, install it into a fresh venv outside the checkout
# (the wheel and its dependencies from the package registry, nothing from the source tree), then from another
# folder run `hartkit stages=[preview]`, `hartkit experiment=smoke`, `python -m hartkit` and the example.
#   bash scripts/check_wheel.sh            # after scripts/setup.sh; takes a few minutes (pip's cache helps)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY="${PYTHON:-$ROOT/.venv/bin/python}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hartkit-wheel-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
step() { echo "check_wheel: $*"; }

step "build the wheel from a copy of the sources (an in-tree build leaves build/ behind)"
mkdir -p "$WORK/src"
cp -r hartkit conf setup.py pyproject.toml README.md LICENSE "$WORK/src/"
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src"
WHEEL=$(ls "$WORK"/dist/hartkit-*.whl)

step "fresh venv with only $(basename "$WHEEL") and its dependencies"
"$PY" -m venv "$WORK/venv"
V="$WORK/venv/bin"
SITE=$("$V/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
# torch: the build the project venv already has (5 GB with its CUDA libraries; copying it takes minutes), linked
# in with its metadata, so pip sees it installed and resolves everything else from the registry itself
"$PY" - "$SITE" <<'PY'
import sys
from importlib.metadata import distribution, distributions
from pathlib import Path

site = Path(sys.argv[1])
names = {"torch", "torchvision", "triton"} | {
    d.metadata["Name"] for d in distributions() if d.metadata["Name"].lower().startswith(("nvidia", "cuda"))}
for name in sorted(names):
    dist = distribution(name)
    for top in sorted({Path(f).parts[0] for f in dist.files or []}):
        src, dst = Path(dist.locate_file(top)), site / top
        if top != ".." and not top.endswith(".data") and src.exists() and not dst.exists():
            dst.symlink_to(src)
PY
TORCH=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")
VISION=$("$PY" -c "import torchvision; print(torchvision.__version__.split('+')[0])")
"$V/python" -m pip install --quiet "torch==$TORCH" "torchvision==$VISION"  # already there: a check
"$V/python" -m pip install --quiet "$WHEEL"
if "$V/python" -c "import wandb" 2>/dev/null; then
  step "note: wandb came in as a dependency of another package"
fi

mkdir -p "$WORK/user" && cd "$WORK/user"   # outside the checkout: no conf/, no run.py here
"$V/python" -c "import hartkit, sys; assert hartkit.__file__.startswith(sys.prefix), hartkit.__file__"
export HARTKIT_CACHE_DIR="$WORK/cache" OMP_NUM_THREADS=1
step "hartkit stages=[preview]"
"$V/hartkit" 'stages=[preview]'
test -f artifacts/preview/synthscenes-64.png
step "hartkit experiment=smoke"
"$V/hartkit" experiment=smoke
test -f outputs/smoke/results/leaderboard.md
ls outputs/smoke/results/records/gen_eval/*.json > /dev/null
step "python -m hartkit --cfg job (the configs inside the package)"
"$V/python" -m hartkit experiment=smoke --cfg job > composed.yaml
grep -q "train_size: 16" composed.yaml
step "examples/tokenize_and_sample.py against the installed package"
"$V/python" "$ROOT/examples/tokenize_and_sample.py" --out example
test -f example/reconstruction.png && test -f example/samples.png
step "python -c 'from hartkit import load_tokenizer' round trip"
"$V/python" - <<'PY'
import glob
import torch
from hartkit import load_tokenizer
tok = load_tokenizer(sorted(glob.glob("outputs/smoke/artifacts/tokenizer/*"))[0])
x = torch.rand(1, 3, tok.image_size, tok.image_size)
print("round trip", tuple(tok.decode(tok.encode(x, value_range=(0, 1)), value_range=(0, 1)).shape))
PY
step "ok: the installed wheel works outside the checkout"
