"""torchrun + DDP on CPU (gloo): 2 processes train exactly what 1 process trains, and only rank 0 writes.

Every file-system write of each rank is recorded by a Python audit hook
(installed through a ``sitecustomize`` on PYTHONPATH), so "rank 1 wrote
nothing" is checked, not assumed.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))

# Discrete tokenizer: no random decisions in its forward pass; dead-code re-initialisation
# reads rank-local usage counts, so it is off; GroupNorm is per-sample, dropout is 0.
# Generator on it: categorical head only (no diffusion noise); condition dropout draws per rank, so it is off.
TINY_TOKENIZER = [
    "stages=[tokenizer,generator]", "tokenizer=discrete", "data.train_size=64", "data.test_size=16", "data.resolution=32",
    "tokenizer.quantizer.patch_nums=[1,2,3,4]", "tokenizer.quantizer.vocab_size=64",
    "tokenizer.quantizer.dead_code_reinit=false", "tokenizer.train.steps=6", "tokenizer.train.batch_size=8",
    "tokenizer.train.checkpoint_every=3", "tokenizer.train.warmup_steps=2", "tokenizer.train.log_every=1",
    "tokenizer.train.grid_images=2", "threads=1",
    "ar.depth=2", "ar.width=64", "ar.heads=2", "ar.text_encoder.width=32", "ar.text_encoder.depth=1",
    "ar.text_encoder.heads=2", "ar.train.steps=6", "ar.train.batch_size=8", "ar.train.warmup_steps=2",
    "ar.train.cond_drop_p=0", "ar.train.log_every=1", "ar.train.grid_size=2", "ar.train.checkpoint_every=3",
]

AUDIT_HOOK = r'''
import os, sys
_log = os.path.join(os.environ["HARTKIT_AUDIT_DIR"], "rank%s.txt" % os.environ.get("RANK", "single"))
_root = os.environ["HARTKIT_AUDIT_ROOT"]
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

def _record(event, path):
    try:
        path = os.path.abspath(os.fsdecode(path))
    except TypeError:
        return
    if path.startswith(_root) and not path.startswith(os.environ["HARTKIT_AUDIT_DIR"]):
        with open(_log, "a") as fh:
            fh.write(f"{event} {path}\n")

def _hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1], args[2]
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & _WRITE_FLAGS:
            _record(event, args[0])
    elif event == "os.mkdir" and not os.path.exists(args[0]):  # mkdir(exist_ok=True) of an existing folder writes nothing
        _record(event, args[0])
    elif event in ("os.rename", "os.remove", "os.rmdir", "shutil.rmtree"):
        _record(event, args[0])

sys.addaudithook(_hook)
'''


def _audited_env(tmp_path: Path) -> dict[str, str]:
    hook_dir, audit_dir = tmp_path / "hook", tmp_path / "audit"
    hook_dir.mkdir()
    audit_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(AUDIT_HOOK)
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(hook_dir), env.get("PYTHONPATH")])),
               HARTKIT_AUDIT_DIR=str(audit_dir), HARTKIT_AUDIT_ROOT=str(tmp_path), OMP_NUM_THREADS="1",
               HYDRA_FULL_ERROR="1")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def _writes(tmp_path: Path, rank: str) -> list[str]:
    path = tmp_path / "audit" / f"rank{rank}.txt"
    return path.read_text().splitlines() if path.exists() else []


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 120) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
    return out


def _torchrun(nproc: int) -> list[str]:
    return [TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", str(ROOT / "run.py")]


def _parameter_names(overrides: list[str]) -> set[str]:
    from hartkit.scaleout.sweep import compose_overrides
    from hartkit.tokenizers import build_tokenizer

    cfg = compose_overrides(overrides)
    return {name for name, _ in build_tokenizer(cfg.tokenizer).named_parameters()}


def _paths(d: Path) -> list[str]:
    return [f"paths.results={d / 'results'}", f"paths.artifacts={d / 'artifacts'}", f"hydra.run.dir={d / 'hydra'}"]


def _weights(d: Path, artifact: str = "tokenizer") -> tuple[Path, dict[str, torch.Tensor]]:
    [path] = glob.glob(str(d / "artifacts" / artifact / "*" / "model.safetensors"))
    return Path(path).parent, load_file(path)


def _assert_same_training(ref: Path, other: Path) -> None:
    """Bit-identical weights. The reference splits each global batch of 8 into the same two micro-batches of 4
    that the two ranks take (``grad_accum=2``), so every forward and backward runs on the same shapes and the
    same numbers in both runs; the only difference is how the two half-batch gradients are combined: DDP
    averages them (g0 + g1) / 2, accumulation adds g0 / 2 + g1 / 2, and halving is exact in binary floating
    point, so the sums are equal to the bit on any CPU. (Against a reference that computes the whole batch in
    one matmul the summation order differs per BLAS build, and Adam turns that rounding noise on near-zero
    gradients into step-sized updates, so no fixed tolerance would hold across machines.)"""
    art_ref, w_ref = _weights(ref)
    art, w = _weights(other)
    assert art.name == art_ref.name  # same config hash
    params = _parameter_names(TINY_TOKENIZER)  # not the codebook-usage buffer: its counts are rank-local
    assert params and params <= set(w_ref)
    for name in params:
        assert torch.equal(w[name], w_ref[name]), f"tokenizer {name}: max diff {(w[name] - w_ref[name]).abs().max()}"
    gen_ref, g_ref = _weights(ref, "generator")
    gen, g = _weights(other, "generator")
    assert gen.name == gen_ref.name and g.keys() == g_ref.keys() and len(g) > 10
    for name in g_ref:
        assert torch.equal(g[name], g_ref[name]), f"generator {name}: max diff {(g[name] - g_ref[name]).abs().max()}"
    for art_dir in (art, gen):
        assert json.loads((art_dir / "DONE").read_text())["steps"] == 6


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory):
    """The reference: the same training in one process, each global batch in the two halves the ranks take."""
    tmp = tmp_path_factory.mktemp("single")
    _run([sys.executable, str(ROOT / "run.py"), *TINY_TOKENIZER, *_paths(tmp / "run"), "tokenizer.train.grad_accum=2",
          "ar.train.grad_accum=2"], tmp / "run", _audited_env(tmp))
    return tmp / "run"


@pytest.mark.slow
def test_two_process_training_matches_one_process_and_only_rank0_writes(tmp_path, single_process_run):
    env = _audited_env(tmp_path)
    multi = tmp_path / "ddp"
    _run([*_torchrun(2), *TINY_TOKENIZER, *_paths(multi)], multi, env, timeout=180)

    _assert_same_training(single_process_run, multi)

    # only rank 0 wrote: the audit log of rank 1 names nothing under the run's folders
    rank0, rank1 = _writes(tmp_path, "0"), _writes(tmp_path, "1")
    assert any("model.safetensors" in w or "/artifacts/" in w for w in rank0), rank0[:20]
    assert any("/hydra" in w for w in rank0)
    assert rank1 == [], rank1[:20]
    # rank 1 got hydra.run.dir=. and no .hydra / log file from run.py
    assert not (multi / ".hydra").exists()
    assert not list(multi.glob("*.log"))


@pytest.mark.slow
def test_two_task_submitit_job_trains_with_ddp(tmp_path, single_process_run):
    """hydra/launcher=local with 2 tasks (the SLURM code path): the tasks join one DDP group."""
    env = _audited_env(tmp_path)
    work = tmp_path / "submitit"
    out = _run([sys.executable, str(ROOT / "run.py"), "-m", "hydra/launcher=local", "hydra.launcher.tasks_per_node=2",
                *TINY_TOKENIZER, f"paths.results={work / 'results'}", f"paths.artifacts={work / 'artifacts'}",
                f"hydra.sweep.dir={work / 'multirun'}"], work, env, timeout=180)
    logs = "".join(p.read_text() for p in (work / "multirun" / ".submitit").glob("*/*_log.err"))
    assert "task 1 of 2 joins DDP" in logs, out.stderr[-2000:]
    _assert_same_training(single_process_run, work)
