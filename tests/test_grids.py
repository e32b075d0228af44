"""hartkit's one image-grid writer (hartkit/utils/grids.py): value ranges, captions, rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hartkit.utils.grids import _to_hwc, save_captioned_samples, save_labelled_rows


def test_value_ranges_map_to_the_same_pixels():
    img01 = torch.tensor([0.0, 0.25, 1.0]).view(3, 1, 1).expand(3, 2, 2)
    np.testing.assert_allclose(_to_hwc(img01, (0, 1)), _to_hwc(img01 * 2 - 1, (-1, 1)), atol=1e-6)
    # a model output in [-1, 1] that happens to have no negative value is still mapped as one when told so
    bright = torch.full((3, 2, 2), 0.5)
    assert _to_hwc(bright, (-1, 1))[0, 0, 0] == pytest.approx(0.75)
    assert _to_hwc(bright)[0, 0, 0] == pytest.approx(0.5)  # guessed: (0, 1)
    assert _to_hwc(bright - 1)[0, 0, 0] == pytest.approx(0.25)  # guessed: (-1, 1)


def test_grids_are_png_files_and_tolerate_missing_captions(tmp_path):
    images = torch.rand(5, 3, 8, 8) * 2 - 1
    path = save_captioned_samples(images, ["one", "two"], tmp_path / "a" / "samples.png", title="t", cols=3,
                                  value_range=(-1, 1))
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > im.height > 0
    rows = save_labelled_rows([("original", images), ("decoded", images[:3])], tmp_path / "rows.png",
                              value_range=(-1, 1))
    with Image.open(rows) as im:
        assert im.format == "PNG"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "rows.png", "samples.png"]  # no temporary left
