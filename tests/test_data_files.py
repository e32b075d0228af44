"""File-backed datasets: MJHQ-30K's exact layout (folder and zip), image folders, bad input."""

from __future__ import annotations

import json
import logging
from collections import Counter

import numpy as np
import pytest
import torch

from hartkit.data import ImageTensorDataset, build_dataset, collate
from hartkit.data.config import DataConfig
from hartkit.data.images import CorruptImageError
from hartkit.data.mjhq import MJHQ_CATEGORIES, DatasetUnavailableError
from hartkit.data.testing import CORRUPT_HASH, MJHQ_FIXTURE_CATEGORIES, make_mjhq, write_image


def mjhq_cfg(path, **kw) -> DataConfig:
    return DataConfig(name="mjhq30k", resolution=32, path=str(path), hub_id="playgroundai/MJHQ-30K", **kw)


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_mjhq_layout_loads_skipping_the_corrupt_file(tmp_path, caplog, as_zip):
    path = make_mjhq(tmp_path / "mjhq", as_zip=as_zip)
    with caplog.at_level(logging.WARNING):
        ds = build_dataset(mjhq_cfg(path), "test")
    assert len(ds) == 3 * 3 + 1  # 3 per category + the RGBA one; the truncated JPEG is skipped
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(CORRUPT_HASH in w for w in warnings)
    assert any("skipped 1 unreadable image" in w for w in warnings)

    rows = list(ds)
    assert all(r["image"].mode == "RGB" and r["image"].size == (32, 32) for r in rows)
    assert Counter(r["category"] for r in rows) == {"animals": 3, "food": 3, "people": 4}
    assert all(MJHQ_CATEGORIES[r["category_id"]] == r["category"] for r in rows)
    assert {r["prompt"] for r in rows} >= {"prompt 0 of animals", "prompt 2 of food", "a transparent image"}


def test_mjhq_rgba_is_composited_on_white(tmp_path):
    ds = build_dataset(mjhq_cfg(make_mjhq(tmp_path / "m", as_zip=True)), "test")
    row = next(r for r in ds if r["prompt"] == "a transparent image")
    a = np.asarray(row["image"])
    assert tuple(a[16, 4]) == (255, 0, 0)  # opaque half keeps its colour
    assert tuple(a[16, 28]) == (255, 255, 255)  # transparent half is white, not black


def test_mjhq_strict_raises_naming_the_file(tmp_path):
    path = make_mjhq(tmp_path / "m", as_zip=False)
    with pytest.raises(CorruptImageError, match=CORRUPT_HASH):
        build_dataset(mjhq_cfg(path, strict=True), "test")


def test_mjhq_category_filter_and_subset(tmp_path):
    path = make_mjhq(tmp_path / "m", as_zip=True, per_category=4)
    only = build_dataset(mjhq_cfg(path, categories=["animals", "people"]), "test")
    assert set(only["category"]) == {"animals", "people"} and len(only) == 4 + 5

    sub = build_dataset(mjhq_cfg(path, subset=6), "test")
    assert len(sub) == 6
    assert Counter(sub["category"]) == dict.fromkeys(MJHQ_FIXTURE_CATEGORIES, 2)  # balanced
    bigger = build_dataset(mjhq_cfg(path, subset=9), "test")
    assert list(sub["prompt"]) == list(bigger["prompt"])[:6]  # nested and deterministic

    with pytest.raises(ValueError, match="vehicles"):
        build_dataset(mjhq_cfg(path, categories=["vehicles"]), "test")


def test_mjhq_train_split_is_the_same_set_with_a_note(tmp_path, caplog):
    path = make_mjhq(tmp_path / "m", as_zip=True)
    with caplog.at_level(logging.WARNING):
        train = build_dataset(mjhq_cfg(path), "train")
    assert list(train["prompt"]) == list(build_dataset(mjhq_cfg(path), "test")["prompt"])
    assert any("single split" in r.getMessage() for r in caplog.records)


def test_mjhq_missing_path_names_the_config_key(tmp_path):
    with pytest.raises(DatasetUnavailableError, match=r"data\.path") as err:
        build_dataset(mjhq_cfg(tmp_path / "nowhere.zip"), "test")
    assert "nowhere.zip" in str(err.value)


def test_mjhq_missing_meta_data_says_where_it_looked(tmp_path):
    path = make_mjhq(tmp_path / "m", as_zip=True)
    (tmp_path / "m" / "meta_data.json").unlink()
    with pytest.raises(DatasetUnavailableError, match=r"meta_data\.json.*data\.captions"):
        build_dataset(mjhq_cfg(path), "test")


