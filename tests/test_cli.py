"""The `hartkit` command (= `python -m hartkit` = `python run.py`): from any folder, the smoke preset, the
objective a job returns to Hydra's sweepers, and the Optuna example sweep."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hartkit.records import iter_records
from tests.conftest import compose, smoke_overrides

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    assert out.returncode == 0, out.stderr[-4000:]
    return out


@pytest.mark.slow
def test_smoke_preset_runs_every_stage_from_another_folder(tmp_path):
    _run([sys.executable, "-m", "hartkit", "experiment=smoke"], cwd=tmp_path)
    smoke = tmp_path / "outputs" / "smoke"
    records, bad = iter_records(smoke / "results")
    assert not bad
    stages = {r.stage for _, r in records if r.role == "model"}
    assert stages == {"recon_eval", "gen_eval"}
    assert (smoke / "results" / "leaderboard.md").is_file()
    assert list((smoke / "artifacts" / "preview").glob("*.png"))
    assert list(tmp_path.glob("outputs/*/*/hartkit.log"))  # Hydra's job log, named after the command


def test_run_py_and_python_m_hartkit_compose_the_same_job(tmp_path):
    a = _run([sys.executable, str(ROOT / "run.py"), "experiment=smoke", "--cfg", "job"], cwd=tmp_path).stdout
    b = _run([sys.executable, "-m", "hartkit", "experiment=smoke", "--cfg", "job"], cwd=tmp_path).stdout
    assert a == b and yaml.safe_load(a)["data"]["train_size"] == 16


def test_the_job_returns_its_objective(tmp_path):
    from hartkit.cli import run_job

    cfg = compose([*smoke_overrides(tmp_path), "stages=[tokenizer,recon_eval]", "objective=recon_eval/psnr"])
    value = run_job(cfg)
    records, _ = iter_records(tmp_path / "results")
    [record] = [r for _, r in records if r.stage == "recon_eval" and r.role == "model"]
    assert value == pytest.approx(record.metrics["psnr"]) and isinstance(value, float)
    assert run_job(compose([*smoke_overrides(tmp_path), "stages=[tokenizer,recon_eval]"])) is None


def test_an_objective_the_run_does_not_measure_names_what_it_did(tmp_path):
    from hartkit.pipeline import StageError, objective_value, run_pipeline

    cfg = compose([*smoke_overrides(tmp_path), "stages=[tokenizer,recon_eval]", "objective=gen_eval/fd_embedded"])
    ctx = run_pipeline(cfg)
    with pytest.raises(StageError, match=r"gen_eval/fd_embedded.*recon_eval/psnr.*add the stage"):
        objective_value(cfg, ctx)


@pytest.mark.slow
def test_optuna_example_sweep_runs_two_trials_offline(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    _run([sys.executable, "-m", "hartkit", "-m", "experiment=[smoke,optuna_tokenizer]", "hydra.sweeper.n_trials=2",
          f"hydra.sweep.dir={sweep}", f"paths.results={tmp_path / 'results'}",
          f"paths.artifacts={tmp_path / 'artifacts'}"], cwd=tmp_path)
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    records, _ = iter_records(tmp_path / "results")
    psnrs = [r.metrics["psnr"] for _, r in records if r.stage == "recon_eval" and r.role == "model"]
    assert len(psnrs) == 2  # two trials, each trained and scored one tokenizer
    assert result["best_value"] == pytest.approx(max(psnrs))
    assert set(result["best_params"]) == {"tokenizer.quantizer.vocab_size", "tokenizer.train.lr"}
