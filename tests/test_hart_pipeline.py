"""HART's released generator through the pipeline: the prompt encoder (hartkit.ar_models.hart_text), the adapter
the stages drive (hartkit.ar_models.hart_generator.HARTGenerator) and ``stages=[gen_eval]`` end to end on a tiny
HART-layout ``llm/`` folder, a tiny Qwen2 text-model folder and a tiny ``hart_pretrained``-format tokenizer.

The text-encoder checks restate mit-han-lab/hart e28a41f hart/utils/tools.py ``tokenize_fn`` /
``encode_prompts`` and hart/utils/constants.py ``llm_system_prompt`` by hand (ids from the saved BPE
itself, cut and padded; mask = ids != pad, positions = cumsum(mask) - 1, hidden_states[-1] of the system prompt + prompt
sequence with the system part cut off). No official weights: every model here is random and tiny.
"""

from __future__ import annotations

import hashlib
import json
import math
from types import SimpleNamespace

import pytest
import torch

from hartkit.ar_models.hart_generator import HARTGenerator, hart_top_k
from hartkit.ar_models.hart_official import hart_layout, load_hart_generator, save_hart_checkpoint
from hartkit.ar_models.hart_text import HART_SYSTEM_PROMPT, check_text_model_folder
from hartkit.errors import ConfigError
from hartkit.tokenizers.fake import FakeMultiScaleTokenizer

VAR_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)  # hart_pretrained's default scales (tokenizer/quantizer=var)
T, DC, V, CV = 8, 24, 32, 4
CONFIG = {"architectures": ["HARTForT2I"], "model_type": "hart_transformer_t2i", "attn_type": "llama",
          "mlp_type": "llama", "depth": 2, "embed_dim": 48, "num_heads": 3, "context_token": T, "context_dim": DC,
          "patch_nums": list(VAR_PATCH_NUMS), "diff_width": 32, "diff_depth": 1, "use_context_norm": True,
          "num_sampling_steps": "4"}
WORDS = "a red blue green circle square triangle on the left right of above below small big cat dog".split()


# ----------------------------------------------------------------------------------------------- builders
def hart_state(config=CONFIG, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in HART's layout (sizes that keep the logits a few units wide)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in hart_layout(config, V, CV, with_buffers=False).items():
        if len(shape) == 2 and key != "lvl_embed.weight":
            out[key] = torch.randn(shape, generator=g) / math.sqrt(shape[1])
        elif key.endswith("norm.weight") or "ln_wo_grad" in key:
            out[key] = 1 + 0.3 * torch.randn(shape, generator=g)
        else:
            out[key] = torch.randn(shape, generator=g) * 0.3
    return out


def write_llm(folder, config=CONFIG):
    """A release-like llm/ folder: config.json + model.safetensors with HART's key names and order."""
    save_hart_checkpoint(hart_state(config), config, folder, V, CV)
    return folder


def write_text_model(folder, hidden: int = DC, padding_side: str = "right", seed: int = 0):
    """A tiny random Qwen2 model + a byte-level BPE tokenizer trained on the system prompt and a few words
    (pad token <|endoftext|>, Qwen2's), saved as a transformers folder."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([HART_SYSTEM_PROMPT, " ".join(WORDS)], trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>",
                                                padding_side=padding_side)
    fast.save_pretrained(str(folder))
    torch.manual_seed(seed)
    cfg = transformers.Qwen2Config(vocab_size=tok.get_vocab_size(), hidden_size=hidden, intermediate_size=2 * hidden,
                                   num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                   max_position_embeddings=512)
    transformers.Qwen2Model(cfg).eval().save_pretrained(str(folder))
    return folder


def expected_ids(folder, text: str, max_len: int, padding_side: str = "right") -> list[int]:
    """``tokenize_fn`` (padding='max_length', truncation=True) restated: the saved BPE's ids, cut, padded with 0."""
    import tokenizers

    ids = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text).ids[:max_len]
    pad = [0] * (max_len - len(ids))
    return ids + pad if padding_side == "right" else pad + ids