def test_mjhq_hub_failure_explains_the_offline_route(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    cfg = DataConfig(name="mjhq30k", hub_id="playgroundai/MJHQ-30K", path=None)
    with pytest.raises(DatasetUnavailableError, match=r"data\.path=.*mjhq30k_imgs\.zip"):
        build_dataset(cfg, "test")


def test_file_backed_dataset_feeds_torch(tmp_path):
    ds = build_dataset(mjhq_cfg(make_mjhq(tmp_path / "m", as_zip=True)), "test")
    # two worker processes: the zip handle must be reopened in each, not pickled
    loader = torch.utils.data.DataLoader(ImageTensorDataset(ds), batch_size=5, collate_fn=collate, num_workers=2)
    batches = list(loader)
    assert [b["image"].shape for b in batches] == [(5, 3, 32, 32), (5, 3, 32, 32)]
    assert -1 <= batches[0]["image"].min() < batches[0]["image"].max() <= 1
    assert sum((b["prompt"] for b in batches), []) == list(ds["prompt"])


# ---------------------------------------------------------------- imagefolder


def folder_cfg(path, **kw) -> DataConfig:
    return DataConfig(name="imagefolder", resolution=24, path=str(path), **kw)


def test_imagefolder_with_class_folders_and_modes_converted(tmp_path):
    root = tmp_path / "imgs"
    write_image(root / "cats" / "a.png", "RGB", size=(50, 30))
    write_image(root / "cats" / "b.png", "L")
    write_image(root / "dogs" / "c.png", "P")
    write_image(root / "dogs" / "d.png", "RGBA", size=(20, 40))
    (root / "dogs" / "broken.jpg").write_bytes(b"not an image at all")
    ds = build_dataset(folder_cfg(root), "train")
    assert len(ds) == 4
    assert Counter(ds["category"]) == {"cats": 2, "dogs": 2}
    assert list(ds["category_id"]) == [0, 1, 0, 1]  # category-interleaved order, ids by sorted name
    assert all(r["image"].mode == "RGB" and r["image"].size == (24, 24) for r in ds)
    assert set(ds["prompt"]) == {"a photo of cats", "a photo of dogs"}


def test_imagefolder_without_class_folders_uses_file_stems(tmp_path):
    root = tmp_path / "flat"
    write_image(root / "red_car.png", "RGB")
    write_image(root / "blue-bike.jpg", "RGB")
    ds = build_dataset(folder_cfg(root), "test")
    assert set(ds["category"]) == {"none"}
    assert set(ds["prompt"]) == {"red car", "blue bike"}


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_imagefolder_captions_file(tmp_path, fmt):
    root = tmp_path / "imgs"
    write_image(root / "cats" / "a.png", "RGB")
    write_image(root / "cats" / "b.png", "RGB")
    captions = {"cats/a.png": "a tabby cat, sleeping", "b.png": "a black cat"}
    cap = tmp_path / f"captions.{fmt}"
    if fmt == "json":
        cap.write_text(json.dumps(captions))
    elif fmt == "jsonl":
        cap.write_text("\n".join(json.dumps({"file_name": k, "text": v}) for k, v in captions.items()))
    else:
        cap.write_text("file_name,caption\n" + "\n".join(f'{k},"{v}"' for k, v in captions.items()))
    ds = build_dataset(folder_cfg(root, captions=str(cap)), "train")
    assert sorted(ds["prompt"]) == ["a black cat", "a tabby cat, sleeping"]


def test_imagefolder_train_test_subfolders_are_the_splits(tmp_path):
    root = tmp_path / "data"
    write_image(root / "train" / "x" / "1.png", "RGB")
    write_image(root / "train" / "y" / "2.png", "RGB")
    write_image(root / "test" / "y" / "3.png", "RGB")
    train, test = build_dataset(folder_cfg(root), "train"), build_dataset(folder_cfg(root), "test")
    assert (len(train), len(test)) == (2, 1)
    assert test[0]["category"] == "y" and test[0]["category_id"] == 1  # same ids in both splits


def test_imagefolder_missing_path_names_the_config_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data\.path"):
        build_dataset(folder_cfg(tmp_path / "absent"), "train")
    with pytest.raises(FileNotFoundError, match=r"data\.captions"):
        write_image(tmp_path / "ok" / "a.png", "RGB")
        build_dataset(folder_cfg(tmp_path / "ok", captions=str(tmp_path / "none.json")), "train")
