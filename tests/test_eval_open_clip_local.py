"""fd_clip and clip_score through open_clip with a local checkpoint file.

A tiny, randomly initialised open_clip CLIP saved to a temporary file stands in for ViT-L-14 (the embedded
evaluator is no longer an open_clip model, so it cannot play that part any more); the metrics must give exactly
what that model computes directly.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from hartkit.eval.clip_score import build_clip_scorer
from hartkit.eval.features import FeatureExtractorError, build_feature_extractor, to_uint8
from hartkit.utils.hashing import file_sha256

NAME = "hartkit-test-tiny-clip"
TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import open_clip

    folder = tmp_path_factory.mktemp("tiny_clip")
    config = folder / f"{NAME}.json"
    config.write_text(json.dumps(TINY))
    if NAME not in open_clip.list_models():
        open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model(NAME, pretrained=None).eval()
    checkpoint = folder / "tiny_clip.pt"
    torch.save(model.state_dict(), checkpoint)
    return model, checkpoint, open_clip.get_tokenizer(NAME)


def _preprocessed(model, images_B3HW: torch.Tensor) -> torch.Tensor:
    cfg = model.visual.preprocess_cfg
    size = cfg["size"][0] if isinstance(cfg["size"], (tuple, list)) else cfg["size"]
    x = to_uint8(images_B3HW).float() / 255
    x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    return (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)


def test_fd_clip_from_a_local_checkpoint_is_that_model_s_image_embedding(tiny_clip):
    model, checkpoint, _ = tiny_clip
    images = torch.rand(6, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    fd_clip = build_feature_extractor("fd_clip", {"fd_clip_model": NAME, "fd_clip_pretrained": str(checkpoint)})
    assert fd_clip.name == "fd_clip" and fd_clip.weights_hash == file_sha256(checkpoint)
    assert fd_clip.dim == TINY["embed_dim"]
    with torch.no_grad():
        expected = model.encode_image(_preprocessed(model, images))
    assert torch.allclose(fd_clip(images), expected, atol=1e-5)


def test_clip_score_from_a_local_checkpoint_is_100_times_the_clamped_mean_cosine(tiny_clip):
    model, checkpoint, tokenizer = tiny_clip
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    prompts = ["a large red star at the top left, on a brick wall", "a photo of a cat", "a small blue circle",
               "an oil painting"]
    scorer = build_clip_scorer("clip_score", {"clip_model": NAME, "clip_pretrained": str(checkpoint)})
    with torch.no_grad():
        img = F.normalize(model.encode_image(_preprocessed(model, images)), dim=-1)
        txt = F.normalize(model.encode_text(tokenizer(prompts)), dim=-1)
    expected = max(100 * float((img * txt).sum(-1).mean()), 0.0)
    assert scorer.score(images, prompts) == pytest.approx(expected, abs=1e-3)
    assert "100*max(mean cos,0)" in scorer.describe()["scaling"]


def test_missing_open_clip_weights_say_which_key_to_set(tmp_path):
    with pytest.raises(FeatureExtractorError, match="eval.fd_clip_pretrained"):
        build_feature_extractor("fd_clip", {"fd_clip_model": "ViT-B-32", "fd_clip_pretrained": None})
    with pytest.raises(FeatureExtractorError, match="no such file"):
        build_clip_scorer("clip_score", {"clip_model": "ViT-L-14", "clip_pretrained": str(tmp_path / "x.bin")})
    with pytest.raises(FeatureExtractorError, match="fd_dinov2"):
        build_feature_extractor("fd_dinov2")
    with pytest.raises(FeatureExtractorError, match="unknown feature space"):
        build_feature_extractor("fid_dinov2")
