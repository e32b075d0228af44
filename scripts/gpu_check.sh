#!/usr/bin/env bash
# GPU check of hartkit's Triton kernels, for a machine with a CUDA GPU. Installs nothing.
#   1. the kernel tests with the compiled kernels on CUDA (TRITON_INTERPRET unset),
#   2. the full benchmark (python -m hartkit.tools.bench_kernel_ops all) at the papers' shapes.
#   3. end to end: HART-0.7B training step and sampling, kernels=triton vs torch (end_to_end.md).
# Everything it produces goes under $OUT (default results/gpu_check): nvidia-smi.txt, env.txt,
# pytest_kernels.txt, bench.log and kernels.md (the report to commit as results/kernels.md).
# Usage, from anywhere:  OUT=/tmp/out bash scripts/gpu_check.sh
# Exit status: 0 when tests and benchmark both succeeded, 1 otherwise (both always run).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-results/gpu_check}"
mkdir -p "$OUT"
if [ -f .venv/bin/activate ]; then
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
unset TRITON_INTERPRET
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # hartkit from this tree, installed or not

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
python - > "$OUT/env.txt" 2>&1 <<'PY'
import platform, sys
import torch
print("python", platform.python_version(), sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
import triton
print("triton", triton.__version__)
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0))
PY
cat "$OUT/env.txt"
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device visible: this script is for a GPU machine (on CPU run the tests under the interpreter)" \
    | tee -a "$OUT/env.txt"
  exit 1
fi

status=0
echo "== kernel tests on CUDA (compiled kernels)"
timeout 270 python -m pytest tests/test_kernels_triton.py tests/test_kernels_dispatch.py tests/test_kernels_bench.py \
  tests/test_kernels_compile.py \
  -q -p no:cacheprovider -o addopts="-ra" 2>&1 | tee "$OUT/pytest_kernels.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== benchmark"
timeout 300 python -m hartkit.tools.bench_kernel_ops all --out "$OUT/kernels.md" 2>&1 | tee "$OUT/bench.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== end to end: HART-0.7B training step and sampling, kernels=triton vs kernels=torch"
# writes its report after each resolution, so a timeout still leaves the 512 px rows
timeout 180 python -m hartkit.tools.bench_kernels --resolutions 512 1024 --out "$OUT/end_to_end.md" 2>&1 \
  | tee "$OUT/end_to_end.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== done (status $status); outputs in $OUT"
ls -l "$OUT"
exit "$status"
