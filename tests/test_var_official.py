"""VAR's official generator checkpoints: layout, exactness against a plain re-statement of VAR's equations,
greedy CFG sampling, KV cache vs teacher forcing, the full-size d16 key list and parameter count, errors.

The checkpoints here are built from VAR's key layout rules (FoundationVision/VAR, models/var.py ``VAR``,
models/basic_var.py ``AdaLNSelfAttn`` / ``SelfAttention`` / ``FFN`` / ``AdaLNBeforeHead``) with random
values, at a small width, independently of hartkit's modules; ``ref_logits`` and ``ref_sample`` restate
``VAR.forward`` and ``VAR.autoregressive_infer_cfg`` as plain tensor algebra.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from hartkit.ar_models.layers import DropPath
from hartkit.ar_models.model import ScaleAR, TokenSpec
from hartkit.ar_models.presets import load_preset
from hartkit.ar_models.sampling import generate_tokens
from hartkit.ar_models.var_official import (
    GeneratorCheckpointMismatchError,
    load_var_checkpoint,
    load_var_generator,
    load_var_state_dict,
    save_var_checkpoint,
    to_var_state_dict,
    var_forward,
)
from hartkit.errors import ConfigError, UserError
from hartkit.tokenizers.tokenizer import MultiScaleTokenizer
from hartkit.tokenizers.tokens import Tokens

PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)  # VAR's 256 px schedule: 680 tokens
PHI_OF_SCALE = [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]  # VAR's scale -> Phi map for 10 scales (float64 ticks, docs/reference.md section 1)
DEPTH, WIDTH, HEADS, CLASSES, V, CVAE = 2, 64, 2, 10, 64, 8


# ----------------------------------------------------------------------------------------------- fixtures
def small_tokenizer(seed: int = 0) -> MultiScaleTokenizer:
    """A small VQVAE with VAR's quantizer: 16x16 latent (32 px, 2x), V 64, Cvae 8, 4 Phis, Phi at the last scale."""
    torch.manual_seed(seed)
    tok = MultiScaleTokenizer(
        "discrete",
        autoencoder=dict(ch=8, ch_mult=[1, 2], num_res_blocks=1, dec_res_blocks=1, attn_levels=[], mid_attn=False,
                         z_channels=CVAE, norm_groups=4),
        quantizer=dict(vocab_size=V, patch_nums=list(PATCH_NUMS), num_phi=4, phi_on_last_scale=True))
    with torch.no_grad():  # codes of unit scale, so the inputs of later scales matter
        tok.quantize.embedding.weight.normal_()
    return tok.eval()


def var_cfg(depth: int = DEPTH, width: int = WIDTH, heads: int = HEADS, num_classes: int = CLASSES):
    """The var_d16 preset at a small size (every other setting as the preset has it)."""
    cfg = load_preset("var_d16")
    cfg.depth, cfg.width, cfg.heads, cfg.num_classes = depth, width, heads, num_classes
    return cfg


def var_shapes(depth: int, C: int, H: int, num_classes: int, vocab: int, cvae: int, patch_nums) -> dict:
    """Key -> shape of a VAR generator checkpoint (parameters and persistent buffers), from VAR's code."""
    L, K = sum(p * p for p in patch_nums), len(patch_nums)
    out = {"pos_start": (1, patch_nums[0] ** 2, C), "pos_1LC": (1, L, C), "lvl_1L": (1, L),
           "attn_bias_for_masking": (1, 1, L, L), "word_embed.weight": (C, cvae), "word_embed.bias": (C,),
           "class_emb.weight": (num_classes + 1, C), "lvl_embed.weight": (K, C)}
    for i in range(depth):
        b = f"blocks.{i}."
        out.update({b + "attn.scale_mul_1H11": (1, H, 1, 1), b + "attn.q_bias": (C,), b + "attn.v_bias": (C,),
                    b + "attn.zero_k_bias": (C,), b + "attn.mat_qkv.weight": (3 * C, C),
                    b + "attn.proj.weight": (C, C), b + "attn.proj.bias": (C,),
                    b + "ffn.fc1.weight": (4 * C, C), b + "ffn.fc1.bias": (4 * C,),
                    b + "ffn.fc2.weight": (C, 4 * C), b + "ffn.fc2.bias": (C,),
                    b + "ada_lin.1.weight": (6 * C, C), b + "ada_lin.1.bias": (6 * C,)})
    out.update({"head_nm.ada_lin.1.weight": (2 * C, C), "head_nm.ada_lin.1.bias": (2 * C,),
                "head.weight": (vocab, C), "head.bias": (vocab,)})
    return out


