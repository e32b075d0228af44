"""The main job with logger=wandb, offline: what the run's own files hold (read back with tests/wandb_offline.py,
no mocking): both stages' curves on their own steps, the grids, the leaderboard table; resume=true continues the
same run; multirun jobs share a group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import compose, smoke_overrides
from tests.wandb_offline import read_run

wandb = pytest.importorskip("wandb")
ROOT = Path(__file__).resolve().parents[1]


def _offline_env(tmp: Path) -> dict[str, str]:
    return {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp), "WANDB_SILENT": "true"}


@pytest.fixture(scope="module")
def main_job_runs(tmp_path_factory):
    """The smoke main job (every stage) logged offline, then the same job again with resume=true."""
    from hartkit.pipeline import run_pipeline

    tmp = tmp_path_factory.mktemp("wandb")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in _offline_env(tmp).items():
            mp.setenv(key, value)
        for key in ("WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH", "WANDB_RUN_ID"):
            mp.delenv(key, raising=False)
        runs = []
        for extra in ([], ["resume=true"]):
            wandb.teardown()  # settings are read once per process
            run_pipeline(compose([*smoke_overrides(tmp), "logger=wandb", *extra]))
            wandb.teardown()
            new = sorted(set((tmp / "wandb").glob("offline-run-*")) - {r for r, _ in runs})
            assert len(new) == 1, new
            runs.append((new[0], read_run(new[0])))
    return tmp, runs


def _rows_with(run, key: str) -> list[dict]:
    return [row for row in run.history if key in row]


@pytest.mark.slow
def test_both_stages_curves_arrive_on_their_own_steps(main_job_runs):
    _, [(_, run), _] = main_job_runs
    assert run.metric_steps["tokenizer/*"] == "tokenizer/step"
    assert run.metric_steps["generator/*"] == "generator/step"
    assert [step for step, _ in run.series("tokenizer/loss")] == [1, 2]  # tokenizer.train.steps=2, log_every=1
    assert [step for step, _ in run.series("generator/loss")] == [1, 2, 3]  # logged after the tokenizer's
    assert [step for step, _ in run.series("generator/lr")] == [1, 2, 3]
    steps = [row["_step"] for row in run.history]
    assert steps == sorted(steps)  # W&B's own step only grows: nothing was dropped as "less than current step"


@pytest.mark.slow
def test_grids_and_the_leaderboard_table_arrive(main_job_runs):
    _, [(run_dir, run), _] = main_job_runs
    for key in ("tokenizer/reconstructions", "generator/samples", "recon_eval/reconstructions",
                "gen_eval/samples", "preview"):
        rows = _rows_with(run, f"{key}/_type")
        assert rows and all(r[f"{key}/_type"] == "image-file" for r in rows), key
    assert [r["generator/step"] for r in _rows_with(run, "generator/samples/_type")] == [2, 3]
    [table] = _rows_with(run, "leaderboard/_type")
    assert table["leaderboard/_type"] == "table-file" and table["leaderboard/nrows"] >= 2
    data = json.loads((run_dir / "files" / table["leaderboard/path"]).read_text())
    labels = {row[data["columns"].index("label")] for row in data["data"]}
    assert {"hybrid", "hybrid+tiny"} <= labels
    assert "recon_eval/psnr" in run.summary and "gen_eval/fd_embedded" in run.summary


@pytest.mark.slow
def test_resume_continues_the_same_run(main_job_runs):
    tmp, [(_, first), (_, resumed)] = main_job_runs
    assert first.run_id and resumed.run_id == first.run_id
    # the id is kept inside the artifacts the run trained (one file per experiment), not beside them
    for artifact in ("tokenizer", "generator"):
        [id_file] = (tmp / "artifacts" / artifact).glob("*/wandb/run-*.json")
        assert json.loads(id_file.read_text())["id"] == first.run_id
    assert not (tmp / "artifacts" / "wandb").exists()
    # the resumed job found every artifact finished: it scored again and logged into the same run
    assert _rows_with(resumed, "recon_eval/reconstructions/_type")


def _logged_run(tmp: Path, cfg):
    """build_logger as run_pipeline calls it, one metric logged, then the offline run's own file read back."""
    from omegaconf import OmegaConf

    from hartkit.pipeline import wandb_id_folders
    from hartkit.utils.experiment_logger import build_logger

    used, others = wandb_id_folders(cfg)
    before = set((tmp / "wandb").glob("offline-run-*"))
    wandb.teardown()
    logger = build_logger(cfg.logger, OmegaConf.to_container(cfg, resolve=True), resume=bool(cfg.resume),
                          artifact_dirs=used, resume_dirs=others)
    logger.log_metrics({"probe/value": 1.0}, step=1)
    logger.finish()
    wandb.teardown()
    [run_dir] = sorted(set((tmp / "wandb").glob("offline-run-*")) - before)
    return read_run(run_dir)


