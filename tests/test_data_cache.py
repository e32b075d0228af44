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


# ---------------------------------------------------------------- file-backed datasets on disk


def _image_folder(root: Path) -> Path:
    from hartkit.data.testing import write_image

    write_image(root / "cats" / "a.png", "RGB", size=(40, 30), seed=1)
    write_image(root / "cats" / "b.png", "L", seed=2)
    write_image(root / "dogs" / "c.png", "RGB", size=(30, 50), seed=3)
    (root / "dogs" / "broken.jpg").write_bytes(b"not an image")  # checked once, then remembered as skipped
    return root


def _counting_scans(monkeypatch, name: str) -> list:
    """Count the calls that list and check the files (what the disk cache saves a later process)."""
    import hartkit.data.builder as builder

    calls: list = []
    original = getattr(builder, name)
    monkeypatch.setattr(builder, name, lambda *a: calls.append(a) or original(*a))
    return calls


def _pixels(ds) -> list:
    return [np.asarray(ds[i]["image"]) for i in range(len(ds))]


def _names(ds) -> list[str]:
    return list(ds.with_format(None)["image"])  # the file names (without the transform that decodes them)


def test_an_image_folder_is_listed_and_checked_once_then_read_from_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("HARTKIT_CACHE_DIR", str(tmp_path / "cache"))
    root = _image_folder(tmp_path / "imgs")
    cfg = DataConfig(name="imagefolder", path=str(root), resolution=16)
    scans = _counting_scans(monkeypatch, "_scan_imagefolder")
    clear_cache()
    first = build_dataset(cfg, "train")
    assert len(scans) == 1 and len(first) == 3
    [entry] = [p for p in (tmp_path / "cache" / "datasets").iterdir() if (p / "dataset_info.json").is_file()]
    assert entry.name.startswith("imagefolder-train-")

    clear_cache()  # as a new process: nothing in memory, the entry on disk
    again = build_dataset(cfg, "train")
    assert len(scans) == 1, "the folder was listed and checked again instead of read from the cache"
    assert _names(again) == _names(first) and list(again["prompt"]) == list(first["prompt"])
    assert again[0]["image"].size == (16, 16)  # the lazy decoding is attached again to the loaded table
    assert all(np.array_equal(a, b) for a, b in zip(_pixels(again), _pixels(first)))


@pytest.mark.parametrize("change", ["modified", "added", "removed"])
def test_a_changed_file_under_the_folder_invalidates_the_cached_split(tmp_path, monkeypatch, change):
    from hartkit.data.testing import write_image

    monkeypatch.setenv("HARTKIT_CACHE_DIR", str(tmp_path / "cache"))
    root = _image_folder(tmp_path / "imgs")
    cfg = DataConfig(name="imagefolder", path=str(root), resolution=16)
    scans = _counting_scans(monkeypatch, "_scan_imagefolder")
    clear_cache()
    before = build_dataset(cfg, "train")
    old_a = np.asarray(before[_names(before).index("cats/a.png")]["image"])  # decoded now: read lazily
    top = root.stat().st_mtime_ns  # the change is inside a sub-folder: the top folder's own stamp stays
    if change == "modified":
        write_image(root / "cats" / "a.png", "RGB", size=(40, 30), seed=9)
        os.utime(root / "cats" / "a.png", ns=(1_000_000_000, 1_000_000_000))
    elif change == "added":
        write_image(root / "dogs" / "d.png", "RGB", seed=4)
    else:
        (root / "cats" / "b.png").unlink()
    os.utime(root, ns=(top, top))
    clear_cache()
    after = build_dataset(cfg, "train")
    assert len(scans) == 2, "a stale split was read from the cache"
    expected = {"modified": 3, "added": 4, "removed": 2}[change]
    assert len(after) == expected
    if change == "modified":
        row = _names(after).index("cats/a.png")
        assert not np.array_equal(np.asarray(after[row]["image"]), old_a)
    entries = [p for p in (tmp_path / "cache" / "datasets").iterdir() if (p / "dataset_info.json").is_file()]
    assert len(entries) == 2


def test_mjhq_is_cached_on_disk_and_its_meta_data_beside_the_folder_is_part_of_the_key(tmp_path, monkeypatch):
    import json

    from hartkit.data.testing import make_mjhq

    monkeypatch.setenv("HARTKIT_CACHE_DIR", str(tmp_path / "cache"))
    images = make_mjhq(tmp_path / "mjhq", as_zip=False)  # the unpacked folder; meta_data.json beside it
    cfg = DataConfig(name="mjhq30k", path=str(images), resolution=16)
    scans = _counting_scans(monkeypatch, "_scan_mjhq30k")
    clear_cache()
    first = build_dataset(cfg, "test")
    clear_cache()
    again = build_dataset(cfg, "train")  # MJHQ's one split: train reads the same entry
    assert len(scans) == 1 and list(again["prompt"]) == list(first["prompt"]) and len(first) == 10
    assert again[0]["image"].size == (16, 16)

    meta_file = tmp_path / "mjhq" / "meta_data.json"
    meta = json.loads(meta_file.read_text())
    meta["ani0000hash"]["prompt"] = "a rewritten caption"
    meta_file.write_text(json.dumps(meta))
    clear_cache()
    changed = build_dataset(cfg, "test")
    assert len(scans) == 2 and "a rewritten caption" in list(changed["prompt"])