VAR_BUFFERS = ("lvl_1L", "attn_bias_for_masking", "zero_k_bias")


def random_var_state(seed: int = 0, depth: int = DEPTH, C: int = WIDTH, H: int = HEADS) -> dict[str, torch.Tensor]:
    """A VAR-layout state dict with random values: every gate open, one head's scale above the clamp."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    lvl = torch.cat([torch.full((p * p,), k) for k, p in enumerate(PATCH_NUMS)])
    for key, shape in var_shapes(depth, C, H, CLASSES, V, CVAE, PATCH_NUMS).items():
        if key == "lvl_1L":
            out[key] = lvl.view(1, -1)
        elif key == "attn_bias_for_masking":
            out[key] = torch.where(lvl[:, None] >= lvl[None, :], 0.0, -math.inf).view(shape)
        elif key.endswith("zero_k_bias"):
            out[key] = torch.zeros(shape)
        elif key.endswith("scale_mul_1H11"):  # log of the per-head scale; head 0 at log 300 > the cap log 100
            s = torch.empty(shape).uniform_(math.log(2.0), math.log(8.0), generator=g)
            s[0, 0] = math.log(300.0)
            out[key] = s
        elif key.endswith("weight") and len(shape) == 2 and not key.endswith(("class_emb.weight", "lvl_embed.weight")):
            out[key] = torch.randn(shape, generator=g) / math.sqrt(shape[1])
        else:
            out[key] = torch.randn(shape, generator=g) * 0.3
    return out


# ----------------------------------------------------------------------------------------------- reference
def layer_norm(x, eps=1e-6):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps)


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def silu(x):
    return x * torch.sigmoid(x)


def ref_logits(sd: dict, labels: torch.Tensor, x_in: torch.Tensor | None, n_tokens: int | None = None,
               max_log_scale: float = math.log(100.0)):
    """VAR.forward without class dropout: (B, n, V) logits of the first ``n_tokens`` tokens, in float64."""
    sd = {k: v.double() for k, v in sd.items()}
    C = sd["word_embed.weight"].shape[0]
    H = sd["blocks.0.attn.scale_mul_1H11"].shape[1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    lvl = sd["lvl_1L"][0].long()
    n = lvl.numel() if n_tokens is None else n_tokens
    cond = sd["class_emb.weight"][labels]  # (B, C): start token and AdaLN condition
    B = cond.shape[0]
    x = cond[:, None, :] + sd["pos_start"]
    if n > x.shape[1]:
        x_in = x_in.double()[:, : n - x.shape[1]]
        x = torch.cat([x, x_in @ sd["word_embed.weight"].T + sd["word_embed.bias"]], dim=1)
    x = x + sd["lvl_embed.weight"][lvl[:n]] + sd["pos_1LC"][:, :n]
    mask = sd["attn_bias_for_masking"][0, 0, :n, :n]
    for i in range(depth):
        p = f"blocks.{i}."
        g1, g2, s1, s2, b1, b2 = (silu(cond) @ sd[p + "ada_lin.1.weight"].T + sd[p + "ada_lin.1.bias"]).view(B, 1, 6, C).unbind(2)
        h = layer_norm(x) * (1 + s1) + b1
        bias = torch.cat([sd[p + "attn.q_bias"], sd[p + "attn.zero_k_bias"], sd[p + "attn.v_bias"]])
        q, k, v = (h @ sd[p + "attn.mat_qkv.weight"].T + bias).view(B, n, 3, H, C // H).permute(2, 0, 3, 1, 4)
        scale = torch.exp(sd[p + "attn.scale_mul_1H11"].clamp(max=max_log_scale))
        q = q / q.norm(dim=-1, keepdim=True) * scale
        k = k / k.norm(dim=-1, keepdim=True)
        att = torch.softmax(q @ k.transpose(-1, -2) + mask, dim=-1) @ v  # (B, H, n, D)
        out = att.transpose(1, 2).reshape(B, n, C) @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        x = x + out * g1
        h = layer_norm(x) * (1 + s2) + b2
        f = gelu_tanh(h @ sd[p + "ffn.fc1.weight"].T + sd[p + "ffn.fc1.bias"]) @ sd[p + "ffn.fc2.weight"].T
        x = x + (f + sd[p + "ffn.fc2.bias"]) * g2
    scale, shift = (silu(cond) @ sd["head_nm.ada_lin.1.weight"].T + sd["head_nm.ada_lin.1.bias"]).view(B, 1, 2, C).unbind(2)
    h = layer_norm(x) * (1 + scale) + shift
    return h @ sd["head.weight"].T + sd["head.bias"]


def ref_next_input(tok: MultiScaleTokenizer, f_hat: torch.Tensor, k: int, idx_Bl: torch.Tensor):
    """VectorQuantizer2.get_next_autoregressive_input: f_hat += Phi(bicubic(E[idx])); next input area(f_hat)."""
    B, pn, HW = idx_Bl.shape[0], PATCH_NUMS[k], PATCH_NUMS[-1]
    h = tok.quantize.embedding.weight[idx_Bl].transpose(1, 2).reshape(B, CVAE, pn, pn)
    if k != len(PATCH_NUMS) - 1:
        h = F.interpolate(h, size=(HW, HW), mode="bicubic")
    phi = tok.quantize.quant_resi.qresi_ls[PHI_OF_SCALE[k]]
    h = 0.5 * h + 0.5 * F.conv2d(h, phi.weight, phi.bias, padding=1)
    f_hat = f_hat + h
    nxt = None
    if k != len(PATCH_NUMS) - 1:
        nxt = F.interpolate(f_hat, size=(PATCH_NUMS[k + 1],) * 2, mode="area").flatten(2).transpose(1, 2)
    return f_hat, nxt


@torch.no_grad()
def ref_sample(sd, tok, labels: torch.Tensor, cfg: float, top_k: int = 1, top_p: float = 0.0,
               generator: torch.Generator | None = None, min_margin: float | None = None):
    """VAR.autoregressive_infer_cfg without a KV cache: the whole sequence so far is recomputed every scale.
    Sampling as models/helpers.py sample_with_top_k_top_p_. Returns (indices per scale, f_hat)."""
    B, K = labels.shape[0], len(PATCH_NUMS)
    both = torch.cat([labels, torch.full_like(labels, CLASSES)])
    f_hat = torch.zeros(B, CVAE, PATCH_NUMS[-1], PATCH_NUMS[-1])
    inputs, indices, start = [], [], 0
    for k, pn in enumerate(PATCH_NUMS):
        n = start + pn * pn
        x_in = torch.cat(inputs, dim=1).repeat(2, 1, 1) if inputs else None
        logits = ref_logits(sd, both, x_in, n)[:, start:n].float()
        t = cfg * k / (K - 1)
        logits = (1 + t) * logits[:B] - t * logits[B:]
        if min_margin is not None:  # greedy: the test means something only without near-ties
            top2 = logits.topk(2, dim=-1).values
            assert float((top2[..., 0] - top2[..., 1]).min()) > min_margin
        if top_k > 0:
            logits = logits.masked_fill(logits < logits.topk(top_k, dim=-1).values.amin(-1, keepdim=True), -math.inf)
        if top_p > 0:
            srt, order = logits.sort(dim=-1, descending=False)
            remove = srt.softmax(-1).cumsum(-1) <= 1 - top_p
            remove[..., -1:] = False
            logits = logits.masked_fill(remove.scatter(-1, order, remove), -math.inf)
        idx = torch.multinomial(logits.softmax(-1).view(-1, V), 1, replacement=True, generator=generator).view(B, pn * pn)
        indices.append(idx)
        f_hat, nxt = ref_next_input(tok, f_hat, k, idx)
        if nxt is not None:
            inputs.append(nxt)
        start = n
    return indices, f_hat


def loaded_model(tmp_path, state, dtype=torch.float32):
    path = tmp_path / "var_small.pth"
    torch.save(state, path)
    tok = small_tokenizer()
    model = ScaleAR(var_cfg(), TokenSpec.from_tokenizer(tok))
    load_var_checkpoint(model, path)
    return model.to(dtype).eval(), tok


# ----------------------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_teacher_forcing_logits_equal_plain_var_equations(tmp_path, dtype, atol):
    state = random_var_state(seed=1)
    model, tok = loaded_model(tmp_path, state, dtype)
    labels = torch.tensor([3, CLASSES])  # a class and the null class
    idx = [torch.randint(0, V, (2, p * p), generator=torch.Generator().manual_seed(k)) for k, p in enumerate(PATCH_NUMS)]
    with torch.no_grad():
        x_in = tok.teacher_forcing_input(Tokens(kind="discrete", patch_nums=PATCH_NUMS, indices=idx))
        ref = ref_logits(state, labels, x_in)
        got = var_forward(model, labels, x_in.to(dtype))
    assert got.shape == (2, 680, V) and float(ref.abs().max()) > 1.0  # logits of size, not a degenerate case
    err = float((got.double() - ref).abs().max())
    assert err <= atol, f"max |logit error| {err:.3g}"
    if dtype == torch.float64:  # the bound, met with a wide margin
        assert err <= 1e-6


def test_each_var_equation_is_load_bearing(tmp_path):
    """The reference detects the departures this layout is most likely to get wrong: the AdaLN chunk order
    and the per-head scale cap."""
    state = random_var_state(seed=2)
    model, tok = loaded_model(tmp_path, state, torch.float64)
    labels = torch.tensor([1, 4])
    x_in = torch.randn(2, 679, CVAE, dtype=torch.float64)
    with torch.no_grad():
        got = var_forward(model, labels, x_in).double()
    swapped = dict(state)  # hartkit's own chunk order (scale1, shift1, scale2, shift2) read as VAR's
    for i in range(DEPTH):
        for leaf in ("weight", "bias"):
            key = f"blocks.{i}.ada_lin.1.{leaf}"
            c = state[key].chunk(6)
            swapped[key] = torch.cat([c[0], c[1], c[2], c[4], c[3], c[5]])
    assert (got - ref_logits(state, labels, x_in)).abs().max() < 1e-9
    assert (got - ref_logits(swapped, labels, x_in)).abs().max() > 1e-2
    assert (got - ref_logits(state, labels, x_in, max_log_scale=math.inf)).abs().max() > 1e-2


def test_greedy_cfg_sampling_reproduces_var_indices_at_every_scale(tmp_path):
    state = random_var_state(seed=3)
    model, tok = loaded_model(tmp_path, state, torch.float64)
    labels = torch.tensor([2, 7])
    ref_idx, ref_f_hat = ref_sample(state, tok, labels, cfg=1.5, top_k=1, min_margin=1e-6)
    out = generate_tokens(model, tok, labels, cfg=1.5, top_k=1)
    assert len(out.tokens.indices) == len(PATCH_NUMS)
    for k, (got, want) in enumerate(zip(out.tokens.indices, ref_idx)):
        assert torch.equal(got, want), f"scale {k} ({PATCH_NUMS[k]}x{PATCH_NUMS[k]}) differs"
    assert len({int(i) for idx in ref_idx for i in idx.flatten()}) > 10  # not one code everywhere
    torch.testing.assert_close(out.f_hat, ref_f_hat, atol=1e-5, rtol=1e-5)
    # guidance changes what is sampled: the test exercises the CFG formula and its ramp
    no_cfg = generate_tokens(model, tok, labels, cfg=0.0, top_k=1)
    assert any(not torch.equal(a, b) for a, b in zip(no_cfg.tokens.indices, ref_idx))


def test_seeded_top_k_top_p_sampling_draws_what_var_draws(tmp_path):
    """Same generator seed -> the same codes as VAR's sampler (top-k, top-p, one multinomial draw per token)."""
    state = random_var_state(seed=4)
    model, tok = loaded_model(tmp_path, state, torch.float64)
    labels = torch.tensor([0, 5])
    ref_idx, _ = ref_sample(state, tok, labels, cfg=2.0, top_k=16, top_p=0.9, generator=torch.Generator().manual_seed(7))
    out = generate_tokens(model, tok, labels, cfg=2.0, top_k=16, top_p=0.9, generator=torch.Generator().manual_seed(7))
    for k, (got, want) in enumerate(zip(out.tokens.indices, ref_idx)):
        assert torch.equal(got, want), f"scale {k} differs"


