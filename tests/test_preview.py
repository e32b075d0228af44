"""The preview stage writes its captioned grid and prints statistics; every data option builds from its config."""

from __future__ import annotations

import pytest
from PIL import Image

from hartkit.data import build_dataset
from hartkit.data.testing import make_mjhq, write_image
from hartkit.pipeline import run_pipeline


@pytest.mark.parametrize("dataset", ["synthscenes", "photos"])
def test_preview_stage_writes_its_png(compose_cfg, tmp_path, capsys, dataset):
    cfg = compose_cfg("stages=[preview]", f"data={dataset}", "data.train_size=20", "data.test_size=10")
    ctx = run_pipeline(cfg)
    png = tmp_path / "artifacts" / "preview" / f"{dataset}-64.png"
    assert ctx.state["preview_path"] == png and png.exists()
    with Image.open(png) as im:
        assert im.width > 300 and im.height > 300
    out = capsys.readouterr().out
    assert "train: 20 images" in out and "test: 10 images" in out and "64 x 64" in out


def test_every_data_option_builds_from_its_config(compose_cfg, tmp_path):
    mjhq_zip = make_mjhq(tmp_path / "mjhq", as_zip=True)
    write_image(tmp_path / "folder" / "things" / "a.png", "RGB")
    options = {
        "synthscenes": ["data.train_size=4", "data.test_size=2"],
        "photos": ["data.train_size=4", "data.test_size=2"],
        "mjhq30k": [f"data.path={mjhq_zip}", "data.resolution=32"],
        "imagefolder": [f"data.path={tmp_path / 'folder'}"],
    }
    for name, overrides in options.items():
        cfg = compose_cfg(f"data={name}", *overrides)
        ds = build_dataset(cfg.data, "test")
        row = ds[0]
        assert set(row) == {"image", "prompt", "category", "category_id"}, name
        assert row["image"].size == (cfg.data.resolution,) * 2 and row["image"].mode == "RGB", name


def test_imagefolder_without_path_says_which_key(compose_cfg):
    cfg = compose_cfg("data=imagefolder")
    with pytest.raises(FileNotFoundError, match=r"data\.path"):
        build_dataset(cfg.data, "train")
