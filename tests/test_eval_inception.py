"""The `fid` path end to end on a randomly initialised Inception of clean-fid's architecture (no download).

The test builds clean-fid's FID-Inception (torchvision Inception-v3 patched with
clean-fid's FIDInception blocks), scripts it into the TorchScript layout of
``inception-2015-12-05.pt`` (a module whose ``layers`` map 299 px inputs to
2048-d pool features) and lets hartkit load it through clean-fid's own
``InceptionV3W(dir, download=False)``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from hartkit.eval import features as features_mod
from hartkit.eval.features import INCEPTION_FILE, FeatureExtractorError, InceptionFID, find_inception_weights


class _TorchScriptLayout(nn.Module):
    def __init__(self, inc):
        super().__init__()
        self.layers = nn.Sequential(
            inc.Conv2d_1a_3x3, inc.Conv2d_2a_3x3, inc.Conv2d_2b_3x3, nn.MaxPool2d(3, 2),
            inc.Conv2d_3b_1x1, inc.Conv2d_4a_3x3, nn.MaxPool2d(3, 2),
            inc.Mixed_5b, inc.Mixed_5c, inc.Mixed_5d, inc.Mixed_6a, inc.Mixed_6b, inc.Mixed_6c, inc.Mixed_6d,
            inc.Mixed_6e, inc.Mixed_7a, inc.Mixed_7b, inc.Mixed_7c, nn.AdaptiveAvgPool2d(1),
        )  # fmt: skip

    def forward(self, x):
        return self.layers(x)


def _random_fid_inception() -> nn.Module:
    from cleanfid import inception_pytorch as ip

    torch.manual_seed(0)
    inc = ip._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    inc.Mixed_5b = ip.FIDInceptionA(192, pool_features=32)
    inc.Mixed_5c = ip.FIDInceptionA(256, pool_features=64)
    inc.Mixed_5d = ip.FIDInceptionA(288, pool_features=64)
    inc.Mixed_6b = ip.FIDInceptionC(768, channels_7x7=128)
    inc.Mixed_6c = ip.FIDInceptionC(768, channels_7x7=160)
    inc.Mixed_6d = ip.FIDInceptionC(768, channels_7x7=160)
    inc.Mixed_6e = ip.FIDInceptionC(768, channels_7x7=192)
    inc.Mixed_7b = ip.FIDInceptionE_1(1280)
    inc.Mixed_7c = ip.FIDInceptionE_2(2048)
    model = _TorchScriptLayout(inc).eval()
    for m in model.modules():  # variance-preserving init, so features depend on the input
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return model


@pytest.fixture(scope="module")
def inception_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inception")
    torch.jit.script(_random_fid_inception()).save(str(folder / INCEPTION_FILE))
    return folder


@pytest.mark.slow
def test_fid_path_end_to_end_with_clean_fid_loader(inception_dir):
    from cleanfid.inception_torchscript import InceptionV3W
    from cleanfid.resize import build_resizer

    features_mod.clear_extractor_cache()
    extractor = features_mod.build_feature_extractor("fid", {"inception_weights": str(inception_dir)})
    assert isinstance(extractor, InceptionFID) and extractor.name == "fid"
    assert len(extractor.weights_hash) == 64
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 32, 32, generator=g)
    feats = extractor(images)
    assert feats.shape == (3, 2048) and torch.isfinite(feats).all()
    assert feats.std(0).mean() > 0  # features depend on the image

    # the same numbers as clean-fid's own clean-mode pipeline: uint8 image -> PIL bicubic to 299 -> model
    resize = build_resizer("clean")
    u8 = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    x = torch.from_numpy(np.stack([resize(a) for a in u8])).permute(0, 3, 1, 2)
    with torch.no_grad():
        expected = InceptionV3W(str(inception_dir), download=False)(x)
    assert torch.allclose(feats, expected, rtol=1e-4, atol=1e-5)


def test_missing_inception_weights_error_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(features_mod, "clean_fid_cache_dir", lambda: tmp_path)
    monkeypatch.setattr(features_mod.tempfile, "gettempdir", lambda: str(tmp_path))
    with pytest.raises(FeatureExtractorError, match=INCEPTION_FILE) as info:
        find_inception_weights(None)
    assert "eval.inception_weights" in str(info.value) and str(tmp_path) in str(info.value)
    with pytest.raises(FeatureExtractorError, match=INCEPTION_FILE):
        find_inception_weights(tmp_path / "nowhere")
    wrong = tmp_path / "inception.pt"
    wrong.write_bytes(b"x")
    with pytest.raises(FeatureExtractorError, match="rename"):
        find_inception_weights(wrong)
