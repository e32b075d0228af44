"""The end-to-end kernel benchmark (hartkit.tools.bench_kernels): its CPU smoke mode and its report."""

from __future__ import annotations

import re

import pytest

from hartkit.kernels import get_backend
from hartkit.tools import bench_kernels as bk


def test_smoke_runs_torch_only_and_writes_report(tmp_path, capsys):
    before = get_backend()
    out = tmp_path / "e2e.md"
    assert bk.main(["--smoke", "--device", "cpu", "--batch", "2", "--sample-batch", "2", "--out", str(out)]) == 0
    text = out.read_text()
    assert get_backend() == before  # the benchmark restores the process-wide backend
    assert "--smoke --device cpu --batch 2" in text and "- date: " in text and "- device: CPU" in text
    assert "Triton kernels need a CUDA GPU" in text and "Triton kernels need a CUDA GPU" in capsys.readouterr().out
    rows = [line for line in text.splitlines() if re.match(r"\| 64 \| 30 \| ", line)]
    assert len(rows) == 1 and "| torch |" in rows[0] and "triton" not in rows[0]
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    train_s, train_img_s, sample_s, sample_img_s = (float(cells[i]) for i in (4, 5, 7, 8))
    assert train_s > 0 and sample_s > 0
    # images/s = batch / median seconds; the table rounds seconds to 3 decimals
    assert 2 / (train_s + 0.0005) * 0.99 <= train_img_s <= 2 / max(train_s - 0.0005, 1e-6) * 1.01
    assert 2 / (sample_s + 0.0005) * 0.99 <= sample_img_s <= 2 / max(sample_s - 0.0005, 1e-6) * 1.01


def test_triton_backend_refused_on_cpu():
    with pytest.raises(SystemExit):
        bk.main(["--smoke", "--device", "cpu", "--backends", "triton"])


def test_ratio_table_compares_backends_of_the_same_resolution():
    results = [bk.Result(512, 2240, "torch", 8, 16, bk.Timing(2.0, 40.0), bk.Timing(1.0, 10.0)),
               bk.Result(512, 2240, "triton", 8, 16, bk.Timing(1.0, 30.0), bk.Timing(1.0, 10.0)),
               bk.Result(1024, 9451, "torch", 2, 4, bk.Timing(note="out of memory"), bk.Timing(3.0, 20.0))]
    table = bk.render_table(results)
    ratio_rows = [line for line in table.splitlines() if line.startswith("| 512 | 2.00x")]
    assert ratio_rows == ["| 512 | 2.00x | 0.75x | 1.00x | 1.00x |"]
    assert "out of memory" in table
    assert not any(line.startswith("| 1024 | -") for line in table.splitlines())  # no triton row: no ratio
