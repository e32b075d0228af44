"""Built splits live in an on-disk cache shared by processes (one builds, the others wait and reuse it); the
preview renders only what it shows; MJHQ-30K reads its download folder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from hartkit.data import build_dataset, category_counts, clear_cache, head
from hartkit.data.config import DataConfig

ROOT = Path(__file__).resolve().parents[1]

# a child process that builds one split and reports how many items it rendered itself
_BUILD = textwrap.dedent("""
    import sys
    import hartkit.data.builder as builder
    from hartkit.data.config import DataConfig

    rendered = []
    original = builder._render
    builder._render = lambda cfg, split, size, names: rendered.append(size) or original(cfg, split, size, names)
    ds = builder.build_dataset(DataConfig(resolution=16, train_size=24, test_size=2, seed=11), "train")
    print("RENDERED", sum(rendered), "PROMPT0", ds[0]["prompt"])
""")


def _child(cache: Path) -> subprocess.Popen:
    env = {**os.environ, "HARTKIT_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", _BUILD], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _rendered(proc: subprocess.Popen) -> tuple[int, str]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith("RENDERED"))
    count, prompt = line.removeprefix("RENDERED ").split(" PROMPT0 ")
    return int(count), prompt


def test_a_second_process_reuses_the_split_on_disk(tmp_path, monkeypatch):
    count, prompt = _rendered(_child(tmp_path))
    assert count == 24
    # this process (same cache, empty memory cache) loads it: rendering now would fail the test
    monkeypatch.setenv("HARTKIT_CACHE_DIR", str(tmp_path))
    clear_cache()
    from hartkit.data import synthscenes

    monkeypatch.setattr(synthscenes, "render_scene", lambda *a, **k: pytest.fail("re-rendered a cached split"))
    ds = build_dataset(DataConfig(resolution=16, train_size=24, test_size=2, seed=11), "train")
    assert ds[0]["prompt"] == prompt and len(ds) == 24
    entries = [p for p in (tmp_path / "datasets").iterdir() if (p / "dataset_info.json").is_file()]
    assert len(entries) == 1 and entries[0].name.startswith("synthscenes-train-")


def test_processes_starting_together_build_the_split_once(tmp_path):
    """As the ranks of a torchrun job do: one builds under the lock, the others wait and load its copy."""
    procs = [_child(tmp_path) for _ in range(3)]
    results = [_rendered(p) for p in procs]
    assert sorted(count for count, _ in results) == [0, 0, 24]
    assert len({prompt for _, prompt in results}) == 1


def test_the_cache_location_follows_data_cache_dir_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HARTKIT_CACHE_DIR", str(tmp_path / "env"))
    clear_cache()
    build_dataset(DataConfig(resolution=16, train_size=2, test_size=2, seed=12), "test")
    assert list((tmp_path / "env" / "datasets").glob("synthscenes-test-*/dataset_info.json"))
    clear_cache()
    build_dataset(DataConfig(resolution=16, train_size=2, test_size=2, seed=12, cache_dir=str(tmp_path / "own")), "test")
    assert list((tmp_path / "own").glob("synthscenes-test-*/dataset_info.json"))


def test_paths_cache_of_a_run_sets_the_cache(compose_cfg, tmp_path, monkeypatch):
    from hartkit.pipeline import run_pipeline

    monkeypatch.setenv("HARTKIT_CACHE_DIR", str(tmp_path / "not-this-one"))
    run_pipeline(compose_cfg("stages=[preview]", f"paths.cache={tmp_path / 'run-cache'}", "data.train_size=4",
                             "data.test_size=2", "preview_samples=2"))
    assert os.environ["HARTKIT_CACHE_DIR"] == str(tmp_path / "run-cache")


@pytest.mark.parametrize("name", ["synthscenes", "photos"])
def test_categories_are_counted_without_rendering(name, monkeypatch, tmp_path):
    monkeypatch.setenv("HARTKIT_CACHE_DIR", str(tmp_path))
    cfg = DataConfig(name=name, resolution=16, train_size=23, test_size=7, seed=5)
    import hartkit.data.builder as builder

    monkeypatch.setattr(builder, "_render", lambda *a, **k: pytest.fail("rendered to count categories"))
    counts = {split: category_counts(cfg, split) for split in ("train", "test")}
    monkeypatch.undo()
    monkeypatch.setenv("HARTKIT_CACHE_DIR", str(tmp_path))
    for split, counted in counts.items():
        assert counted == Counter(build_dataset(cfg, split)["category"]), split


def test_head_renders_only_the_items_it_returns(monkeypatch, tmp_path):
    monkeypatch.setenv("HARTKIT_CACHE_DIR", str(tmp_path))
    clear_cache()
    from hartkit.data import synthscenes

    calls = []
    original = synthscenes.render_scene
    monkeypatch.setattr(synthscenes, "render_scene", lambda *a, **k: calls.append(a) or original(*a, **k))
    cfg = DataConfig(resolution=16, train_size=300, test_size=2, seed=6)
    first = head(cfg, "train", 4)
    assert len(first) == 4 and len(calls) == 4
    full = build_dataset(cfg, "train")  # the full split renders all 300: the first 4 are the same scenes
    assert len(calls) == 4 + 300
    for i in range(4):
        assert first[i]["prompt"] == full[i]["prompt"]
        assert np.array_equal(np.asarray(first[i]["image"]), np.asarray(full[i]["image"]))


def test_preview_renders_what_it_shows_and_no_more(compose_cfg, monkeypatch, capsys):
    from hartkit.data import synthscenes
    from hartkit.pipeline import run_pipeline

    clear_cache()
    calls = []
    original = synthscenes.render_scene
    monkeypatch.setattr(synthscenes, "render_scene", lambda *a, **k: calls.append(a) or original(*a, **k))
    run_pipeline(compose_cfg("stages=[preview]", "data.train_size=2000", "data.test_size=500", "data.seed=7",
                             "preview_samples=6"))
    assert len(calls) == 6
    out = capsys.readouterr().out
    assert "train: 2000 images, 10 categories" in out and "test: 500 images" in out


def test_mjhq_reads_the_download_folder(tmp_path):
    """`hf download ... --include mjhq30k_imgs.zip --include meta_data.json --local-dir DIR` -> data.path=DIR."""
    from hartkit.data.mjhq import DOWNLOAD_COMMAND
    from hartkit.data.testing import make_mjhq

    zip_path = make_mjhq(tmp_path / "mjhq30k", as_zip=True)
    assert zip_path.parent == tmp_path / "mjhq30k"
    by_folder = build_dataset(DataConfig(name="mjhq30k", path=str(tmp_path / "mjhq30k"), resolution=16), "test")
    by_zip = build_dataset(DataConfig(name="mjhq30k", path=str(zip_path), resolution=16), "test")
    assert len(by_folder) == len(by_zip) > 0
    assert list(by_folder["prompt"]) == list(by_zip["prompt"])
    assert "--include mjhq30k_imgs.zip" in DOWNLOAD_COMMAND and "--include meta_data.json" in DOWNLOAD_COMMAND
    assert DOWNLOAD_COMMAND.startswith("hf download playgroundai/MJHQ-30K --repo-type dataset")
