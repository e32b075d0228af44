"""logger=wandb in offline mode: the run's W&B files, the record, and the sweep's metric in the summary."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from omegaconf import open_dict

from hartkit.records import Protocol, ResultRecord, iter_records
from hartkit.scaleout.sweep import compose_overrides
from hartkit.utils.experiment_logger import flatten_config

wandb = pytest.importorskip("wandb")


def _probe_stage(ctx):
    """A stand-in for a cheap stage: logs a metric and an image grid, saves a recon_eval record."""
    from PIL import Image

    ctx.logger.log_metrics({"train/loss": 0.125}, step=1)
    grid = Path(ctx.cfg.paths.artifacts) / "grid.png"
    grid.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (200, 30, 30)).save(grid)
    ctx.logger.log_image("probe/grid", str(grid), caption="a red square", step=1)
    ctx.save_record(ResultRecord(
        stage="recon_eval", label="probe",
        protocol=Protocol("reconstruction", "synthscenes", "test", 4, 64),
        metrics={"psnr": 23.25, "ssim": 0.5},
    ))


@pytest.fixture
def probe_pipeline(monkeypatch, tmp_path):
    import hartkit.pipeline as pipeline

    module = types.ModuleType("_scaleout_probe_stage")
    module.run = _probe_stage
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(pipeline.STAGES, "probe", f"{module.__name__}:run")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    monkeypatch.delenv("WANDB_SWEEP_PARAM_PATH", raising=False)
    wandb.teardown()  # settings are read once per process; start from a clean slate

    def run(*overrides: str):
        cfg = compose_overrides(["stages=[probe]", "logger=wandb", f"paths.results={tmp_path / 'results'}",
                                 f"paths.artifacts={tmp_path / 'artifacts'}", *overrides])
        with open_dict(cfg):
            del cfg["hydra"]
        pipeline.run_pipeline(cfg)
        wandb.teardown()
        [run_dir] = sorted((tmp_path / "wandb").glob("offline-run-*"))
        [log_file] = list(run_dir.glob("run-*.wandb"))
        return run_dir, log_file.read_bytes()

    yield run
    wandb.teardown()


def test_offline_run_writes_wandb_files_and_record(probe_pipeline, tmp_path):
    run_dir, log_bytes = probe_pipeline("run_name=offline probe")
    assert run_dir.is_dir() and (run_dir / "logs").is_dir()
    # the sweep's metric name ({stage}/{metric}) and the logged training metric are in the run's log
    assert b"recon_eval/psnr" in log_bytes
    assert b"train/loss" in log_bytes
    assert b"offline probe" in log_bytes
    assert list(run_dir.glob("files/media/images/probe/grid_*.png"))  # the image grid was logged
    records, bad = iter_records(tmp_path / "results")
    assert not bad
    [(_, record)] = records
    assert record.stage == "recon_eval" and record.metrics["psnr"] == 23.25
    assert record.config["logger"]["name"] == "wandb"


def test_full_config_survives_a_sweep_setting_a_group(probe_pipeline, monkeypatch, tmp_path):
    """A sweep parameter `tokenizer` (group choice) must not hide the tokenizer's settings in W&B."""
    params = tmp_path / "sweep-params.yaml"
    params.write_text("tokenizer:\n  value: discrete\ntokenizer.quantizer.vocab_size:\n  value: 256\n")
    monkeypatch.setenv("WANDB_SWEEP_ID", "testsweep")
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(params))
    _, log_bytes = probe_pipeline("tokenizer=discrete", "tokenizer.quantizer.vocab_size=256")
    assert b"tokenizer.autoencoder.ch" in log_bytes
    assert b"tokenizer.quantizer.patch_nums" in log_bytes


def test_flatten_config_uses_dotted_keys():
    flat = flatten_config({"a": {"b": 1, "c": {"d": [1, 2]}, "e": {}}, "f": None})
    assert flat == {"a.b": 1, "a.c.d": [1, 2], "a.e": {}, "f": None}


def test_sweep_metric_matches_logged_summary_key():
    """The sweeps optimise `{stage}/{metric}`, the key WandbLogger.log_record writes."""
    import yaml

    from hartkit.utils.experiment_logger import WandbLogger

    summary: dict = {}
    fake = WandbLogger.__new__(WandbLogger)
    fake.run = types.SimpleNamespace(summary=summary)
    fake.log_record({"stage": "recon_eval", "metrics": {"psnr": 1.0}, "protocol": {}})
    fake.log_record({"stage": "gen_eval", "metrics": {"fd_embedded": 2.0}, "protocol": {}})
    for path in (Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"):
        metric = yaml.safe_load(path.read_text())["metric"]["name"]
        assert metric in summary, (path.name, metric)
