"""The kernel benchmark runs its CPU paths on tiny shapes and writes its markdown report."""

from __future__ import annotations

import re

import pytest
import torch

from hartkit.tools import bench_kernel_ops as bench


def test_bench_smoke_writes_a_cpu_report(tmp_path, capsys):
    out = tmp_path / "kernels.md"
    assert bench.main(["all", "--smoke", "--device", "cpu", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Kernel benchmark (CPU run, smoke shapes)")
    assert "command: `python -m hartkit.tools.bench_kernel_ops all --smoke --device cpu --out" in text
    assert "GPU numbers need a GPU" in text and "Triton: skipped on CPU" in text
    for title in ("quantize: B=2 x 4 x 4", "quantize: B=2 x 8 x 8", "attention forward:", "attention forward+backward:"):
        assert title in text
    # The baseline row of each table has ratio 1.00x; every measured row has a time and a ratio.
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert len(rows) == 12  # 2 quantize tables x 3 methods, 2 attention tables x 3
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1]) > 0 and re.fullmatch(r"\d+\.\d\dx", cells[2]), row
    assert "| naive full matrix (addmm + argmin) |" in text and "100.00%" in text
    assert "wrote" in capsys.readouterr().out


def test_bench_rejects_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(SystemExit):
        bench.main(["quantize", "--out", "-"])  # a real run under the interpreter would time numpy


def test_peak_memory_sees_a_large_temporary_on_cpu():
    mib = bench.peak_mib(lambda: torch.ones(1024, 1024).sum(), torch.device("cpu"))  # 4 MiB temporary
    assert 3.9 < mib < 8