# ----------------------------------------------------------------------------------------------- text encoder
def test_system_prompt_is_harts():
    """hart/utils/constants.py llm_system_prompt, pinned by its SHA-256 (705 characters, ends in a newline)."""
    assert len(HART_SYSTEM_PROMPT) == 705 and HART_SYSTEM_PROMPT.endswith("User Prompt:\n")
    assert hashlib.sha256(HART_SYSTEM_PROMPT.encode()).hexdigest() == (
        "424f7aa7b1119f8ed1e329140e5941dfe308183bea0af59041dad5527a9b8f20")


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_text_encoder_is_encode_prompts(tmp_path, padding_side):
    from hartkit.ar_models.hart_text import HARTTextEncoder

    folder = write_text_model(tmp_path / "qwen", padding_side=padding_side)
    L = 12
    enc = HARTTextEncoder(folder, max_len=L)
    assert enc.out_dim == DC and not any(p.requires_grad for p in enc.parameters())
    prompts = ["a red circle", "a cat", "a big green triangle above a small dog on the right of the cat"]
    ids, mask, pos = enc.tokenize(prompts)
    want = torch.tensor([expected_ids(folder, p, L, padding_side) for p in prompts])
    assert (want == 0).any(1).tolist() == [True, True, False] and enc.tokenizer.pad_token_id == 0
    assert torch.equal(ids, want)
    assert torch.equal(mask, want != 0) and torch.equal(pos, torch.cumsum(want != 0, 1) - 1)
    if padding_side == "left":
        assert pos[1, 0] == -1 and pos[1, -1] == 1  # leading pads sit at position -1, as in HART
    # the system prompt: tokenized alone, no padding, truncated to max_len like the prompts
    sys_ids = enc.system_tokens()
    assert sys_ids.tolist() == expected_ids(folder, HART_SYSTEM_PROMPT, L) and 0 not in sys_ids.tolist()
    assert enc.tokenizer.decode(sys_ids).startswith("Given a user prompt, generate")
    ctx, cmask, cpos = enc(prompts)
    assert ctx.dtype == torch.float32 and ctx.shape == (3, L, DC)
    assert torch.equal(cmask, mask) and torch.equal(cpos, pos)
    # encode_prompts: the model over [system prompt; prompt] with mask [ones; tokens != pad], prompt part kept
    model = enc.model
    full = torch.cat([sys_ids[None].repeat(3, 1), want], 1)
    fmask = torch.cat([torch.ones(3, len(sys_ids), dtype=torch.bool), want != 0], 1)
    ref = model(full, attention_mask=fmask, output_hidden_states=True).hidden_states[-1][:, len(sys_ids):]
    torch.testing.assert_close(ctx, ref.float(), rtol=0, atol=0)
    # the system prompt changes the features (it is in the attention); without it: the prompt alone
    plain = HARTTextEncoder(folder, max_len=L, use_system_prompt=False)
    ctx0 = plain(prompts)[0]
    ref0 = model(want, attention_mask=want != 0, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(ctx0, ref0, rtol=0, atol=0)
    assert (ctx0 - ctx)[mask].abs().max() > 1e-3


def test_missing_text_model_folder_says_what_to_put_there(tmp_path):
    for where in (None, tmp_path / "nowhere"):
        with pytest.raises(FileNotFoundError, match=r"Qwen2-VL-1\.5B-Instruct.*ar\.text_encoder\.pretrained"):
            check_text_model_folder(where)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json in .*empty.*tokenizer files"):
        check_text_model_folder(tmp_path / "empty")


# ----------------------------------------------------------------------------------------------- the adapter
def fake_text(max_len: int = T, dim: int = DC):
    """A stand-in for the prompt encoder: deterministic features of the prompt's characters."""

    def encode(prompts):
        B = len(prompts)
        g = torch.Generator().manual_seed(sum(map(ord, "".join(prompts))))
        mask = torch.ones(B, max_len, dtype=torch.bool)
        mask[:, 3:] = torch.tensor([len(p) % 2 == 0 for p in prompts])[:, None]
        return torch.randn(B, max_len, dim, generator=g), mask, torch.cumsum(mask, 1) - 1

    return encode


def ar_cfg(checkpoint, text_folder=None, max_len=T, name="hf"):
    te = SimpleNamespace(name=name, pretrained=None if text_folder is None else str(text_folder), model=None,
                         max_len=max_len)
    return SimpleNamespace(name="hart_0.7b", checkpoint=str(checkpoint), text_encoder=te)


def test_load_hart_generator_returns_a_generator_the_stages_can_drive(tmp_path):
    llm = write_llm(tmp_path / "llm")
    tok = FakeMultiScaleTokenizer("hybrid", VAR_PATCH_NUMS, V, CV, downsample=2, seed=3)
    # the text model is checked first (before 0.7 B weights are read), with what to put where
    with pytest.raises(FileNotFoundError, match="ar.text_encoder.pretrained"):
        load_hart_generator(ar_cfg(llm), tok)
    with pytest.raises(ConfigError, match="ar/text_encoder=hf"):
        load_hart_generator(ar_cfg(llm, name="learned"), tok)
    (tmp_path / "qwen").mkdir()
    (tmp_path / "qwen" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="ar.text_encoder.max_len=8"):
        load_hart_generator(ar_cfg(llm, tmp_path / "qwen", max_len=300), tok)
    gen = load_hart_generator(ar_cfg(llm), tok, text_encoder=fake_text())
    assert isinstance(gen, HARTGenerator) and gen.kind == "hybrid" and not gen.training
    assert gen.spec.patch_nums == VAR_PATCH_NUMS and gen.spec.num_tokens == sum(p * p for p in VAR_PATCH_NUMS)
    prompts = ["a red circle", "a blue square!"]
    g = torch.Generator().manual_seed(0)
    imgs = gen.generate_images(tok, prompts, generator=g, cfg=4.5, top_k=600, top_p=0.0, diffusion_steps=None,
                               diffusion_cfg=None, temperature=1.0, diffusion_temperature=1.0)
    assert imgs.shape == (2, 3, 32, 32) and imgs.abs().max() <= 1 and torch.isfinite(imgs).all()
    # the adapter is HARTTransformer.sample with HART's sample.py settings and the decoded f_hat
    ctx, mask, pos = fake_text()(prompts)
    g = torch.Generator().manual_seed(0)
    ref = gen.transformer.sample(ctx, tok, mask, pos, cfg=4.5, top_k=None, top_p=0.0, generator=g, more_smooth=True,
                                 num_maskgit_iters=1, residual=True)
    torch.testing.assert_close(imgs, tok.decode_latent(ref.f_hat).clamp(-1, 1), rtol=0, atol=0)
    assert hart_top_k(600) is None and hart_top_k(None) is None and hart_top_k(0) == 0 and hart_top_k(50) == 50
    with pytest.raises(ConfigError, match="ar.diffusion.cfg"):
        gen.generate_images(tok, prompts, diffusion_cfg=2.0)
    with pytest.raises(ConfigError, match="temperature"):
        gen.generate_images(tok, prompts, temperature=0.5)
    with pytest.raises(ConfigError, match="prompts"):
        gen.generate_images(tok, torch.tensor([0, 1]))
    eff = gen.efficiency(tok, prompts, {"cfg": 4.5, "top_k": 600, "top_p": 0.0, "diffusion_steps": None,
                                        "diffusion_cfg": None}, torch.device("cpu"), measure=False)
    assert eff["ar_steps"] == len(VAR_PATCH_NUMS) and eff["diffusion_steps"] == 4
    assert eff["macs_ar"] > 0 and eff["macs_diffusion"] > 0 and eff["macs_per_image"] > eff["macs_ar"]
    assert eff["params_diffusion_head"] == sum(p.numel() for p in gen.transformer.diffloss.parameters())


# ----------------------------------------------------------------------------------------------- end to end
def hybrid_tokenizer_file(tmp_path):
    """A tiny hybrid tokenizer (VAR's CNN and quantizer, no Phi at the last scale) in HART's file layout."""
    from hartkit.tokenizers.pretrained import save_in_layout
    from hartkit.tokenizers.tokenizer import MultiScaleTokenizer

    torch.manual_seed(0)
    tok = MultiScaleTokenizer(
        "hybrid", autoencoder=dict(ch=8, ch_mult=[1, 2], num_res_blocks=1, dec_res_blocks=1, attn_levels=[],
                                   mid_attn=False, z_channels=CV, norm_groups=4),
        quantizer=dict(vocab_size=V, patch_nums=list(VAR_PATCH_NUMS), num_phi=4, phi_on_last_scale=False))
    with torch.no_grad():
        tok.quantize.embedding.weight.normal_()
    return save_in_layout(tok.eval(), tmp_path / "hart_tokenizer.safetensors", "hart")


def hart_overrides(tmp_path, tok_file, llm, text_folder) -> list[str]:
    """The README's HART-0.7B command, shrunk: the tokenizer's CNN and the data made tiny."""
    return ["stages=[gen_eval]", "experiment=smoke", "eval.num_images=4", "eval.baselines=false",
            "tokenizer=hart_pretrained", f"tokenizer.checkpoint={tok_file}", "tokenizer.autoencoder.ch=8",
            "tokenizer.autoencoder.ch_mult=[1,2]", "tokenizer.autoencoder.num_res_blocks=1",
            "tokenizer.autoencoder.dec_res_blocks=1", "tokenizer.autoencoder.attn_levels=[]",
            "tokenizer.autoencoder.mid_attn=false", f"tokenizer.autoencoder.z_channels={CV}",
            "tokenizer.autoencoder.norm_groups=4", f"tokenizer.quantizer.vocab_size={V}",
            "ar=hart_0.7b", f"ar.checkpoint={llm}", "ar/text_encoder=hf", f"ar.text_encoder.pretrained={text_folder}",
            f"ar.text_encoder.max_len={T}", "ar.sampling.batch_size=2", "ar.sampling.throughput_max_batch=2",
            "data.resolution=32"]


@pytest.mark.parametrize("text_model", ["qwen2", "stub"])
def test_gen_eval_runs_harts_release_end_to_end(compose_cfg, tmp_path, monkeypatch, text_model):
    """``stages=[gen_eval] tokenizer=hart_pretrained ar=hart_0.7b ar.checkpoint=.../llm ar/text_encoder=hf
    ar.text_encoder.pretrained=...`` loads, samples one image per prompt, scores them and writes the record.
    ``stub``: the prompt encoder replaced by a fixed function (runs without transformers)."""
    from hartkit.pipeline import run_pipeline
    from hartkit.records import iter_records

    llm = write_llm(tmp_path / "llm")
    if text_model == "qwen2":
        text_folder = write_text_model(tmp_path / "qwen")
    else:
        text_folder = tmp_path / "qwen"
        text_folder.mkdir()
        (text_folder / "config.json").write_text(json.dumps({"hidden_size": DC}))

        class StubEncoder(torch.nn.Module):
            def __init__(self, folder, max_len):
                super().__init__()
                self.out_dim, self.encode = DC, fake_text(max_len)

            def forward(self, prompts):
                return self.encode(prompts)

        monkeypatch.setattr("hartkit.ar_models.hart_text.HARTTextEncoder", StubEncoder)
    cfg = compose_cfg(*hart_overrides(tmp_path, hybrid_tokenizer_file(tmp_path), llm, text_folder),
                      f"run_name=hart-{text_model}")
    ctx = run_pipeline(cfg)
    gen = ctx.state["generator"]
    assert isinstance(gen, HARTGenerator) and gen.transformer.context_token == T
    records, bad = iter_records(tmp_path / "results")
    assert not bad
    (rec,) = [r for _, r in records if r.stage == "gen_eval" and r.role == "model"]
    assert rec.label == "hart_pretrained+hart_0.7b" and rec.protocol.num_images == 4
    assert rec.model["checkpoint"] == str(llm) and rec.model["train_steps"] == 0
    assert rec.model["patch_nums"] == list(VAR_PATCH_NUMS) and rec.model["kind"] == "hybrid"
    for key in ("fd_embedded", "latency_s", "throughput_img_s", "macs_per_image", "residual_overhead_pct"):
        assert rec.metrics.get(key) is not None, key
    assert rec.metrics["ar_steps"] == len(VAR_PATCH_NUMS) and rec.metrics["diffusion_steps"] == 4
    assert rec.metrics["macs_decoder"] > 0
    # the images themselves: one (3, 32, 32) image in [-1, 1] per prompt, through the loaded tokenizer
    from hartkit.stages.artifacts import get_tokenizer

    tok = get_tokenizer(ctx)
    imgs = gen.generate_images(tok, ["a red circle", "a dog"], generator=torch.Generator().manual_seed(1))
    assert imgs.shape == (2, 3, 32, 32) and imgs.abs().max() <= 1 and imgs.std() > 0