def test_kv_cache_sampling_equals_teacher_forcing_on_the_sampled_indices(tmp_path):
    state = random_var_state(seed=5)
    model, tok = loaded_model(tmp_path, state)  # float32: the path that runs
    labels = torch.tensor([1, 8, 8])
    out = generate_tokens(model, tok, labels, cfg=2.5, top_k=20, top_p=0.95, record_logits=True,
                          generator=torch.Generator().manual_seed(0))
    x_in = tok.teacher_forcing_input(out.tokens)
    with torch.no_grad():
        lc = var_forward(model, labels, x_in)
        lu = var_forward(model, torch.full_like(labels, CLASSES), x_in)
    start = 0
    for k, pn in enumerate(PATCH_NUMS):
        t = 2.5 * k / (len(PATCH_NUMS) - 1)
        want = (1 + t) * lc[:, start:start + pn * pn] - t * lu[:, start:start + pn * pn]
        torch.testing.assert_close(out.logits[k], want, atol=2e-5, rtol=1e-5)
        start += pn * pn


# ----------------------------------------------------------------------------------------------- layout
def test_full_size_d16_key_list_and_parameter_count_on_meta():
    cfg = load_preset("var_d16")
    spec = TokenSpec("discrete", PATCH_NUMS, 4096, 32)
    with torch.device("meta"):
        model = ScaleAR(cfg, spec)
    state = to_var_state_dict(model)
    want = var_shapes(16, 1024, 16, 1000, 4096, 32, PATCH_NUMS)
    assert set(state) == set(want)
    assert {k: tuple(v.shape) for k, v in state.items()} == want
    assert len(state) == 8 + 16 * 13 + 4
    params = sum(v.numel() for k, v in state.items() if not k.endswith(VAR_BUFFERS))
    assert params == 310_283_520 == sum(p.numel() for p in model.parameters())
    assert state["class_emb.weight"].shape[0] == 1001  # 1000 classes + the null class
    # VAR's state_dict order: the root's own tensors first, then word_embed, class_emb, lvl_embed, blocks, head
    assert list(state)[:8] == ["pos_start", "pos_1LC", "lvl_1L", "attn_bias_for_masking", "word_embed.weight",
                               "word_embed.bias", "class_emb.weight", "lvl_embed.weight"]
    assert list(state)[-4:] == ["head_nm.ada_lin.1.weight", "head_nm.ada_lin.1.bias", "head.weight", "head.bias"]