def test_resume_finds_the_id_in_the_experiments_artifacts_or_the_old_place(tmp_path, monkeypatch):
    from hartkit.pipeline import artifact_dir
    from hartkit.utils.experiment_logger import run_id_file

    for key, value in _offline_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    for key in ("WANDB_SWEEP_ID", "WANDB_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    base = [*smoke_overrides(tmp_path), "logger=wandb"]
    tokenizer_only = compose([*base, "stages=[tokenizer,recon_eval]"])
    generator_only = compose([*base, "stages=[generator,gen_eval]", "resume=true"])
    tok_dir, gen_dir = artifact_dir(tokenizer_only, "tokenizer"), artifact_dir(tokenizer_only, "generator")

    first = _logged_run(tmp_path, tokenizer_only)
    tok_file = run_id_file(_plain(tokenizer_only), tok_dir)
    assert json.loads(tok_file.read_text())["id"] == first.run_id and not gen_dir.exists()
    # a resumed run of the same experiment with other stages finds it in the tokenizer's artifact
    resumed = _logged_run(tmp_path, generator_only)
    assert resumed.run_id == first.run_id
    assert json.loads(run_id_file(_plain(generator_only), gen_dir).read_text())["id"] == first.run_id

    # ids kept by earlier versions under <paths.artifacts>/wandb/ are still continued
    other = compose([*base, "stages=[tokenizer]", "seed=5"])
    legacy = run_id_file(_plain(other))
    legacy.parent.mkdir(parents=True, exist_ok=True)
    legacy.write_text(json.dumps({"id": "legacy01"}))
    assert _logged_run(tmp_path, compose([*base, "stages=[tokenizer]", "seed=5", "resume=true"])).run_id == "legacy01"
    assert json.loads(run_id_file(_plain(other), artifact_dir(other, "tokenizer")).read_text())["id"] == "legacy01"


def _plain(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def test_a_new_job_without_resume_starts_a_new_run(tmp_path, monkeypatch):
    from hartkit.pipeline import run_pipeline

    for key, value in _offline_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    ids = []
    for _ in range(2):
        wandb.teardown()
        run_pipeline(compose([*smoke_overrides(tmp_path), "logger=wandb", "stages=[preview]"]))
        wandb.teardown()
    for run_dir in sorted((tmp_path / "wandb").glob("offline-run-*")):
        ids.append(read_run(run_dir).run_id)
    assert len(ids) == 2 and ids[0] != ids[1]


@pytest.mark.slow
def test_multirun_jobs_share_a_group(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "hartkit", "-m", "experiment=smoke", "stages=[preview]", "logger=wandb",
           "data.seed=0,1", f"hydra.sweep.dir={sweep}", f"paths.artifacts={tmp_path / 'artifacts'}",
           f"paths.results={tmp_path / 'results'}"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, **_offline_env(tmp_path), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    runs = [read_run(d) for d in sorted((tmp_path / "wandb").glob("offline-run-*"))]
    assert len(runs) == 2 and runs[0].run_id != runs[1].run_id
    assert runs[0].group == runs[1].group == str(sweep)


def test_logger_wandb_without_wandb_says_how_to_install(monkeypatch):
    from hartkit.errors import ConfigError
    from hartkit.utils.experiment_logger import build_logger

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    cfg = compose(["logger=wandb"])
    with pytest.raises(ConfigError, match=r"hartkit\[wandb\]"):
        build_logger(cfg.logger, {"paths": {"artifacts": "unused"}, "logger": {}})
