"""fd_clip and clip_score through open_clip with a local checkpoint (the shipped tiny CLIP stands in for ViT-L-14)."""

from __future__ import annotations

import pytest
import torch

from hartkit.eval.clip_score import build_clip_scorer
from hartkit.eval.embedded.model import WEIGHTS_PATH, register_model_config
from hartkit.eval.features import FeatureExtractorError, build_feature_extractor


@pytest.fixture(scope="module")
def local_cfg():
    name = register_model_config()
    return {"fd_clip_model": name, "fd_clip_pretrained": str(WEIGHTS_PATH), "clip_model": name,
            "clip_pretrained": str(WEIGHTS_PATH)}


def test_fd_clip_from_a_local_checkpoint_matches_the_same_weights_as_fd_embedded(local_cfg):
    images = torch.rand(6, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    fd_clip = build_feature_extractor("fd_clip", local_cfg)
    fd_emb = build_feature_extractor("fd_embedded")
    assert fd_clip.name == "fd_clip" and fd_clip.weights_hash == fd_emb.weights_hash
    assert torch.allclose(fd_clip(images), fd_emb(images), atol=1e-5)


def test_clip_score_from_a_local_checkpoint_matches_clip_score_embedded(local_cfg):
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    prompts = ["a large red star at the top left, on a brick wall"] * 4
    real = build_clip_scorer("clip_score", local_cfg)
    emb = build_clip_scorer("clip_score_embedded")
    assert real.score(images, prompts) == pytest.approx(emb.score(images, prompts), abs=1e-3)
    assert "100*max(mean cos,0)" in real.describe()["scaling"]


def test_missing_open_clip_weights_say_which_key_to_set(tmp_path):
    with pytest.raises(FeatureExtractorError, match="eval.fd_clip_pretrained"):
        build_feature_extractor("fd_clip", {"fd_clip_model": "ViT-B-32", "fd_clip_pretrained": None})
    with pytest.raises(FeatureExtractorError, match="no such file"):
        build_clip_scorer("clip_score", {"clip_model": "ViT-L-14", "clip_pretrained": str(tmp_path / "x.bin")})
    with pytest.raises(FeatureExtractorError, match="fd_dinov2"):
        build_feature_extractor("fd_dinov2")
    with pytest.raises(FeatureExtractorError, match="unknown feature space"):
        build_feature_extractor("fid_dinov2")
