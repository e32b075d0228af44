"""Efficiency accounting: MACs from FlopCounterMode over the sampling calls, steps, meta-device sizing."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from hartkit.ar_models.config import ARConfig
from hartkit.ar_models.efficiency import count_macs, generation_macs, simulate_sampling, steps_of
from hartkit.ar_models.model import ScaleAR, TokenSpec
from hartkit.tokenizers.fake import FakeMultiScaleTokenizer


def small(kind: str, **over) -> ScaleAR:
    cfg = OmegaConf.structured(ARConfig)
    cfg.depth, cfg.width, cfg.heads = 1, 32, 2
    cfg.text_encoder.width, cfg.text_encoder.depth, cfg.text_encoder.vocab_buckets = 16, 1, 64
    cfg.diffusion.width, cfg.diffusion.depth, cfg.diffusion.num_sample_steps = 16, 1, 4
    for k, v in over.items():
        OmegaConf.update(cfg, k, v)
    return ScaleAR(cfg, TokenSpec(kind, (1, 2, 4), 0 if kind == "continuous" else 16, 4)).eval()


def test_cfg_doubles_the_transformer_macs_and_a_linear_is_counted_exactly():
    model = small("discrete", condition="class")
    plain = count_macs(lambda: simulate_sampling(model, 1, guided=False))
    guided = count_macs(lambda: simulate_sampling(model, 1, guided=True))
    assert plain > 0 and guided == 2 * plain
    lin = torch.nn.Linear(32, 16)
    assert count_macs(lambda: lin(torch.zeros(3, 32))) == 3 * 32 * 16


def test_diffusion_macs_scale_with_steps_and_steps_are_reported():
    for kind, per_scale in (("hybrid", False), ("continuous", True)):
        model = small(kind)
        m4 = generation_macs(model, guided=False)
        m8 = generation_macs(model, guided=False, diffusion_steps=8)
        assert m4["macs_diffusion"] > 0 and m8["macs_diffusion"] == 2 * m4["macs_diffusion"]
        assert m8["macs_ar"] == m4["macs_ar"]
        assert steps_of(model) == {"ar_steps": 3, "diffusion_steps": 4 * (3 if per_scale else 1)}


def test_decoder_macs_and_meta_device_sizing():
    tok = FakeMultiScaleTokenizer("discrete", (1, 2, 4), 16, 4)
    model = ScaleAR(OmegaConf.merge(OmegaConf.structured(ARConfig), {"depth": 1, "width": 32, "heads": 2,
                                                                     "condition": "class"}),
                    TokenSpec.from_tokenizer(tok)).eval()
    macs = generation_macs(model, guided=True, tokenizer=tok)
    assert macs["macs_decoder"] > 0 and macs["macs_total"] == macs["macs_ar"] + macs["macs_decoder"]
    cfg = OmegaConf.structured(ARConfig)
    cfg.text_encoder.name = "hf"  # a frozen encoder that is not loaded: sized from its output width
    with torch.device("meta"):
        meta_model = ScaleAR(cfg, TokenSpec("hybrid", (1, 2, 4, 8), 64, 8), text_dim=48).eval()
    assert count_macs(lambda: simulate_sampling(meta_model, 1, True)) > 0