def test_save_writes_back_the_same_file_contents(tmp_path):
    state = random_var_state(seed=6)
    model, _ = loaded_model(tmp_path, state)
    out = save_var_checkpoint(model, tmp_path / "back" / "var_small.pth")
    back = torch.load(out, map_location="cpu", weights_only=True)
    assert list(back) == list(var_shapes(DEPTH, WIDTH, HEADS, CLASSES, V, CVAE, PATCH_NUMS))
    assert set(back) == set(state)
    for k in state:
        assert back[k].dtype == state[k].dtype, k
        assert torch.equal(back[k], state[k]), k
    sf = save_var_checkpoint(model, tmp_path / "var_small.safetensors")  # the same keys as safetensors
    model2, _ = loaded_model(tmp_path, state)
    with torch.no_grad():
        for p in model2.parameters():
            p.zero_()
    load_var_checkpoint(model2, sf)
    for (k1, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert torch.equal(a, b), k1


def test_mismatched_checkpoint_lists_keys_and_loads_nothing(tmp_path):
    tok = small_tokenizer()
    model = ScaleAR(var_cfg(), TokenSpec.from_tokenizer(tok))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = random_var_state(seed=7)
    del state["blocks.1.attn.q_bias"]
    state["blocks.1.attn.k_bias"] = torch.zeros(WIDTH)
    state["head.weight"] = torch.zeros(V + 1, WIDTH)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(GeneratorCheckpointMismatchError) as err:
        load_var_checkpoint(model, path)
    msg = str(err.value)
    assert "missing keys (1)" in msg and "blocks.1.attn.q_bias" in msg
    assert "unexpected keys (1)" in msg and "blocks.1.attn.k_bias" in msg
    assert "head.weight: checkpoint (65, 64) vs model (64, 64)" in msg
    assert isinstance(err.value, UserError)  # run.py prints it and exits with code 2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_wrong_depth_and_nonzero_k_bias_are_named(tmp_path):
    tok = small_tokenizer()
    model = ScaleAR(var_cfg(), TokenSpec.from_tokenizer(tok))
    deeper = random_var_state(seed=8, depth=3)
    with pytest.raises(GeneratorCheckpointMismatchError, match="depth 3 and width 64"):
        load_var_state_dict(model, deeper)
    state = random_var_state(seed=8)
    state["blocks.0.attn.zero_k_bias"] = torch.ones(WIDTH)
    with pytest.raises(GeneratorCheckpointMismatchError, match="zero_k_bias is not zero"):
        load_var_state_dict(model, state)
    state = random_var_state(seed=8)
    state["lvl_1L"] = state["lvl_1L"].flip(-1)
    with pytest.raises(GeneratorCheckpointMismatchError, match="lvl_1L"):
        load_var_state_dict(model, state)


def test_missing_file_says_where_to_put_it(tmp_path):
    cfg = var_cfg()
    cfg.checkpoint = str(tmp_path / "nowhere" / "var_d16.pth")
    with pytest.raises(FileNotFoundError) as err:
        load_var_generator(cfg, small_tokenizer())
    msg = str(err.value)
    assert "huggingface.co/FoundationVision/var/resolve/main/var_d16.pth" in msg and "ar.checkpoint=" in msg
    assert str(tmp_path / "nowhere" / "var_d16.pth") in msg


def test_config_that_is_not_var_is_refused(tmp_path):
    cfg = var_cfg()
    path = tmp_path / "var_d16.pth"
    torch.save(random_var_state(), path)
    cfg.checkpoint = str(path)
    cfg.pos, cfg.norm = "rope2d", "rmsnorm"
    with pytest.raises(ConfigError, match=r"ar.pos='rope2d' \(VAR: 'absolute'\); ar.norm='rmsnorm'"):
        load_var_generator(cfg, small_tokenizer())
    cfg = var_cfg()
    cfg.checkpoint = str(tmp_path)  # a folder: <preset>.pth inside it
    tok = small_tokenizer()
    tok.quantize.phi_on_last_scale = False
    with pytest.raises(ConfigError, match="Phi at the last scale"):
        load_var_generator(cfg, tok)
    model = load_var_generator(cfg, small_tokenizer())
    assert not model.training


def test_class_dropout_only_in_training_mode(tmp_path):
    state = random_var_state(seed=9)
    model, tok = loaded_model(tmp_path, state)
    for m in model.modules():  # no stochastic depth, so training mode differs by the dropout alone
        if isinstance(m, DropPath):
            m.p = 0.0
    labels = torch.tensor([2, 6])
    x_in = torch.randn(2, 679, CVAE)
    with torch.no_grad():
        a = var_forward(model, labels, x_in, cond_drop_rate=1.0)  # eval: VAR would drop every label here
        b = var_forward(model, labels, x_in, cond_drop_rate=1.0)
        null = var_forward(model, torch.full_like(labels, CLASSES), x_in)
        model.train()
        dropped = var_forward(model, labels, x_in, cond_drop_rate=1.0, generator=torch.Generator().manual_seed(0))
        model.eval()
    assert torch.equal(a, b)
    assert (a - null).abs().max() > 1e-2
    torch.testing.assert_close(dropped, null)


# ----------------------------------------------------------------------------------------------- pipeline
def test_stage_loads_official_weights_from_ar_checkpoint(tmp_path, compose_cfg):
    """`tokenizer=var_pretrained ar=var_d16 ar.checkpoint=...` (shrunk) gives the stage VAR's weights, untrained."""
    from types import SimpleNamespace

    from hartkit.pipeline import artifact_dir
    from hartkit.stages.artifacts import get_generator, get_tokenizer
    from hartkit.tokenizers.pretrained import save_in_layout

    tok = small_tokenizer()
    tok_file = save_in_layout(tok, tmp_path / "vae_small.pth", "var")
    state = random_var_state(seed=10)
    torch.save(state, tmp_path / "var_d16.pth")
    cfg = compose_cfg("tokenizer=var_pretrained", f"tokenizer.checkpoint={tok_file}", "tokenizer.autoencoder.ch=8",
                      "tokenizer.autoencoder.ch_mult=[1,2]", "tokenizer.autoencoder.num_res_blocks=1",
                      "tokenizer.autoencoder.dec_res_blocks=1", "tokenizer.autoencoder.attn_levels=[]",
                      "tokenizer.autoencoder.mid_attn=false", f"tokenizer.autoencoder.z_channels={CVAE}",
                      "tokenizer.autoencoder.norm_groups=4", f"tokenizer.quantizer.vocab_size={V}",
                      "ar=var_d16", f"ar.depth={DEPTH}", f"ar.width={WIDTH}", f"ar.heads={HEADS}",
                      f"ar.num_classes={CLASSES}", f"ar.checkpoint={tmp_path}/var_d16.pth", "data.resolution=32")
    ctx = SimpleNamespace(cfg=cfg, state={}, device=torch.device("cpu"),
                          artifact_dir=lambda name: artifact_dir(cfg, name))
    tokenizer = get_tokenizer(ctx)
    model = get_generator(ctx, tokenizer)
    assert ctx.state["generator"] is model and not model.training
    back = to_var_state_dict(model)
    assert all(torch.equal(back[k], state[k]) for k in state)
    # the checkpoint path is part of the generator's artifact hash only when set
    unset = OmegaConf.merge(cfg, {"ar": {"checkpoint": None}})
    removed = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "ar"])
    removed.ar = OmegaConf.create({k: v for k, v in cfg.ar.items() if k != "checkpoint"})
    assert artifact_dir(unset, "generator") == artifact_dir(removed, "generator") != artifact_dir(cfg, "generator")
