"""Fault injection: SIGKILL a tiny full pipeline again and again, resume it, and get the uninterrupted result.

A tiny pipeline (tokenizer -> recon_eval -> generator -> gen_eval, 32 px) is
killed with SIGKILL again and again, at moments drawn from a fixed-seed
generator: after new checkpoints of each training stage, between the token
cache and the generator's first checkpoint, and anywhere in what is left. After every kill
it is restarted with ``resume=true``, and once more at the end. Its
final tokenizer and generator weights and token cache must be bit-identical to
those of a run that was never killed (same thread count, same machine: every
random draw is a function of seed, stage, step and rank), and its records must
hold the same numbers (timings aside).
"""

from __future__ import annotations

import glob
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
STEPS = 20
TINY_PIPELINE = [
    "stages=[tokenizer,recon_eval,generator,gen_eval]", "data.train_size=64", "data.test_size=8",
    "data.resolution=32", "tokenizer.quantizer.patch_nums=[1,2,3,4]", "tokenizer.quantizer.vocab_size=64",
    f"tokenizer.train.steps={STEPS}", "tokenizer.train.batch_size=8", "tokenizer.train.checkpoint_every=2",
    "tokenizer.train.warmup_steps=2", "tokenizer.train.log_every=10", "tokenizer.train.grid_images=2",
    "tokenizer.train.grid_every=5", "tokenizer.quantizer.dead_code_every=5", "tokenizer.train.ema_decay=0.9",
    "ar.depth=2", "ar.width=32", "ar.heads=2", "ar.text_encoder.width=16", "ar.text_encoder.depth=1",
    "ar.text_encoder.heads=2", "ar.text_encoder.vocab_buckets=256", "ar.diffusion.width=16", "ar.diffusion.depth=1",
    "ar.diffusion.batch_mul=2", f"ar.train.steps={STEPS}", "ar.train.batch_size=8", "ar.train.warmup_steps=2",
    "ar.train.checkpoint_every=2", "ar.train.log_every=10", "ar.train.grid_size=2", "ar.train.grid_every=5",
    "ar.train.ema_decay=0.9", "ar.sampling.batch_size=8", "ar.sampling.throughput_max_batch=2",
    "eval.num_images=8", "eval.batch_size=8", "threads=1",
]
TIMING_WORDS = ("latency", "throughput", "seconds", "_per_s", "img_s", "overhead")  # wall-clock measures


def _cmd(work: Path, kind: str, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "run.py"), *TINY_PIPELINE, f"tokenizer={kind}",
            f"paths.results={work / 'results'}", f"paths.artifacts={work / 'artifacts'}",
            f"eval.stats_cache={work / 'fd_stats'}", f"hydra.run.dir={work / 'hydra'}", *extra]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def _artifact(work: Path, artifact: str) -> Path | None:
    arts = glob.glob(str(work / "artifacts" / artifact / "*"))
    return Path(arts[0]) if arts else None


def _stage_state(work: Path, artifact: str) -> str:
    """'none' (no checkpoint yet), 'training' (a checkpoint, no DONE) or 'done'."""
    art = _artifact(work, artifact)
    if art is None:
        return "none"
    if (art / "DONE").exists():
        return "done"
    return "training" if (art / "checkpoints" / "latest.json").exists() else "none"


def _checkpoint_step(work: Path, artifact: str) -> int:
    art = _artifact(work, artifact)
    try:
        return json.loads((art / "checkpoints" / "latest.json").read_text())["step"] if art else -1
    except (OSError, ValueError):  # replaced while we read it: try again on the next poll
        return -1


def _token_cache_written(work: Path) -> bool:
    return bool(glob.glob(str(work / "artifacts" / "token_cache" / "*" / "meta.json")))


def _where(work: Path) -> str:
    return (f"tokenizer: {_stage_state(work, 'tokenizer')}, token cache: {_token_cache_written(work)}, "
            f"generator: {_stage_state(work, 'generator')}")


