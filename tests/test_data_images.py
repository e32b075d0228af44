"""Image conversions every dataset relies on: any mode to RGB, and centre crop + resize."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hartkit.data.images import center_crop_resize, resize_filter, to_rgb


def test_greyscale_becomes_three_equal_channels():
    grey = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), mode="L")
    rgb = np.asarray(to_rgb(grey))
    assert rgb.shape == (8, 8, 3)
    assert (rgb[..., 0] == np.asarray(grey)).all() and (rgb[..., 0] == rgb[..., 2]).all()


def test_sixteen_bit_greyscale_is_rescaled_not_clipped():
    a = np.full((4, 4), 65535, dtype=np.uint16)
    a[0, 0] = 0
    rgb = np.asarray(to_rgb(Image.fromarray(a)))
    assert rgb[1, 1].tolist() == [255, 255, 255] and rgb[0, 0].tolist() == [0, 0, 0]


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 255, 0))
    assert np.asarray(to_rgb(rgba))[0, 0].tolist() == [255, 255, 255]
    la = Image.new("LA", (4, 4), (0, 255))
    assert np.asarray(to_rgb(la))[0, 0].tolist() == [0, 0, 0]
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    pal.info["transparency"] = 0
    assert np.asarray(to_rgb(pal))[0, 0].tolist() == [200, 10, 10]  # index 1 is opaque


def test_centre_crop_keeps_the_middle_square():
    a = np.zeros((30, 90, 3), dtype=np.uint8)
    a[:, :30] = (255, 0, 0)
    a[:, 30:60] = (0, 255, 0)
    a[:, 60:] = (0, 0, 255)
    out = np.asarray(center_crop_resize(Image.fromarray(a), 12, resize_filter("bicubic")))
    assert out.shape == (12, 12, 3)
    assert (out == (0, 255, 0)).all()  # only the middle third survives


def test_unknown_filter_names_the_config_key():
    with pytest.raises(ValueError, match="data.resize_filter"):
        resize_filter("bicubical")