def test_a_cached_file_backed_split_whose_images_are_gone_says_what_to_delete(tmp_path, monkeypatch):
    import shutil

    import hartkit.data.builder as builder
    from hartkit.errors import ConfigError

    monkeypatch.setenv("HARTKIT_CACHE_DIR", str(tmp_path / "cache"))
    root = _image_folder(tmp_path / "imgs")
    cfg = DataConfig(name="imagefolder", path=str(root), resolution=16)
    clear_cache()
    build_dataset(cfg, "train")
    entry = builder._disk_entry(cfg, "train")
    moved = tmp_path / "elsewhere"
    shutil.move(str(root), moved)
    with pytest.raises(ConfigError, match="which is gone") as err:
        builder._load_entry(cfg, entry)
    assert str(entry) in str(err.value)


# ---------------------------------------------------------------- distributed: rank 0 builds, the others wait

# one rank of a two-rank job: joins a gloo group ("gloo") or only has torchrun's variables ("env"); rank 1 says
# it is about to build and rank 0 starts a moment later, so a rank-agnostic lock would let rank 1 build
_RANK = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path

    import hartkit.data.builder as builder
    from hartkit.data.config import DataConfig

    mode, rank, folder, work = sys.argv[1], int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    original = builder._scan_imagefolder

    def counted(cfg, split):
        with open(work / "built-by", "a") as fh:
            fh.write(f"{rank}\\n")
        return original(cfg, split)

    builder._scan_imagefolder = counted
    if mode == "gloo":
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"file://{work / 'store'}", rank=rank, world_size=2)
    if rank == 1:
        (work / "rank1-ready").touch()
    else:
        deadline = time.monotonic() + 120
        while not (work / "rank1-ready").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
    ds = builder.build_dataset(DataConfig(name="imagefolder", path=folder, resolution=16), "train")
    print("ITEMS", len(ds), "|".join(ds["prompt"]), ds[len(ds) - 1]["image"].size)
    if mode == "gloo":
        dist.destroy_process_group()
""")


def _rank_process(mode: str, rank: int, folder: Path, work: Path, cache: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(HARTKIT_CACHE_DIR=str(cache), OMP_NUM_THREADS="1", HARTKIT_CACHE_TIMEOUT="240")
    if mode == "env":
        env.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    return subprocess.Popen([sys.executable, "-c", _RANK, mode, str(rank), str(folder), str(work)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("mode", ["env", "gloo"])
def test_only_rank_0_builds_and_the_other_rank_waits_for_its_copy(tmp_path, mode):
    folder = _image_folder(tmp_path / "imgs")
    work = tmp_path / "work"
    work.mkdir()
    procs = [_rank_process(mode, rank, folder, work, tmp_path / "cache") for rank in (1, 0)]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        outs.append(next(line for line in out.splitlines() if line.startswith("ITEMS")))
    assert (work / "built-by").read_text().split() == ["0"]
    assert outs[0] == outs[1] and outs[0].startswith("ITEMS 3 ")


def test_a_waiting_rank_gives_up_naming_the_folder_it_waited_for(tmp_path, monkeypatch):
    import hartkit.data.builder as builder
    from hartkit.errors import is_user_error
    from hartkit.utils.cache import CacheWaitError

    monkeypatch.setenv("HARTKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv("HARTKIT_CACHE_TIMEOUT", "0.5")
    monkeypatch.setattr(builder, "_scan_imagefolder", lambda *a: pytest.fail("a rank other than 0 built the split"))
    cfg = DataConfig(name="imagefolder", path=str(_image_folder(tmp_path / "imgs")), resolution=16)
    clear_cache()
    with pytest.raises(CacheWaitError) as err:
        build_dataset(cfg, "train")
    message = str(err.value)
    assert str(builder._disk_entry(cfg, "train")) in message and "HARTKIT_CACHE_TIMEOUT" in message
    assert "rank 1" in message and is_user_error(err.value)


@pytest.mark.parametrize("value", ["soon", "0", "-3"])
def test_a_bad_cache_timeout_names_the_variable(monkeypatch, value):
    from hartkit.errors import ConfigError
    from hartkit.utils.cache import wait_timeout

    monkeypatch.setenv("HARTKIT_CACHE_TIMEOUT", value)
    with pytest.raises(ConfigError, match="HARTKIT_CACHE_TIMEOUT"):
        wait_timeout()
