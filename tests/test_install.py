"""The package as a user installs it: the wheel holds the configs (hartkit/conf, found through
pkg://hartkit.conf), the `hartkit` command and the LICENSE, and hartkit runs from it outside the checkout.

CI goes further (scripts/check_wheel.sh): a fresh venv with only the wheel and its dependencies installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hartkit import configs

ROOT = Path(__file__).resolve().parents[1]


def test_a_checkout_uses_its_top_level_conf():
    assert configs.source_conf_dir() == ROOT / "conf"
    assert configs.hydra_config_path() == str(ROOT / "conf")
    assert configs.packaged_conf_dir() is None  # conf/ is mapped into the wheel, never copied into hartkit/


# what the wheel is built from (a copy: an in-tree build would leave build/ in the checkout, whose stale
# files a later build would ship)
SOURCES = ("hartkit", "conf", "setup.py", "pyproject.toml", "README.md", "LICENSE")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(out), str(src)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    [whl] = list(out.glob("hartkit-*.whl"))
    return whl


def test_the_wheel_ships_configs_command_and_license(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.removeprefix("hartkit/conf/") for n in names if n.startswith("hartkit/conf/")}
    expected = {p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml")}
    assert shipped == expected | {"__init__.py"}  # Hydra's pkg:// source wants a regular package
    assert "config.yaml" in shipped and "experiment/smoke.yaml" in shipped
    assert "hartkit/eval/embedded/weights.safetensors" in names  # the offline evaluator's weights
    dist = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert f"{dist}/licenses/LICENSE" in names
    meta = zipfile.ZipFile(wheel).read(f"{dist}/METADATA").decode()
    entry_points = zipfile.ZipFile(wheel).read(f"{dist}/entry_points.txt").decode()
    assert "hartkit = hartkit.cli:main" in entry_points
    assert "License-Expression: MIT" in meta and "Classifier: Programming Language :: Python :: 3" in meta
    # W&B and Triton are extras: the default path (logger=none, torch kernels) installs without them
    requires = [ln for ln in meta.splitlines() if ln.startswith("Requires-Dist:")]
    for optional in ("wandb", "triton"):
        assert all("extra ==" in ln for ln in requires if ln.split()[1].startswith(optional)), optional


def test_the_unpacked_wheel_runs_outside_the_checkout(wheel, tmp_path):
    """hartkit imported from the wheel's files (not the checkout) finds its configs through pkg://hartkit.conf."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1",
           "HARTKIT_CACHE_DIR": str(tmp_path / "cache")}
    probe = ("import hartkit, hartkit.configs as c; from hartkit.ar_models.presets import load_preset; "
             "print(hartkit.__file__); print(c.hydra_config_path()); print(load_preset('tiny').depth)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    where, config_path, depth = out.stdout.split()
    assert Path(where).is_relative_to(site) and config_path == "pkg://hartkit.conf" and depth == "4"
    run = subprocess.run([sys.executable, "-m", "hartkit", "stages=[preview]", "experiment=smoke"], cwd=work,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (work / "outputs" / "smoke" / "artifacts" / "preview" / "synthscenes-64.png").is_file()
    assert "train: 16 images" in run.stdout
