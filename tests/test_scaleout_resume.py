"""Crash safety: SIGKILL a training run after its first checkpoint, then resume=true finishes it.

The resumed run must end at the configured step count with the same weights as
a run that was never killed (optimizer, scheduler, RNG and data position are
restored), and the half-written files a kill can leave behind are never read.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
STEPS = 20
TINY = [
    "stages=[tokenizer]", "tokenizer=discrete", "data.train_size=64", "data.test_size=16", "data.resolution=32",
    "tokenizer.quantizer.patch_nums=[1,2,3,4]", "tokenizer.quantizer.vocab_size=64",
    f"tokenizer.train.steps={STEPS}", "tokenizer.train.batch_size=8", "tokenizer.train.checkpoint_every=2",
    "tokenizer.train.warmup_steps=2", "tokenizer.train.log_every=10", "tokenizer.train.grid_images=2",
    "tokenizer.quantizer.dead_code_every=5", "threads=1",
]


def _cmd(work: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "run.py"), *TINY, f"paths.results={work / 'results'}",
            f"paths.artifacts={work / 'artifacts'}", f"hydra.run.dir={work / 'hydra'}", *extra]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(var, None)
    return env


def _artifact(work: Path) -> Path:
    [art] = glob.glob(str(work / "artifacts" / "tokenizer" / "*"))
    return Path(art)


def _kill_after_first_checkpoint(work: Path, timeout: float = 90) -> None:
    work.mkdir(parents=True)
    log = open(work / "killed.log", "w")  # closed in the finally below
    proc = subprocess.Popen(_cmd(work), cwd=work, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    try:
        while not glob.glob(str(work / "artifacts" / "tokenizer" / "*" / "checkpoints" / "latest.json")):
            assert proc.poll() is None, (work / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_sigkill_then_resume_finishes_with_the_uninterrupted_result(tmp_path):
    from hartkit.tokenizers import load_tokenizer

    killed = tmp_path / "killed"
    _kill_after_first_checkpoint(killed)
    art = _artifact(killed)
    ckpt_dir = art / "checkpoints"
    assert not (art / "DONE").exists(), "the run finished before it was killed; the test proves nothing"
    killed_at = json.loads((ckpt_dir / "latest.json").read_text())["step"]
    assert 0 < killed_at < STEPS

    # what a kill in the middle of a write leaves: a half-built checkpoint folder and a truncated temp file
    half = ckpt_dir / f".tmp-step_{killed_at + 2:08d}-deadbeef"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\x00" * 7)
    (art / ".model.safetensors.abc123.tmp").write_bytes(b"truncated")
    # a later stage must refuse the unfinished artifact instead of reading it
    with pytest.raises(FileNotFoundError):
        load_tokenizer(art)

    out = subprocess.run(_cmd(killed, "resume=true"), cwd=killed, env=_env(), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-4000:]
    assert f"resuming tokenizer training at step {killed_at}" in out.stderr
    done = json.loads((art / "DONE").read_text())
    assert done["steps"] == STEPS
    assert json.loads((ckpt_dir / "latest.json").read_text())["step"] == STEPS
    assert not half.exists()  # the stale temp folder was pruned, never loaded
    model = load_tokenizer(art)  # the final artifact loads
    assert model.kind == "discrete"

    # the same run without a kill ends with the same weights (RNG, schedule and data position restored)
    clean = tmp_path / "clean"
    clean.mkdir()
    out = subprocess.run(_cmd(clean), cwd=clean, env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-4000:]
    assert _artifact(clean).name == art.name
    w_resumed, w_clean = load_file(art / "model.safetensors"), load_file(_artifact(clean) / "model.safetensors")
    assert w_resumed.keys() == w_clean.keys()
    for name in w_clean:
        torch.testing.assert_close(w_resumed[name], w_clean[name], rtol=1e-4, atol=1e-5, msg=name)
