"""The scripts under examples/ run as documented (CI executes them here and from the installed wheel)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tokenize_and_sample_example(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "tokenize_and_sample.py"), "--out", str(tmp_path)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "tokens per image, reconstruction PSNR" in out.stdout
    with Image.open(tmp_path / "reconstruction.png") as im:
        assert im.size == (128, 64)  # the image and its reconstruction, 64 px each
    with Image.open(tmp_path / "samples.png") as im:
        assert im.size == (3 * 64, 64)
