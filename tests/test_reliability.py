"""What a crash, a damaged file, a concurrent writer or a user mistake leaves behind.

- a truncated newest checkpoint: resuming falls back to the previous one;
- a half-written record, artifact or token cache is never read;
- two processes writing records into one results folder at once lose none;
- user errors (unknown stage, missing weights or images, bad config values) print one clear message and exit
  with code 2, no traceback; HYDRA_FULL_ERROR=1 shows it; a programming error keeps its traceback.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from hartkit.engine import CheckpointError, CheckpointManager, finish_artifact, is_finished
from hartkit.engine.rng import derive_seed
from hartkit.records import Protocol, ResultRecord, iter_records, write_record

ROOT = Path(__file__).resolve().parents[1]


def _model(value: float) -> nn.Module:
    model = nn.Linear(3, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damaged", ["model.safetensors", "state.pt"])
def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damaged):
    ckpt = CheckpointManager(tmp_path / "checkpoints", keep=2)
    ckpt.save(2, models={"model": _model(2.0)}, extra={"marker": "two"})
    ckpt.save(4, models={"model": _model(4.0)}, extra={"marker": "four"})
    _truncate(tmp_path / "checkpoints" / "step_00000004" / damaged)

    target = _model(0.0)
    extra = ckpt.load(models={"model": target})
    assert extra == {"marker": "two", "step": 2}
    assert all(torch.all(p == 2.0) for p in target.parameters())


def test_no_readable_checkpoint_is_a_clear_error(tmp_path):
    ckpt = CheckpointManager(tmp_path / "checkpoints", keep=2)
    ckpt.save(2, models={"model": _model(2.0)})
    _truncate(tmp_path / "checkpoints" / "step_00000002" / "state.pt")
    with pytest.raises(CheckpointError, match="no readable checkpoint.*step_00000002"):
        ckpt.load(models={"model": _model(0.0)})


def test_a_step_folder_renamed_into_place_counts_before_latest_json_names_it(tmp_path):
    """A kill between the folder's rename and the pointer's rewrite: the complete newer folder is used."""
    ckpt = CheckpointManager(tmp_path / "checkpoints", keep=3)
    ckpt.save(2, models={"model": _model(2.0)})
    pointer = (tmp_path / "checkpoints" / "latest.json").read_text()
    ckpt.save(4, models={"model": _model(4.0)})
    (tmp_path / "checkpoints" / "latest.json").write_text(pointer)  # as if killed before the rewrite
    assert ckpt.latest_step() == 4
    assert ckpt.load(models={"model": _model(0.0)})["step"] == 4


def test_starting_from_scratch_sets_old_checkpoints_aside_instead_of_mixing_them(tmp_path):
    ckpt = CheckpointManager(tmp_path / "checkpoints", keep=2)
    ckpt.save(10, models={"model": _model(1.0)})
    moved = ckpt.set_aside()
    assert moved is not None and (moved / "step_00000010" / "model.safetensors").is_file()
    assert ckpt.latest_step() is None
    ckpt.save(2, models={"model": _model(2.0)})
    assert ckpt.latest_step() == 2
    assert ckpt.set_aside() is not None and CheckpointManager(tmp_path / "checkpoints").set_aside() is None


def test_a_half_written_artifact_or_record_is_never_read(tmp_path):
    art = tmp_path / "artifact"
    art.mkdir()
    (art / "model.safetensors").write_bytes(b"half")  # killed before config.yaml and DONE
    assert not is_finished(art)
    finish_artifact(art, _model(1.0), {"a": 1})
    assert is_finished(art)

    records = tmp_path / "results" / "records" / "recon_eval"
    write_record(tmp_path / "results", _record(0))
    # what a killed atomic writer leaves: a temp file (never named *.json) ...
    (records / ".x__run__abc.json.k3j2.tmp").write_text('{"stage": "recon')
    # ... and a damaged file copied in by hand is reported, not read and not fatal
    (records / "broken.json").write_text('{"stage": "recon')
    good, bad = iter_records(tmp_path / "results")
    assert [rec.label for _, rec in good] == ["row0"]
    assert [p.name for p, _ in bad] == ["broken.json"]


def test_an_incomplete_token_cache_is_encoded_again(tmp_path):
    from hartkit.ar_models.token_cache import META, TENSORS, load_cache, save_cache

    encoded = {"tensors": {"x_in": torch.zeros(2, 3, 4)}, "prompts": ["a", "b"], "categories": ["c", "c"]}
    save_cache(tmp_path, encoded, {"kind": "discrete"})
    assert load_cache(tmp_path) is not None
    (tmp_path / META).unlink()  # killed after the tensors, before the meta file that marks completion
    assert load_cache(tmp_path) is None
    (tmp_path / TENSORS).unlink()
    assert load_cache(tmp_path) is None


def _record(i: int) -> ResultRecord:
    proto = Protocol(task="reconstruction", dataset="synthscenes", split="test", num_images=4, resolution=32)
    # one run_name for every writer, as in a sweep: file names must still not collide
    return ResultRecord(stage="recon_eval", label=f"row{i}", protocol=proto, metrics={"psnr": float(i)},
                        run_id="shared-run-name")


def _write_many(results: str, writer: int, n: int) -> None:
    for i in range(n):
        write_record(results, _record(writer * 1000 + i))


def test_two_processes_writing_one_results_folder_lose_no_record(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    n = 40
    procs = [ctx.Process(target=_write_many, args=(str(tmp_path), w, n)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    good, bad = iter_records(tmp_path)
    assert not bad
    labels = sorted(rec.label for _, rec in good)
    assert labels == sorted(f"row{w * 1000 + i}" for w in (1, 2) for i in range(n))


def test_derived_seeds_are_stable_distinct_and_order_sensitive():
    # crc32 + SeedSequence: the same in every process and Python version (no hash randomisation)
    assert derive_seed(0, "generator", 5, 0) == derive_seed(0, "generator", 5, 0)
    seeds = {derive_seed(s, stage, step, r) for s in (0, 1) for stage in ("tokenizer", "generator")
             for step in range(50) for r in (0, 1)}
    assert len(seeds) == 2 * 2 * 50 * 2
    assert derive_seed(1, 2) != derive_seed(2, 1)
    out = subprocess.run([sys.executable, "-c", "from hartkit.engine.rng import derive_seed;"
                          "print(derive_seed(0, 'generator', 5, 0))"], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONHASHSEED="123"), cwd=ROOT, check=True)
    assert int(out.stdout) == derive_seed(0, "generator", 5, 0)


# ---------------------------------------------------------------------------------------- user errors


def _run_py(tmp_path: Path, *overrides: str, full_error: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("HYDRA_FULL_ERROR", None)
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    cmd = [sys.executable, str(ROOT / "run.py"), f"paths.results={tmp_path / 'results'}",
           f"paths.artifacts={tmp_path / 'artifacts'}", f"hydra.run.dir={tmp_path / 'hydra'}", "threads=1",
           *overrides]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


USER_ERRORS = {
    "unknown stage": (["stages=[tokenizer,recon_evaluation]"], "unknown stage 'recon_evaluation'"),
    "missing image folder": (["stages=[preview]", "data=imagefolder", "data.path=/nonexistent/images"],
                             "/nonexistent/images"),
    "missing pretrained weights": (["stages=[tokenizer]", "tokenizer=var_pretrained", "data.resolution=256",
                                    "tokenizer.checkpoint=/nonexistent/vae_ch160v4096z32.pth"],
                                   "/nonexistent/vae_ch160v4096z32.pth"),
}


@pytest.mark.parametrize("case", sorted(USER_ERRORS))
def test_user_errors_print_one_message_without_a_traceback(tmp_path, case):
    overrides, expected = USER_ERRORS[case]
    out = _run_py(tmp_path, *overrides)
    assert out.returncode == 2, out.stderr[-3000:]
    assert expected in out.stderr
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    assert "HYDRA_FULL_ERROR=1" in out.stderr


def test_hydra_full_error_shows_the_traceback_of_a_user_error(tmp_path):
    out = _run_py(tmp_path, *USER_ERRORS["unknown stage"][0], full_error=True)
    assert out.returncode != 0
    assert "Traceback" in out.stderr and "unknown stage" in out.stderr


def test_a_config_key_typo_names_the_key(tmp_path):
    out = _run_py(tmp_path, "tokenizer.train.stepz=3")
    assert out.returncode != 0
    assert "stepz" in out.stderr and "Traceback" not in out.stderr


def test_atomic_writes_get_the_permissions_a_plain_open_would_give(tmp_path):
    from hartkit.utils.io import atomic_write_text

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = atomic_write_text(tmp_path / "atomic.txt", "x")
    assert (atomic.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)
