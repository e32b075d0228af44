"""Hydra multirun through the submitit launcher (the SLURM code path, run locally): one record per job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hartkit.records import iter_records
from hartkit.scaleout.sweep import compose_overrides

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "stages=[tokenizer,recon_eval]", "data.train_size=32", "data.test_size=8", "data.resolution=32",
    "tokenizer.quantizer.patch_nums=[1,2,3,4]", "tokenizer.quantizer.vocab_size=64", "tokenizer.train.steps=2",
    "tokenizer.train.batch_size=8", "tokenizer.train.warmup_steps=1", "tokenizer.train.grid_images=2",
    "eval.num_images=8", "eval.fd_features=[]", "threads=1",
]


@pytest.mark.parametrize("launcher", ["slurm", "local"])
def test_launcher_configs_compose_with_the_plugin_schema(launcher):
    cfg = compose_overrides([f"hydra/launcher={launcher}", "hydra.launcher.timeout_min=30"])
    node = cfg.hydra.launcher
    assert node._target_.startswith("hydra_plugins.hydra_submitit_launcher")
    assert node.timeout_min == 30
    if launcher == "slurm":
        assert node.tasks_per_node == node.gpus_per_node  # one process per GPU
        assert compose_overrides(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"]).hydra.launcher.partition == "gpu"
    with pytest.raises(Exception, match="partitoin"):  # the plugin's schema catches typos
        compose_overrides([f"hydra/launcher={launcher}", "hydra.launcher.partitoin=gpu"])


def test_submitit_task_env_becomes_torchrun_env():
    from unittest import mock

    from hartkit.scaleout.launch import export_submitit_task_env

    task_env = {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "4242", "SUBMITIT_LOCAL_NTASKS": "2",
                "SUBMITIT_LOCAL_JOB_NUM_NODES": "1", "SUBMITIT_LOCAL_NODEID": "0", "SUBMITIT_LOCAL_GLOBALID": "1",
                "SUBMITIT_LOCAL_LOCALID": "1"}
    torchrun_vars = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")
    clean = {k: v for k, v in os.environ.items() if k not in torchrun_vars and not k.startswith("SUBMITIT_")}
    with mock.patch.dict(os.environ, clean, clear=True):
        assert export_submitit_task_env() is False  # not inside a submitit job
        os.environ.update(task_env)
        assert export_submitit_task_env() is True
        assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("1", "2", "1")
        assert os.environ["MASTER_ADDR"] and int(os.environ["MASTER_PORT"]) > 0
        assert export_submitit_task_env() is False  # RANK set (as under torchrun): left alone
    with mock.patch.dict(os.environ, {**clean, **task_env, "SUBMITIT_LOCAL_NTASKS": "1"}, clear=True):
        assert export_submitit_task_env() is False  # a one-task job is a single process
        assert "RANK" not in os.environ


@pytest.mark.slow
def test_submitit_local_multirun_writes_one_record_per_job(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    sweep_dir = tmp_path / "multirun"
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", "hydra/launcher=local", "tokenizer=discrete,continuous",
           *TINY, f"paths.results={tmp_path / 'results'}", f"paths.artifacts={tmp_path / 'artifacts'}",
           f"hydra.sweep.dir={sweep_dir}"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    records, bad = iter_records(tmp_path / "results")
    assert not bad
    records = [(p, r) for p, r in records if r.role == "model"]  # not the baseline rows scored beside them
    assert sorted(r.label for _, r in records) == ["continuous", "discrete"]
    assert all(r.stage == "recon_eval" and "psnr" in r.metrics for _, r in records)
    assert len({r.run_id for _, r in records}) == 2  # each job is its own run
    # each job has its own output folder holding its overrides; the submitit logs sit beside them
    for job, tokenizer in ((0, "discrete"), (1, "continuous")):
        overrides = yaml.safe_load((sweep_dir / str(job) / ".hydra" / "overrides.yaml").read_text())
        assert f"tokenizer={tokenizer}" in overrides
    assert list((sweep_dir / ".submitit").glob("*/*_log.out"))

    # the leaderboard collects both jobs' records into one table (same protocol)
    from hartkit.eval.leaderboard import build_leaderboard

    out = build_leaderboard(tmp_path / "results", plots=False)
    assert out["records"] >= 2 and not out["skipped"]  # the two models + the baseline rows scored beside them
    table = Path(out["markdown"]).read_text()
    assert "discrete" in table and "continuous" in table
