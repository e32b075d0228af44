"""synthscenes: deterministic, truthfully captioned, balanced, any resolution; the shared dataset API."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest
import torch

from hartkit.data import CATEGORIES, COLORS, SHAPES, ImageTensorDataset, build_dataset, collate, parse_caption
from hartkit.data.config import DataConfig
from hartkit.data.synthscenes import POSITIONS, SIZES, render_scene


def _pixels(img) -> np.ndarray:
    return np.asarray(img)


def test_same_seed_and_index_give_identical_pixels_and_caption():
    a_img, a_cap, _ = render_scene(3, "train", 17, 64)
    b_img, b_cap, _ = render_scene(3, "train", 17, 64)
    assert a_cap == b_cap
    assert np.array_equal(_pixels(a_img), _pixels(b_img))


def test_different_index_seed_or_split_give_different_scenes():
    base_img, base_cap, _ = render_scene(0, "train", 5, 64)
    for other in (render_scene(0, "train", 6, 64), render_scene(1, "train", 5, 64), render_scene(0, "test", 5, 64)):
        assert not np.array_equal(_pixels(other[0]), _pixels(base_img))


def test_pixel_at_each_object_centre_has_the_captioned_colour():
    for index in range(60):
        img, caption, layout = render_scene(0, "train", index, 64)
        parsed = parse_caption(caption)
        assert len(parsed["objects"]) == len(layout.objects)
        for named, obj in zip(parsed["objects"], layout.objects):
            assert named == {"size": obj.size, "color": obj.color, "shape": obj.shape, "position": obj.position}
            x, y = int(obj.center[0]), int(obj.center[1])
            assert img.getpixel((x, y)) == COLORS[obj.color], (index, caption, obj)


def test_layout_positions_match_the_grid_cells_named_in_the_caption():
    for index in range(40):
        _, _, layout = render_scene(0, "test", index, 96)
        cells = set()
        for obj in layout.objects:
            col, row = int(obj.center[0] // 32), int(obj.center[1] // 32)
            assert POSITIONS[row * 3 + col] == obj.position
            cells.add((row, col))
        assert len(cells) == len(layout.objects)  # one object per cell: no centre is hidden


def test_parse_caption_returns_the_main_object_and_background():
    img, caption, layout = render_scene(0, "train", 12, 64)
    parsed = parse_caption(caption)
    main = layout.main
    assert (parsed["shape"], parsed["color"], parsed["size"], parsed["position"]) == (
        main.shape,
        main.color,
        main.size,
        main.position,
    )
    assert parsed["background"] == layout.background
    assert caption.startswith(f"a {main.size} {main.color} {main.shape} at the {main.position}")
    assert parse_caption("a photo of a dog")["shape"] is None


def test_parse_caption_reads_every_background_kind():
    seen = set()
    for index in range(40):
        _, caption, layout = render_scene(0, "train", index, 64)
        assert parse_caption(caption)["background_kind"] == layout.background_kind, caption
        seen.add(layout.background_kind)
    assert seen == {"photo", "gradient", "noise"}
    assert parse_caption("a photo of a dog")["background_kind"] is None


def test_categories_are_balanced_and_name_the_main_shape():
    ds = build_dataset(DataConfig(train_size=50, test_size=20), "train")
    counts = Counter(ds["category"])
    assert set(counts) == set(CATEGORIES) and len(CATEGORIES) == 10 == len(SHAPES)
    assert set(counts.values()) == {5}
    for row in ds.select(range(10)):
        assert parse_caption(row["prompt"])["shape"] == row["category"]
        assert CATEGORIES[row["category_id"]] == row["category"]


@pytest.mark.parametrize("resolution", [256, 1024])
def test_renders_at_large_resolutions(resolution):
    img, caption, layout = render_scene(0, "test", 4, resolution)
    assert img.size == (resolution, resolution) and img.mode == "RGB"
    main = layout.main
    assert img.getpixel((int(main.center[0]), int(main.center[1]))) == COLORS[main.color]
    assert abs(main.radius - SIZES[main.size] / 2 * resolution) < 1e-6


def test_build_dataset_columns_splits_and_cache():
    cfg = DataConfig(resolution=32, train_size=30, test_size=20, seed=7)
    train = build_dataset(cfg, "train")
    test = build_dataset(cfg, "test")
    assert (len(train), len(test)) == (30, 20)
    assert set(train.column_names) == {"image", "prompt", "category", "category_id"}
    row = train[0]
    assert row["image"].mode == "RGB" and row["image"].size == (32, 32)
    assert not set(train["prompt"]) & set(test["prompt"])  # the splits are different scenes
    img, caption, _ = render_scene(7, "train", 3, 32)
    assert train[3]["prompt"] == caption and np.array_equal(_pixels(train[3]["image"]), _pixels(img))

    t0 = time.perf_counter()
    again = build_dataset(cfg, "train")
    assert time.perf_counter() - t0 < 0.5
    again.set_format("numpy")  # a caller's format must not leak into the cached copy
    assert build_dataset(cfg, "train")[0]["image"].mode == "RGB"


def test_config_typos_and_bad_values_fail_with_the_key():
    with pytest.raises(ValueError, match="data.max_objects"):
        render_scene(0, "train", 0, 64, max_objects=10)
    with pytest.raises(ValueError, match="data.backgrounds"):
        build_dataset(DataConfig(train_size=2, backgrounds=["sky"]), "train")
    with pytest.raises(ValueError, match="split"):
        build_dataset(DataConfig(train_size=2), "validation")


def test_only_procedural_backgrounds_when_asked():
    ds = build_dataset(DataConfig(train_size=20, test_size=2, backgrounds=["gradient"]), "train")
    assert all("gradient" in parse_caption(p)["background"] for p in ds["prompt"])


def test_noise_grain_changes_only_the_grain_of_noise_backgrounds():
    """data.noise_grain=0 keeps every scene's caption and objects and leaves a noise background smooth (its
    pixel-to-pixel differences shrink); the unset value is the historical grain, pixel for pixel."""
    from hartkit.data.synthscenes import NOISE_GRAIN

    for index in range(8):
        default_img, default_cap, default_layout = render_scene(0, "train", index, 64, 1, ("noise",))
        same_img, _, _ = render_scene(0, "train", index, 64, 1, ("noise",), noise_grain=NOISE_GRAIN)
        smooth_img, smooth_cap, smooth_layout = render_scene(0, "train", index, 64, 1, ("noise",), noise_grain=0.0)
        assert np.array_equal(np.asarray(default_img), np.asarray(same_img))
        assert smooth_cap == default_cap and smooth_layout == default_layout
        rough, smooth = (np.asarray(im, np.float32) for im in (default_img, smooth_img))
        step = lambda a: np.abs(np.diff(a, axis=1)).mean()  # noqa: E731
        assert step(smooth) < 0.6 * step(rough), (index, step(smooth), step(rough))
    with pytest.raises(ValueError, match="noise_grain"):
        render_scene(0, "train", 0, 64, noise_grain=-0.1)


def test_torch_dataset_and_collate():
    ds = build_dataset(DataConfig(resolution=32, train_size=10, test_size=2), "train")
    tds = ImageTensorDataset(ds)
    loader = torch.utils.data.DataLoader(tds, batch_size=4, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert batch["image"].min() < -0.5 and batch["image"].max() > 0.5  # really rescaled, not [0, 1]
    assert batch["category_id"].tolist() == [0, 1, 2, 3] and batch["index"].tolist() == [0, 1, 2, 3]
    assert batch["prompt"] == ds["prompt"][:4] and batch["category"] == ds["category"][:4]
    # pixel values map exactly: 0 -> -1, 255 -> 1
    raw = np.asarray(ds[0]["image"]).astype(np.float32)
    assert torch.allclose(tds[0]["image"], torch.from_numpy(raw / 127.5 - 1).permute(2, 0, 1))


def test_cache_dir_saves_and_reloads_the_same_dataset(tmp_path, monkeypatch):
    from hartkit.data import clear_cache, synthscenes

    cfg = DataConfig(resolution=16, train_size=6, test_size=2, cache_dir=str(tmp_path))
    first = build_dataset(cfg, "train")
    assert len([p for p in tmp_path.iterdir() if (p / "dataset_info.json").is_file()]) == 1
    clear_cache()  # as in a new process: only the disk copy is left
    monkeypatch.setattr(synthscenes, "render_scene", lambda *a, **k: pytest.fail("re-rendered despite cache_dir"))
    again = build_dataset(cfg, "train")
    assert list(again["prompt"]) == list(first["prompt"])
    assert np.array_equal(np.asarray(again[5]["image"]), np.asarray(first[5]["image"]))


def test_parallel_build_gives_the_same_dataset(tmp_path):
    from hartkit.data import clear_cache

    # separate disk caches: the parallel build must really render, not load the serial one's copy
    cfg = DataConfig(resolution=24, train_size=12, test_size=2, seed=3, cache_dir=str(tmp_path / "serial"))
    serial = build_dataset(cfg, "train")
    clear_cache()
    parallel = build_dataset(DataConfig(resolution=24, train_size=12, test_size=2, seed=3, num_workers=2,
                                        cache_dir=str(tmp_path / "parallel")), "train")
    assert list(parallel["prompt"]) == list(serial["prompt"])
    assert all(np.array_equal(np.asarray(parallel[i]["image"]), np.asarray(serial[i]["image"])) for i in range(12))


def test_objects_fit_their_cell_and_stand_out_from_the_background():
    from hartkit.data.synthscenes import JITTER, MIN_CONTRAST, visible_colors

    # the largest object plus the largest jitter stays inside its cell, so objects never overlap
    assert max(SIZES.values()) / 2 + JITTER < 1 / 6
    for index in range(40):
        img, caption, layout = render_scene(0, "train", index, 64)
        for obj in layout.objects:
            row, col = divmod(POSITIONS.index(obj.position), 3)
            x, y = obj.center
            assert col * 64 / 3 <= x - obj.radius and x + obj.radius <= (col + 1) * 64 / 3
            assert row * 64 / 3 <= y - obj.radius and y + obj.radius <= (row + 1) * 64 / 3
    # the palette colours offered for an object are far enough from the background under it
    bg = np.zeros((64, 64, 3), np.float32)
    bg[:, :32] = COLORS["red"]
    left = visible_colors(bg, (16.0, 16.0), 8.0)
    assert "red" not in left and "orange" in left  # orange (245, 135, 15) is 109 away from red
    assert all(np.linalg.norm(np.subtract(COLORS[c], COLORS["red"])) >= MIN_CONTRAST for c in left)
    assert "black" not in visible_colors(bg, (48.0, 16.0), 8.0)  # the right half is black
    # mid grey is far enough from every palette colour: all eight are allowed
    assert visible_colors(np.full((64, 64, 3), 128, np.float32), (32.0, 32.0), 8.0) == list(COLORS)
