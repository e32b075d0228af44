"""HART's released transformer (hart-0.7b-1024px, llm/): key layout, strict check, save back, the residual
diffusion MLP against a restatement of HART's equations, and what load_hart_generator (the pipeline's route) does.
The transformer itself: tests/test_hart_transformer.py.

The reference key list below is written out from HART's code (mit-han-lab/hart e28a41f:
hart/modules/models/transformer/hart_transformer_t2i.py ``HARTForT2I.__init__``, networks/basic_hart.py
``AdaLNSelfAttn`` / ``LlamaAttention`` / ``LlamaMLP`` / ``LlamaRMSNormFused`` / ``AdaLNBeforeHead``,
diffusion/diffloss.py ``SimpleMLPAdaLN``), independently of ``hart_layout``.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hartkit.ar_models.diffusion import DiffusionMLP, GaussianDiffusion
from hartkit.ar_models.hart_official import (
    HART_PATCH_NUMS_1024,
    check_hart_state_dict,
    hart_diffusion_to_hartkit,
    hart_layout,
    hart_parameter_count,
    hartkit_diffusion_to_hart,
    load_hart_generator,
    read_hart_checkpoint,
    save_hart_checkpoint,
)
from hartkit.ar_models.var_official import GeneratorCheckpointMismatchError, load_var_generator
from hartkit.errors import ConfigError

PATCH_NUMS = (1, 2, 3, 4)
DEPTH, C, H, T, DC, V, CV, DW, DD = 2, 48, 3, 5, 24, 32, 4, 40, 2
CONFIG = {"architectures": ["HARTForT2I"], "model_type": "hart_transformer_t2i", "attn_type": "llama",
          "mlp_type": "llama", "depth": DEPTH, "embed_dim": C, "num_heads": H, "context_token": T,
          "context_dim": DC, "patch_nums": list(PATCH_NUMS), "diff_width": DW, "diff_depth": DD,
          "use_context_norm": True, "context_norm_scale": 4.0}


def reference_shapes() -> dict[str, tuple[int, ...]]:
    """HARTForT2I.state_dict() keys and shapes at the small size, in order (written out from HART's modules)."""
    N = sum(p * p for p in PATCH_NUMS) + T - 1
    hid = int((C * 4.0 * 2) / 3 + 255) // 256 * 256  # LlamaMLP hidden
    out = {"lvl_1L": (1, N), "attn_bias_for_masking": (1, 1, N, N), "word_embed.weight": (C, CV),
           "word_embed.bias": (C,), "context_embed.weight": (C, DC), "context_embed.bias": (C,),
           "context_norm.weight": (DC,), "lvl_embed.weight": (len(PATCH_NUMS), C)}
    for i in range(DEPTH):
        b = f"blocks.{i}."
        out.update({b + "attn.q_bias": (C,), b + "attn.v_bias": (C,), b + "attn.zero_k_bias": (C,),
                    b + "attn.qkv_proj.weight": (3 * C, C), b + "attn.proj.weight": (C, C), b + "attn.proj.bias": (C,),
                    b + "ffn.gate_proj.weight": (hid, C), b + "ffn.up_proj.weight": (hid, C),
                    b + "ffn.down_proj.weight": (C, hid), b + "ln_wo_grad.weight": (C,),
                    b + "ada_lin.1.weight": (6 * C, C), b + "ada_lin.1.bias": (6 * C,)})
    out.update({"head_nm.ln_wo_grad.weight": (C,), "head_nm.ada_lin.1.weight": (2 * C, C),
                "head_nm.ada_lin.1.bias": (2 * C,), "head.weight": (V, C), "head.bias": (V,),
                "decoder_norm.weight": (C,)})
    d = "diffloss.net."
    out.update({d + "time_embed.mlp.0.weight": (DW, 256), d + "time_embed.mlp.0.bias": (DW,),
                d + "time_embed.mlp.2.weight": (DW, DW), d + "time_embed.mlp.2.bias": (DW,),
                d + "cond_embed.weight": (DW, C), d + "cond_embed.bias": (DW,),
                d + "input_proj.weight": (DW, CV), d + "input_proj.bias": (DW,)})
    for j in range(DD):
        r = f"{d}res_blocks.{j}."
        out.update({r + "in_ln.weight": (DW,), r + "in_ln.bias": (DW,), r + "mlp.0.weight": (DW, DW),
                    r + "mlp.0.bias": (DW,), r + "mlp.2.weight": (DW, DW), r + "mlp.2.bias": (DW,),
                    r + "adaLN_modulation.1.weight": (3 * DW, DW), r + "adaLN_modulation.1.bias": (3 * DW,)})
    out.update({d + "final_layer.linear.weight": (2 * CV, DW), d + "final_layer.linear.bias": (2 * CV,),
                d + "final_layer.adaLN_modulation.1.weight": (2 * DW, DW),
                d + "final_layer.adaLN_modulation.1.bias": (2 * DW,)})
    return out


def reference_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {k: torch.randn(s, generator=g) * 0.3 for k, s in reference_shapes().items()}
    lvl = torch.cat([torch.zeros(T, dtype=torch.long)]
                    + [torch.full((p * p,), k + 1, dtype=torch.long) for k, p in enumerate(PATCH_NUMS[1:])])
    out["lvl_1L"] = lvl.view(1, -1)
    out["attn_bias_for_masking"] = torch.where(lvl[:, None] >= lvl[None, :], 0.0, -torch.inf).view(1, 1, *2 * (lvl.numel(),))
    for i in range(DEPTH):
        out[f"blocks.{i}.attn.zero_k_bias"] = torch.zeros(C)
    return out


def tokenizer_stub(patch_nums=PATCH_NUMS):
    return SimpleNamespace(vocab_size=V, latent_channels=CV, patch_nums=patch_nums)


def write_release(folder, state, config=CONFIG, name="ema_model.bin"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    torch.save(state, folder / name)
    return folder


# ----------------------------------------------------------------------------------------------- layout
def test_layout_is_harts_key_list_in_order():
    assert list(hart_layout(CONFIG, V, CV).items()) == list(reference_shapes().items())
    check_hart_state_dict(reference_state(), CONFIG, V, CV)
    # the buffers HART recomputes may be absent
    state = {k: v for k, v in reference_state().items() if k not in ("lvl_1L", "attn_bias_for_masking")
             and not k.endswith("zero_k_bias")}
    check_hart_state_dict(state, CONFIG, V, CV)


def test_load_save_gives_identical_tensors(tmp_path):
    state = reference_state()
    write_release(tmp_path / "llm", state)
    config, loaded, weights = read_hart_checkpoint(tmp_path / "llm")
    assert weights.name == "ema_model.bin" and config == CONFIG
    for fmt in ("safetensors", "bin"):
        out = tmp_path / f"out_{fmt}"
        save_hart_checkpoint(loaded, config, out, V, CV, fmt=fmt)
        config2, again, _ = read_hart_checkpoint(out)
        assert config2 == CONFIG and set(again) == set(reference_shapes())
        if fmt == "bin":  # a pickle keeps HART's key order (a safetensors file lists its keys sorted)
            assert list(again) == list(reference_shapes())
        assert all(torch.equal(again[k], state[k]) for k in state)


def test_mismatches_are_listed():
    state = reference_state()
    state.pop("blocks.1.ffn.up_proj.weight")
    state["blocks.0.attn.k_bias"] = torch.zeros(C)
    state["head.weight"] = torch.zeros(V + 1, C)
    with pytest.raises(GeneratorCheckpointMismatchError) as e:
        check_hart_state_dict(state, CONFIG, V, CV, source="x.bin")
    msg = str(e.value)
    assert "missing keys (1):\n    blocks.1.ffn.up_proj.weight" in msg
    assert "unexpected keys (1):\n    blocks.0.attn.k_bias" in msg
    assert f"head.weight: checkpoint ({V + 1}, {C}) vs config ({V}, {C})" in msg
    assert f"depth {DEPTH}, width {C}, text width {DC}" in msg
    # a config with other scales does not fit the file's buffers / shapes
    with pytest.raises(GeneratorCheckpointMismatchError, match="lvl_1L|attn_bias"):
        check_hart_state_dict(reference_state(), {**CONFIG, "patch_nums": [1, 2, 3, 4][::-1]}, V, CV)
    bad = reference_state()
    bad["blocks.0.attn.zero_k_bias"] = torch.ones(C)
    with pytest.raises(GeneratorCheckpointMismatchError, match="zero_k_bias is not zero"):
        check_hart_state_dict(bad, CONFIG, V, CV)
    with pytest.raises(ConfigError, match="attn_type='gpt2'"):
        hart_layout({**CONFIG, "attn_type": "gpt2"}, V, CV)


# ----------------------------------------------------------------------------------------------- diffusion MLP
def hart_mlp_adaln(sd: dict[str, torch.Tensor], x, t, c):
    """diffloss.SimpleMLPAdaLN.forward restated (TimestepEmbedder, ResBlock, FinalLayer, modulate)."""
    p = "diffloss.net."
    lin = lambda h, n: F.linear(h, sd[p + n + ".weight"], sd[p + n + ".bias"])  # noqa: E731
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(0, half, dtype=torch.float32) / half)  # float32, as HART
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    y = lin(F.silu(lin(emb, "time_embed.mlp.0")), "time_embed.mlp.2") + lin(c, "cond_embed")
    h = lin(x, "input_proj")
    for j in range(DD):
        r = f"res_blocks.{j}."
        shift, scale, gate = lin(F.silu(y), r + "adaLN_modulation.1").chunk(3, dim=-1)
        n = F.layer_norm(h, (DW,), sd[p + r + "in_ln.weight"], sd[p + r + "in_ln.bias"], eps=1e-6)
        h = h + gate * lin(F.silu(lin(n * (1 + scale) + shift, r + "mlp.0")), r + "mlp.2")
    shift, scale = lin(F.silu(y), "final_layer.adaLN_modulation.1").chunk(2, dim=-1)
    return lin(F.layer_norm(h, (DW,), eps=1e-6) * (1 + scale) + shift, "final_layer.linear")


def test_diffusion_mlp_equals_harts_equations():
    sd = {k: v for k, v in reference_state(1).items() if k.startswith("diffloss.")}
    net = DiffusionMLP(CV, C, DW, DD, learn_sigma=True)
    net.load_state_dict(hart_diffusion_to_hartkit(sd, DD), strict=True)
    g = torch.Generator().manual_seed(2)
    x, c = torch.randn(7, CV, generator=g), torch.randn(7, C, generator=g)
    t = torch.tensor([0, 1, 142, 143, 500, 998, 999])
    ref = hart_mlp_adaln(sd, x, t, c)
    out = net(x, t, c)  # float32, as HART runs it
    assert ref.abs().max() > 1.0  # outputs of order 1 at least
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    back = hartkit_diffusion_to_hart(net)
    assert list(back) == [k for k in reference_shapes() if k.startswith("diffloss.")]
    assert all(torch.equal(back[k], sd[k]) for k in back)


def test_respaced_schedule_and_step_equal_harts():
    """create_diffusion(timestep_respacing="8", noise_schedule="cosine"): space_timesteps, the respaced betas,
    LEARNED_RANGE log-variance and the posterior mean with clip_denoised (gaussian_diffusion.py, respace.py)."""
    T_ = 1000
    f = lambda s: math.cos((s / T_ + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = np.array([min(1 - f(i + 1) / f(i), 0.999) for i in range(T_)])
    ab_full = np.cumprod(1 - betas)
    stride = (T_ - 1) / (8 - 1)  # space_timesteps(1000, [8]): round(i * stride)
    use = [round(i * stride) for i in range(8)]
    d = GaussianDiffusion.respaced(T_, 8)
    assert d.timesteps.tolist() == use
    ab = ab_full[use]
    last, nb = 1.0, []
    for a in ab:  # SpacedDiffusion.__init__
        nb.append(1 - a / last)
        last = a
    nb = np.array(nb)
    ab_prev = np.append(1.0, ab[:-1])
    post_var = nb * (1 - ab_prev) / (1 - ab)
    post_log_clipped = np.log(np.append(post_var[1], post_var[1:]))
    c0, ct = nb * np.sqrt(ab_prev) / (1 - ab), (1 - ab_prev) * np.sqrt(1 - nb) / (1 - ab)
    g = torch.Generator().manual_seed(3)
    x, eps, v = (torch.randn(5, CV, generator=g, dtype=torch.float64) for _ in range(3))
    for step in range(1, 8):  # step 0 adds no noise, its variance is never used
        i = torch.full((5,), step)
        x0 = ((x - math.sqrt(1 - ab[step]) * eps) / math.sqrt(ab[step])).clamp(-1, 1)
        mean = c0[step] * x0 + ct[step] * x
        frac = (v + 1) / 2
        logvar = frac * math.log(nb[step]) + (1 - frac) * post_log_clipped[step]
        ours_x0 = d.predict_x0(x, i, eps).clamp(-1, 1)  # hartkit clamps to target_absmax: 1 reproduces clip_denoised
        torch.testing.assert_close(d.posterior_mean(ours_x0, x, i), mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(d.model_log_var(v, i, x), logvar, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------- entry point
def no_text(prompts):  # load_hart_generator(text_encoder=...): skips the text-model folder
    raise AssertionError("not called")


def test_load_hart_generator_checks_then_loads(tmp_path):
    """The pipeline's route checks the files and returns a generator the stages drive (tests/test_hart_pipeline.py
    samples it); a bad release fails before anything is built, saying what to fix."""
    from hartkit.ar_models.hart_generator import HARTGenerator
    from hartkit.tokenizers.fake import FakeMultiScaleTokenizer

    cfg = SimpleNamespace(name="hart_0.7b", checkpoint=str(write_release(tmp_path / "llm", reference_state())))
    with pytest.raises(ConfigError, match="ar/text_encoder=hf ar.text_encoder.pretrained"):
        load_hart_generator(cfg, tokenizer_stub())  # no text encoder configured
    tok = FakeMultiScaleTokenizer("hybrid", PATCH_NUMS, V, CV, downsample=2, seed=3)
    gen = load_hart_generator(cfg, tok, text_encoder=no_text)
    assert isinstance(gen, HARTGenerator) and torch.equal(gen.transformer.head.bias, reference_state()["head.bias"])
    with pytest.raises(ConfigError, match="ar/text_encoder=hf"):  # load_var_generator routes hart presets here
        load_var_generator(cfg, tok)
    with pytest.raises(ConfigError, match="patch_nums"):
        load_hart_generator(cfg, tokenizer_stub((1, 2, 4, 8)), text_encoder=no_text)
    bad = reference_state()
    bad.pop("decoder_norm.weight")
    cfg.checkpoint = str(write_release(tmp_path / "bad", bad, name="pytorch_model.bin"))
    with pytest.raises(GeneratorCheckpointMismatchError, match="decoder_norm.weight"):
        load_hart_generator(cfg, tokenizer_stub(), text_encoder=no_text)
    cfg.checkpoint = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="hart-0.7b-1024px"):
        load_hart_generator(cfg, tokenizer_stub(), text_encoder=no_text)
    (tmp_path / "noconf").mkdir()
    torch.save(reference_state(), tmp_path / "noconf" / "w.bin")
    cfg.checkpoint = str(tmp_path / "noconf" / "w.bin")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_hart_generator(cfg, tokenizer_stub(), text_encoder=no_text)


def test_full_size_count_for_hartkits_shape_guess():
    """HART's code fixes no size for hart-0.7b (config.json does). With hartkit's guess (depth 16, width 1536,
    24 heads, Qwen2-1.5B text width 1536, 300 text tokens, 14 scales, V 4096, Cvae 32, diffusion 1024 x 6)
    the layout counts 36.6 M diffusion-head parameters (HART's README: 37M) and the transformer below."""
    guess = {"attn_type": "llama", "mlp_type": "llama", "depth": 16, "embed_dim": 1536, "num_heads": 24,
             "context_token": 300, "context_dim": 1536, "patch_nums": list(HART_PATCH_NUMS_1024)}
    n = hart_parameter_count(guess, 4096, 32)
    W, Cv, D = 1024, 32, 6
    assert n["diffusion_head"] == (256 * W + W) + (W * W + W) + (1536 * W + W) + (Cv * W + W) \
        + D * (2 * W + 2 * (W * W + W) + 3 * W * W + 3 * W) + (2 * Cv * W + 2 * Cv) + (2 * W * W + 2 * W) == 36_585_536
    hid = 4096
    per_block = 2 * 1536 + 3 * 1536 * 1536 + 1536 * 1536 + 1536 + 3 * hid * 1536 + 1536 + 6 * 1536 * 1536 + 6 * 1536
    rest = 1536 * 32 + 1536 + 1536 * 1536 + 1536 + 14 * 1536 + 1536 + 2 * 1536 * 1536 + 2 * 1536 + 4096 * 1537 + 1536
    assert n["transformer"] == 16 * per_block + rest == 693_176_320
    assert n["total"] == 729_761_856  # HART's paper / README: 732 M; the guess is 0.3% below
    assert len(hart_layout(guess, 4096, 32)) == 2 + 5 + 16 * 12 + 6 + 8 + 6 * 8 + 4 == 265