def _run_once(work: Path, kind: str, ready: Callable[[], bool] | None = None, delay: float = 0.0,
              timeout: float = 240) -> str | None:
    """Start the pipeline with resume=true. With ``ready``: once it holds, wait ``delay`` s and SIGKILL the
    process. Returns where the kill landed, or None when the run exited by itself (it must exit 0)."""
    log = open(work / "runs.log", "a")  # closed below
    proc = subprocess.Popen(_cmd(work, kind, "resume=true"), cwd=work, env=_env(), stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    try:
        if ready is not None:
            while proc.poll() is None and not ready():
                assert time.monotonic() < deadline, "the pipeline hangs"
                time.sleep(0.005)
            if proc.poll() is None:
                time.sleep(delay)
                landed = _where(work)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                if proc.returncode == -signal.SIGKILL:
                    return landed
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert proc.returncode == 0, (work / "runs.log").read_text()[-4000:]
    return None


def _after_new_checkpoint(work: Path, stage: str) -> Callable[[], bool] | None:
    """Ready once this process wrote a checkpoint of ``stage`` (None: the stage is finished already)."""
    if _stage_state(work, stage) == "done":
        return None
    before = _checkpoint_step(work, stage)
    return lambda: _checkpoint_step(work, stage) > before


def _generator_started(work: Path) -> Callable[[], bool] | None:
    """Ready once the token cache exists and the generator has no checkpoint yet: a kill here makes the resumed
    run build and initialise the generator again (its initial weights must not depend on what ran before)."""
    if _stage_state(work, "generator") != "none":
        return None
    return lambda: _token_cache_written(work) or _stage_state(work, "generator") != "none"


def _weights(work: Path, artifact: str) -> dict:
    [path] = glob.glob(str(work / "artifacts" / artifact / "*" / "model.safetensors"))
    return load_file(path)


def _token_cache(work: Path) -> dict:
    [path] = glob.glob(str(work / "artifacts" / "token_cache" / "*" / "tokens.safetensors"))
    return load_file(path)


def _record_metrics(work: Path) -> dict[str, dict]:
    """stage -> metrics (timings dropped) of the newest record of each stage; every record must agree."""
    out: dict[str, dict] = {}
    for path in sorted(glob.glob(str(work / "results" / "records" / "*" / "*.json"))):
        rec = json.loads(Path(path).read_text())
        metrics = {k: v for k, v in rec["metrics"].items() if not any(w in k for w in TIMING_WORDS)}
        key = f"{rec['stage']}:{rec['label']}"
        assert out.get(key, metrics) == metrics, f"two records of {key} in one run disagree"
        out[key] = metrics
    return out


def _assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, f"{what}: {name}"
        assert (a[name] == b[name]).all() or (a[name].isnan() & b[name].isnan()).all(), f"{what}: {name} differs"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["discrete", "hybrid"])
def test_repeated_sigkill_and_resume_give_the_uninterrupted_result(tmp_path, kind):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir()
    killed.mkdir()
    t0 = time.monotonic()
    assert _run_once(reference, kind) is None
    duration = time.monotonic() - t0

    # kills: after new checkpoints of the tokenizer (twice); between the token cache and the generator's first
    # checkpoint; after new checkpoints of the generator (twice); then at a random moment of what is left (the
    # evaluation stages, or a resumed run reusing everything). Delays come from a fixed-seed generator; what
    # they hit depends on the machine's speed, so where each kill landed is recorded and checked.
    draw = random.Random(1234)
    plan = [lambda: (_after_new_checkpoint(killed, "tokenizer"), draw.uniform(0.0, 0.25)),
            lambda: (_after_new_checkpoint(killed, "tokenizer"), draw.uniform(0.0, 0.25)),
            lambda: (_generator_started(killed), draw.uniform(0.0, 0.05)),
            lambda: (_after_new_checkpoint(killed, "generator"), draw.uniform(0.0, 0.25)),
            lambda: (_after_new_checkpoint(killed, "generator"), draw.uniform(0.0, 0.25)),
            lambda: (lambda: True, draw.uniform(0.0, duration))]
    landed: list[str] = []
    for make in plan:
        ready, delay = make()
        if ready is None:
            continue
        where = _run_once(killed, kind, ready, delay)
        if where is not None:
            landed.append(where)
    # finish (or, if the last run finished by itself, resume once more: everything is reused and re-scored)
    assert _run_once(killed, kind) is None

    assert len(landed) >= 5, landed
    assert any(w.startswith("tokenizer: training") for w in landed), landed
    assert any(w.endswith("generator: training") for w in landed), landed
    assert any(w.endswith("generator: none") and "token cache: True" in w for w in landed), landed

    _assert_same_tensors(_weights(killed, "tokenizer"), _weights(reference, "tokenizer"), "tokenizer weights")
    _assert_same_tensors(_token_cache(killed), _token_cache(reference), "token cache")
    _assert_same_tensors(_weights(killed, "generator"), _weights(reference, "generator"), "generator weights")
    ref_metrics, killed_metrics = _record_metrics(reference), _record_metrics(killed)
    assert {key.split(":")[0] for key in ref_metrics} == {"recon_eval", "gen_eval"}, ref_metrics
    assert killed_metrics == ref_metrics
