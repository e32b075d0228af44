"""Text conditioning: learned BPE encoder, frozen open_clip tower from a local file, clear errors."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from omegaconf import OmegaConf

from hartkit.ar_models.conditioning import TextConditioner
from hartkit.ar_models.config import TextEncoderConfig
from hartkit.ar_models.text_encoders import bpe_valid_mask, build_text_encoder


def te_cfg(**over):
    cfg = OmegaConf.structured(TextEncoderConfig)
    for k, v in over.items():
        cfg[k] = v
    return cfg


def test_learned_encoder_masks_padding_and_trains_with_the_generator():
    cond = TextConditioner(te_cfg(width=16, depth=1, heads=2, max_len=12, vocab_buckets=128), dim=24)
    out = cond(["a red circle", "a large blue square at the top left"])
    assert out.prefix_BTC.shape == (2, 12, 24) and out.cond_BC.shape == (2, 24)
    ids = cond.encoder.token_ids(["a red circle"])
    assert bpe_valid_mask(ids).sum().item() == 5  # start, a, red, circle, end
    assert any(k.startswith("encoder.") for k in cond.state_dict())
    # the pooled vector is a max over the valid tokens only
    tokens, valid = cond.encode(["a red circle"])
    prefix = cond.text_proj(cond.text_norm(tokens))
    torch.testing.assert_close(out.cond_BC[:1], prefix[:, valid[0]].amax(dim=1))


def test_clip_without_weights_is_a_clear_error():
    with pytest.raises(ValueError, match="ar.text_encoder.pretrained"):
        build_text_encoder(te_cfg(name="clip", model="ViT-B-32", pretrained=None))
    with pytest.raises(FileNotFoundError, match="not a file"):
        build_text_encoder(te_cfg(name="clip", model="ViT-B-32", pretrained="/nonexistent/weights.bin"))


def test_hf_without_transformers_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if the optional extra were not installed
    with pytest.raises(ImportError, match=r"hartkit\[hf\]"):
        build_text_encoder(te_cfg(name="hf", pretrained="/some/folder"))


def test_unknown_text_encoder_names_the_choices():
    with pytest.raises(ValueError, match="learned"):
        build_text_encoder(te_cfg(name="t5"))


def test_frozen_clip_tower_from_a_local_file(tmp_path):
    import open_clip

    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "hk-test-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "hk-test-clip.json")
    model = open_clip.create_model("hk-test-clip", pretrained=None)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    enc = build_text_encoder(te_cfg(name="clip", model="hk-test-clip", pretrained=str(tmp_path / "w.pt"), max_len=10))
    feats, valid = enc(["a red circle", ""])
    assert feats.shape == (2, 10, 32) and valid[1].sum().item() == 2
    cond = TextConditioner(te_cfg(name="clip"), dim=24, encoder=enc)
    assert not any(k.startswith("encoder") for k in cond.state_dict())  # frozen: not trained, not checkpointed
    assert all(p.requires_grad is False for p in enc.parameters())
    out = cond(["a red circle"])
    assert out.prefix_BTC.shape == (1, 10, 24)
