"""photos: crops of the bundled photographs, split by photograph."""

from __future__ import annotations

from collections import Counter

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from hartkit.data import build_dataset
from hartkit.data.bundled_photos import load_photo
from hartkit.data.config import DataConfig
from hartkit.data.photos import TEST_PHOTOS, TRAIN_PHOTOS, render_crop


def _find_exact(crop: np.ndarray, photo: np.ndarray) -> bool:
    """Is `crop` an exact sub-array of `photo`? (locate a 3x3 corner patch, then compare the whole crop)"""
    patch = crop[:3, :3]
    windows = sliding_window_view(photo, patch.shape)[..., 0, :, :, :]  # (H-2, W-2, 3, 3, 3)
    hits = np.argwhere((windows == patch).all(axis=(-1, -2, -3)))
    r = crop.shape[0]
    return any(np.array_equal(photo[y : y + r, x : x + r], crop) for y, x in hits)


def test_train_and_test_photographs_are_disjoint():
    assert not set(TRAIN_PHOTOS) & set(TEST_PHOTOS)
    cfg = DataConfig(name="photos", train_size=18, test_size=8)
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    assert set(train["category"]) == set(TRAIN_PHOTOS)
    assert set(test["category"]) == set(TEST_PHOTOS)
    assert set(Counter(train["category"]).values()) == {2}  # balanced over photographs
    assert all(p.startswith("a photo of ") for p in list(train["prompt"]) + list(test["prompt"]))
    assert train[0]["image"].size == (64, 64) and train[0]["image"].mode == "RGB"


def test_crops_are_pixels_of_the_named_photograph():
    # a crop side of 1/8 of a 512-px photo is exactly 64 px: no resize, so the crop must be found verbatim
    checked = 0
    for split, names in (("train", TRAIN_PHOTOS), ("test", TEST_PHOTOS)):
        for index in range(len(names)):
            photo = np.asarray(load_photo(names[index]))
            if min(photo.shape[:2]) != 512:
                continue
            img, prompt, name = render_crop(0, split, index, 64, crop_scale=(0.125, 0.125))
            assert name == names[index]
            crop = np.asarray(img)
            assert _find_exact(crop, photo), (split, index, name)
            other = next(n for n in TRAIN_PHOTOS + TEST_PHOTOS if n != name)
            assert not _find_exact(crop, np.asarray(load_photo(other)))
            checked += 1
    assert checked >= 4


def test_photos_are_deterministic_and_vary_with_index():
    a = np.asarray(render_crop(0, "train", 9, 48)[0])
    b = np.asarray(render_crop(0, "train", 9, 48)[0])
    c = np.asarray(render_crop(0, "train", 18, 48)[0])  # same photograph, another crop
    assert np.array_equal(a, b) and not np.array_equal(a, c)
