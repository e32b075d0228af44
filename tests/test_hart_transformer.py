"""HART's text-to-image transformer as HART's code reads (hartkit.ar_models.hart_transformer).

At a small size (depth 2, width 48, 3 heads, 5 text tokens, scales 1-2-3-4, V 32): the module's keys are
HART's (strict load of a state dict written from HART's layout); its teacher-forced logits equal
``ref_logits`` (a restatement of HARTForT2I.forward / AdaLNSelfAttn / LlamaAttention / AdaLNBeforeHead from
mit-han-lab/hart e28a41f, written as explicit per-element rotations, einsums and loops, in float64), with all
last-scale tokens or a kept subset; greedy KV-cache sampling with CFG picks the argmax of the teacher-forced
guided logits at every scale, also over two MaskGIT passes; ``more_smooth`` and the residual diffusion equal
replays of HART's equations with the same random draws. No official weights or outputs are used (none could be
downloaded): what is checked is hartkit against its own reading of HART's code.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from hartkit.ar_models.diffusion import DiffusionMLP
from hartkit.ar_models.hart_official import (
    HART_PATCH_NUMS_1024,
    hart_diffusion_to_hartkit,
    hart_layout,
    load_hart_generator,
)
from hartkit.ar_models.hart_transformer import (
    HARTTransformer,
    add_scale_map,
    load_hart_state_dict,
    load_hart_transformer,
)
from hartkit.ar_models.var_official import GeneratorCheckpointMismatchError
from hartkit.errors import ConfigError
from hartkit.tokenizers.fake import FakeMultiScaleTokenizer
from hartkit.tokenizers.protocol import teacher_forcing_input
from hartkit.tokenizers.tokenizer import MultiScaleTokenizer
from hartkit.tokenizers.tokens import Tokens
from tests.test_hart_official import (
    CONFIG,
    CV,
    DC,
    DD,
    DEPTH,
    PATCH_NUMS,
    T,
    V,
    hart_mlp_adaln,
    reference_shapes,
    reference_state,
    write_release,
)

C, H = CONFIG["embed_dim"], CONFIG["num_heads"]
# a second variant: mean pooling over the real text tokens, l2-normalised attention, no context norm
CONFIG_AVG = {**CONFIG, "sep_aln_pooling_mode": "avg", "attn_l2_norm": True, "use_context_norm": False,
              "norm_eps": 1e-5}


def random_state(config=CONFIG, seed: int = 0) -> dict[str, torch.Tensor]:
    """HART-layout tensors with random values of sensible size (fan-in scaled matrices, open AdaLN gates)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in hart_layout(config, V, CV).items():
        if key == "lvl_1L" or key == "attn_bias_for_masking" or key.endswith("zero_k_bias"):
            continue
        if key.endswith("scale_mul_1H11"):
            s = torch.empty(shape).uniform_(math.log(2.0), math.log(8.0), generator=g)
            s[0, 0] = math.log(300.0)  # above the cap log(100)
            out[key] = s
        elif len(shape) == 2 and key not in ("lvl_embed.weight",):
            out[key] = torch.randn(shape, generator=g) / math.sqrt(shape[1])
        elif key.endswith("norm.weight") or "ln_wo_grad" in key:
            out[key] = 1 + 0.3 * torch.randn(shape, generator=g)
        else:
            out[key] = torch.randn(shape, generator=g) * 0.3
    out["head.weight"] = out["head.weight"] * 0.3  # logits of a few units: 1e-5 is then a float32-sized error
    return out


def text(B: int = 2, seed: int = 1):
    """Text features, a right-padded mask (the second prompt has 3 real tokens) and encode_prompts' positions."""
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randn(B, T, DC, generator=g) * 2
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 3:] = False
    return ctx, mask, torch.cumsum(mask.long(), 1) - 1


# ----------------------------------------------------------------------------------------------- reference
def rms(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def silu(x):
    return x * torch.sigmoid(x)


def rotate_text(q, pos, base=10000.0):
    """1-D RoPE: pair (j, j + d/2) rotated by pos * base^(-2j/d)."""
    d = q.shape[-1]
    out = q.clone()
    for j in range(d // 2):
        a = pos * base ** (-2 * j / d)  # (n,)
        out[..., j] = q[..., j] * torch.cos(a) - q[..., j + d // 2] * torch.sin(a)
        out[..., j + d // 2] = q[..., j + d // 2] * torch.cos(a) + q[..., j] * torch.sin(a)
    return out


def rotate_image(q, row, col, base=10000.0):
    """HART's 2-D RoPE: element j < d/2 turns with row * f, its partner j + d/2 with col * f, f = base^(-4 (j mod d/4) / d)
    (LlamaRotaryEmbedding's [row, row, col, col] table with rotate_half over the whole head)."""
    d = q.shape[-1]
    out = q.clone()
    for j in range(d // 2):
        f = base ** (-4 * (j % (d // 4)) / d)
        a, b = row * f, col * f
        out[..., j] = q[..., j] * torch.cos(a) - q[..., j + d // 2] * torch.sin(a)
        out[..., j + d // 2] = q[..., j + d // 2] * torch.cos(b) + q[..., j] * torch.sin(b)
    return out


def ref_logits(sd, config, ctx, mask, pos, x_in, keep=None, passes=None):
    """HARTForT2I.forward without its training randomness: (B, L, V) in float64. ``keep`` (pn_K**2,) bool, the
    same for every row: the last-scale tokens that stay in the sequence (HART's ``random_masking`` outcome).
    ``passes`` (pn_K**2,) int: a last-scale token of pass p does not see tokens of later passes (what a
    MaskGIT sampler with a KV cache computes)."""
    sd = {k: v.double() for k, v in sd.items()}
    eps, d = config.get("norm_eps", 1e-6), C // H
    B = ctx.shape[0]
    c = ctx.double()
    if config["use_context_norm"]:
        c = rms(c, sd["context_norm.weight"], eps)
    cond = torch.einsum("btd,cd->btc", c, sd["context_embed.weight"]) + sd["context_embed.bias"]
    words = torch.einsum("bld,cd->blc", x_in.double(), sd["word_embed.weight"]) + sd["word_embed.bias"]
    x = torch.cat([cond, words], 1)
    levels = [0] * T + [k for k, p in enumerate(PATCH_NUMS) if k > 0 for _ in range(p * p)]
    x = x + sd["lvl_embed.weight"][torch.tensor(levels)]
    N = x.shape[1]
    rows, cols = [], []
    for p in PATCH_NUMS[1:]:
        for r in range(p):
            for col in range(p):
                rows.append(r * PATCH_NUMS[-1] / p)
                cols.append(col * PATCH_NUMS[-1] / p)
    if keep is not None:  # drop last-scale tokens: their rows, levels and coordinates
        n_last = PATCH_NUMS[-1] ** 2
        stay = [i for i in range(N) if i < N - n_last or bool(keep[i - (N - n_last)])]
        x, levels = x[:, stay], [levels[i] for i in stay]
        rows, cols = [rows[i - T] for i in stay[T:]], [cols[i - T] for i in stay[T:]]
        N = len(stay)
    seen = list(levels)
    if passes is not None:
        for j in range(PATCH_NUMS[-1] ** 2):
            seen[N - PATCH_NUMS[-1] ** 2 + j] += int(passes[j])
    mask_add = torch.zeros(N, N, dtype=torch.float64)
    for i in range(N):
        for j in range(N):
            if seen[j] > seen[i]:
                mask_add[i, j] = -math.inf
    if config.get("sep_aln_pooling_mode", "max") == "max":
        pooled = cond.max(dim=1).values
    else:
        m = mask.double()[..., None]
        pooled = (cond * m).sum(1) / m.sum(1)
    for i in range(config["depth"]):
        p = f"blocks.{i}."
        ada = silu(pooled) @ sd[p + "ada_lin.1.weight"].T + sd[p + "ada_lin.1.bias"]
        g1, g2, s1, s2, b1, b2 = (ada[:, None, k * C:(k + 1) * C] for k in range(6))
        h = rms(x, sd[p + "ln_wo_grad.weight"], eps) * (1 + s1) + b1
        qkv = h @ sd[p + "attn.qkv_proj.weight"].T
        q = (qkv[..., :C] + sd[p + "attn.q_bias"]).view(B, N, H, d)
        k = qkv[..., C:2 * C].view(B, N, H, d)  # no k bias
        v = (qkv[..., 2 * C:] + sd[p + "attn.v_bias"]).view(B, N, H, d)
        if config.get("attn_l2_norm"):
            q = q / q.norm(dim=-1, keepdim=True) * sd[p + "attn.scale_mul_1H11"].clamp(max=math.log(100)).exp().view(1, 1, H, 1)
            k = k / k.norm(dim=-1, keepdim=True)
            scale = 1.0
        else:
            scale = 0.25 / math.sqrt(d)
        qr, kr = torch.empty_like(q), torch.empty_like(k)
        for b in range(B):
            tp = pos[b].double()
            last = float(pos[b, -1])
            rr, cc = torch.tensor(rows, dtype=torch.float64) + last, torch.tensor(cols, dtype=torch.float64) + last
            for src, dst in ((q, qr), (k, kr)):
                dst[b, :T] = rotate_text(src[b, :T].transpose(0, 1), tp).transpose(0, 1)
                dst[b, T:] = rotate_image(src[b, T:].transpose(0, 1), rr, cc).transpose(0, 1)
        att = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", qr, kr) * scale + mask_add, dim=-1)
        o = torch.einsum("bhqk,bkhd->bqhd", att, v).reshape(B, N, C)
        x = x + (o @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]) * g1
        h = rms(x, sd[p + "ln_wo_grad.weight"], eps) * (1 + s2) + b2
        ff = (silu(h @ sd[p + "ffn.gate_proj.weight"].T) * (h @ sd[p + "ffn.up_proj.weight"].T)) @ sd[p + "ffn.down_proj.weight"].T
        x = x + ff * g2
    ada = silu(cond.max(dim=1).values) @ sd["head_nm.ada_lin.1.weight"].T + sd["head_nm.ada_lin.1.bias"]
    scale, shift = ada[:, None, :C], ada[:, None, C:]
    h = rms(x, sd["head_nm.ln_wo_grad.weight"], eps) * (1 + scale) + shift
    return (h @ sd["head.weight"].T + sd["head.bias"])[:, T - 1:]


def tokenizer():
    return FakeMultiScaleTokenizer("hybrid", PATCH_NUMS, V, CV, downsample=2, seed=3)


def model_for(config=CONFIG, seed=0):
    sd = random_state(config, seed)
    model = HARTTransformer(config, V, CV)
    return load_hart_state_dict(model, sd).eval(), sd


# ----------------------------------------------------------------------------------------------- tests
def test_keys_are_harts_and_load_strictly():
    model = HARTTransformer(CONFIG, V, CV)
    layout = hart_layout(CONFIG, V, CV)
    own = model.state_dict()
    assert list(own) == list(layout) == list(reference_shapes())  # same keys, same order
    assert {k: tuple(v.shape) for k, v in own.items()} == layout
    model.load_state_dict(reference_state(), strict=True)  # the file as HART saves it (buffers included)
    assert torch.equal(model.state_dict()["head.weight"], reference_state()["head.weight"])
    # a file without the recomputed buffers loads through the checked path
    load_hart_state_dict(model, random_state())
    for config in (CONFIG_AVG, {**CONFIG, "use_context_norm": False}):
        assert {k: tuple(v.shape) for k, v in HARTTransformer(config, V, CV).state_dict().items()} == hart_layout(config, V, CV)
    # full size (hartkit's guess of hart-0.7b's config.json), built without memory
    guess = {"attn_type": "llama", "mlp_type": "llama", "depth": 16, "embed_dim": 1536, "num_heads": 24,
             "context_token": 300, "context_dim": 1536, "patch_nums": list(HART_PATCH_NUMS_1024)}
    big = HARTTransformer.__new__(HARTTransformer)
    with torch.device("meta"):
        big.__init__(guess, 4096, 32)
    assert {k: tuple(v.shape) for k, v in big.state_dict().items()} == hart_layout(guess, 4096, 32)
    bad = random_state()
    bad.pop("blocks.0.ffn.up_proj.weight")
    with pytest.raises(GeneratorCheckpointMismatchError, match="blocks.0.ffn.up_proj.weight"):
        load_hart_state_dict(HARTTransformer(CONFIG, V, CV), bad)


@pytest.mark.parametrize("config", [CONFIG, CONFIG_AVG], ids=["max-pool", "avg-pool-l2"])
def test_teacher_forcing_equals_harts_equations(config):
    model, sd = model_for(config)
    ctx, mask, pos = text()
    L = sum(p * p for p in PATCH_NUMS)
    x_in = torch.randn(2, L - 1, CV, generator=torch.Generator().manual_seed(5))
    out = model(ctx, x_in, mask)
    ref = ref_logits(sd, config, ctx, mask, pos, x_in)
    assert out.shape == (2, L, V) and out.dtype == torch.float32
    assert ref.abs().max() > 1.0
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5)
    # in float64 the same module agrees to rounding: the equations, not only the float32 result, are HART's
    torch.testing.assert_close(model.double()(ctx.double(), x_in.double(), mask), ref, rtol=0, atol=1e-10)
    model.float()
    # the padding is attended to and the positions come from the mask: changing either changes the logits
    other = ctx.clone()
    other[1, 4] += 1
    assert not torch.allclose(model(other, x_in, mask)[1], out[1])
    assert not torch.allclose(model(ctx, x_in, torch.ones_like(mask))[1], out[1])


def test_greedy_cached_sampling_equals_teacher_forcing():
    model, _ = model_for()
    tok = tokenizer()
    ctx, mask, pos = text()
    K, cfg = len(PATCH_NUMS), 2.0
    s = model.sample(ctx, tok, mask, cfg=cfg, greedy=True, residual=False, record_logits=True)
    assert [tuple(i.shape) for i in s.indices] == [(2, p * p) for p in PATCH_NUMS]
    x_in = teacher_forcing_input(tok, Tokens("hybrid", PATCH_NUMS, indices=s.indices))
    null_ctx, null_mask, null_pos = model.null_text(ctx, mask, pos)
    lc = model(ctx, x_in, mask, pos)
    lu = model(null_ctx, x_in, null_mask, null_pos)
    start = 0
    for k, p in enumerate(PATCH_NUMS):
        t = cfg * min(k, K - 2) / (K - 1)  # the last scale reuses the previous scale's ratio
        sl = slice(start, start + p * p)
        guided = (1 + t) * lc[:, sl] - t * lu[:, sl]
        torch.testing.assert_close(s.guided_logits[k], guided, rtol=0, atol=1e-5)
        assert torch.equal(guided.argmax(-1), s.indices[k]), f"scale {k}"
        start += p * p
    # a random model's greedy walk collapses to few codes, but its logits still differ from token to token
    assert all(float(g.std(dim=1).max()) > 1e-2 for g in s.guided_logits[1:])
    f_hat = tok.empty_f_hat(2)
    for k in range(K):
        f_hat = tok.add_scale(f_hat, k, s.indices[k])
    assert torch.equal(s.f_hat, f_hat) and s.residual is None


def test_training_forward_with_kept_last_tokens_equals_harts_equations():
    """HART's forward keeps a random subset of the last scale (same count per image); given that subset, the
    logits of the shortened sequence are the restatement's on the same subset."""
    model, sd = model_for()
    ctx, mask, pos = text()
    n = PATCH_NUMS[-1] ** 2
    L = sum(p * p for p in PATCH_NUMS)
    x_in = torch.randn(2, L - 1, CV, generator=torch.Generator().manual_seed(6))
    keep = torch.zeros(2, n, dtype=torch.bool)
    keep[0, [0, 3, 5, 9, 15]] = True
    keep[1, [1, 2, 8, 12, 14]] = True
    out = model(ctx, x_in, mask, last_keep=keep)
    assert out.shape == (2, L - n + 5, V)
    for b in range(2):
        ref = ref_logits(sd, CONFIG, ctx[b:b + 1], mask[b:b + 1], pos[b:b + 1], x_in[b:b + 1], keep=keep[b])
        torch.testing.assert_close(out[b:b + 1].double(), ref, rtol=0, atol=1e-5)
    # the earlier scales do not see the last one: their logits are those of the full sequence
    torch.testing.assert_close(out[:, : L - n], model(ctx, x_in, mask)[:, : L - n], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="as many kept tokens"):
        model(ctx, x_in, mask, last_keep=torch.cat([keep[:1], torch.ones(1, n, dtype=torch.bool)]))


def test_two_maskgit_passes_equal_harts_equations():
    """Pass 1 sees its own last-scale tokens only (teacher forcing with last_keep = pass 1); pass 2 attends to the
    cached pass-1 keys and values too, computed without pass 2: the restatement with that mask."""
    model, sd = model_for()
    tok = tokenizer()
    ctx, mask, pos = text()
    K, cfg, n = len(PATCH_NUMS), 2.0, PATCH_NUMS[-1] ** 2
    s = model.sample(ctx, tok, mask, cfg=cfg, greedy=True, residual=False, record_logits=True,
                     num_maskgit_iters=2, generator=torch.Generator().manual_seed(7))
    first, second = model._maskgit_steps(2, n, 2, torch.Generator().manual_seed(7), "cpu")  # the same draw
    x_in = teacher_forcing_input(tok, Tokens("hybrid", PATCH_NUMS, indices=s.indices))
    null = model.null_text(ctx, mask, pos)
    t = cfg * (K - 2) / (K - 1)
    lc = model(ctx, x_in, mask, pos, last_keep=first)[:, -5:]
    lu = model(null[0], x_in, null[1], null[2], last_keep=first)[:, -5:]
    rec = s.guided_logits[-1]
    g1 = (1 + t) * lc - t * lu
    torch.testing.assert_close(rec[first].view(2, -1, V), g1, rtol=0, atol=1e-5)
    assert torch.equal(s.indices[-1][first].view(2, -1), g1.argmax(-1))
    for b in range(2):
        one = slice(b, b + 1)
        rc = ref_logits(sd, CONFIG, ctx[one], mask[one], pos[one], x_in[one], passes=second[b])[0, -n:]
        ru = ref_logits(sd, CONFIG, null[0][one], null[1][one], null[2][one], x_in[one], passes=second[b])[0, -n:]
        ref = (1 + t) * rc - t * ru
        torch.testing.assert_close(rec[b].double(), ref, rtol=0, atol=1e-5)
        assert torch.equal(s.indices[-1][b], ref.argmax(-1))
    full = (1 + t) * model(ctx, x_in, mask, pos)[:, -n:] - t * model(null[0], x_in, null[1], null[2])[:, -n:]
    assert not torch.allclose(full[second], rec[second], atol=1e-3)  # the full sequence is not what pass 2 saw


def test_more_smooth_equals_a_restatement_with_the_same_draws():
    """more_smooth (HART's sample.py default): codes are the guided argmaxes here (greedy), but f_hat and so the
    next inputs take softmax((top-k logits * (1 + ratio) + Gumbel) / tau) @ codebook; the restatement replays
    the generator's draws in HART's order (Gumbel per scale, the MaskGIT order, the last scale's Gumbel) and
    reads each scale's logits from teacher forcing on the inputs built so far (later inputs do not matter).
    In float64: 1 / tau (up to 37) amplifies float32 rounding of the logits."""
    model, _ = model_for()
    model.double()
    tok = tokenizer().double()
    ctx, mask, pos = text()
    ctx = ctx.double()
    K, cfg, B, n = len(PATCH_NUMS), 2.0, 2, PATCH_NUMS[-1] ** 2
    L = sum(p * p for p in PATCH_NUMS)
    s = model.sample(ctx, tok, mask, cfg=cfg, greedy=True, residual=False, more_smooth=True, top_k=20,
                     generator=torch.Generator().manual_seed(11))
    plain = model.sample(ctx, tok, mask, cfg=cfg, greedy=True, residual=False, top_k=20)
    g = torch.Generator().manual_seed(11)
    null = model.null_text(ctx, mask, pos)
    codebook = tok.codebook[:V]
    f_hat = tok.empty_f_hat(B)
    x_in = torch.zeros(B, L - 1, CV, dtype=torch.float64)
    start = 0
    for k, p in enumerate(PATCH_NUMS):
        ratio = min(k, K - 2) / (K - 1)
        t = cfg * ratio
        lg = (1 + t) * model(ctx, x_in, mask, pos) - t * model(null[0], x_in, null[1], null[2])
        lg = lg[:, start:start + p * p]
        kth = lg.topk(20, dim=-1).values[..., -1:]
        lg = torch.where(lg < kth, -torch.inf, lg)
        assert torch.equal(lg.argmax(-1), s.indices[k]), f"scale {k}"
        if k == K - 1:
            for _ in range(B):  # the MaskGIT order (one pass: every token)
                torch.randperm(n, generator=g)
        tau = max(0.27 * (1 - 0.95 * ratio), 0.005)
        gumbel = -torch.empty(B, p * p, V, dtype=torch.float64).exponential_(generator=g).log()
        soft = torch.softmax((lg * (1 + ratio) + gumbel) / tau, dim=-1) @ codebook  # (B, pp, CV)
        f_hat = tok.add_scale(f_hat, k, soft.transpose(1, 2).reshape(B, CV, p, p))
        if k < K - 1:
            nxt = tok.next_scale_input(f_hat, k)
            x_in[:, start + p * p - 1:start + p * p - 1 + nxt.shape[1]] = nxt
        start += p * p
    assert s.f_hat.dtype == torch.float64
    torch.testing.assert_close(s.f_hat, f_hat, rtol=0, atol=1e-10)
    assert not torch.allclose(s.f_hat, plain.f_hat, atol=1e-3)


def test_a_scale_map_takes_the_tokenizers_upsampling_and_phi():
    """more_smooth adds maps, not codes: with one-hot weights the map path equals the code path, Phi and
    upsampling included, on hartkit's hybrid tokenizer (Phi except at the last scale) and on the fake one."""
    torch.manual_seed(0)
    real = MultiScaleTokenizer(
        "hybrid", autoencoder=dict(ch=8, ch_mult=[1, 2], num_res_blocks=1, dec_res_blocks=1, attn_levels=[],
                                   mid_attn=False, z_channels=CV, norm_groups=4),
        quantizer=dict(vocab_size=V, patch_nums=list(PATCH_NUMS), num_phi=2)).eval()
    with torch.no_grad():
        for prm in real.quantize.quant_resi.parameters():
            prm.normal_()  # a Phi that is not the identity
    for tok in (real, tokenizer()):
        codebook = tok.code_embedding(torch.arange(V))
        g = torch.Generator().manual_seed(1)
        a = b = tok.empty_f_hat(2)
        for k, p in enumerate(PATCH_NUMS):
            idx = torch.randint(0, V, (2, p * p), generator=g)
            soft = torch.nn.functional.one_hot(idx, V).float() @ codebook
            a = tok.add_scale(a, k, idx)
            b = add_scale_map(tok, b, k, soft.transpose(1, 2).reshape(2, CV, p, p))
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)


def cosine_respaced(steps: int = 8, T_: int = 1000):
    """create_diffusion(timestep_respacing="8", noise_schedule="cosine"), restated (as in test_hart_official)."""
    f = lambda s: math.cos((s / T_ + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    ab_full = torch.cumprod(1 - torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(T_)], dtype=torch.float64), 0)
    use = [round(i * (T_ - 1) / (steps - 1)) for i in range(steps)]
    ab = ab_full[use]
    prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    nb = 1 - ab / prev
    post_var = nb * (1 - prev) / (1 - ab)
    post_log = torch.log(torch.cat([post_var[1:2], post_var[1:]]))
    return use, ab, nb, post_log, nb * prev.sqrt() / (1 - ab), (1 - prev) * (1 - nb).sqrt() / (1 - ab)


def test_residual_equals_a_restatement_of_harts_diffusion_sampling():
    """final_stage=0: z = decoder_norm(h + word_embed(embedding(code))) for both CFG halves, DiffLoss.sample with
    cfg = t (forward_with_cfg on eps, the conditional half's learned variance), 8 respaced steps, x0 clipped to
    [-1, 1], times 0.6; replayed with the generator's draws (MaskGIT order, start noise, step noises)."""
    model, _ = model_for()
    with torch.no_grad():
        for prm in model.diffloss.parameters():
            prm.mul_(0.1)
    sd = model.state_dict()
    tok = tokenizer()
    ctx, mask, pos = text()
    K, cfg, B, n = len(PATCH_NUMS), 2.0, 2, PATCH_NUMS[-1] ** 2
    s = model.sample(ctx, tok, mask, cfg=cfg, greedy=True, residual=True, generator=torch.Generator().manual_seed(3))
    x_in = teacher_forcing_input(tok, Tokens("hybrid", PATCH_NUMS, indices=s.indices))
    null = model.null_text(ctx, mask, pos)
    with torch.no_grad():
        h_c = model.hidden_states(ctx, x_in, mask, pos)[0][:, -n:]
        h_u = model.hidden_states(null[0], x_in, null[1], null[2])[0][:, -n:]
        emb = tok.code_embedding(s.indices[-1]) @ sd["word_embed.weight"].T + sd["word_embed.bias"]
        z_c = rms(h_c + emb, sd["decoder_norm.weight"], 1e-6).reshape(B * n, C)
        z_u = rms(h_u + emb, sd["decoder_norm.weight"], 1e-6).reshape(B * n, C)
        t = cfg * (K - 2) / (K - 1)
        g = torch.Generator().manual_seed(3)
        for _ in range(B):
            torch.randperm(n, generator=g)
        use, ab, nb, post_log, c0, ct = cosine_respaced()
        x = torch.randn(B * n, CV, generator=g)
        for step in reversed(range(8)):
            tt = torch.full((B * n,), use[step])
            out_c, out_u = hart_mlp_adaln(sd, x, tt, z_c), hart_mlp_adaln(sd, x, tt, z_u)
            eps = (1 + t) * out_c[:, :CV] - t * out_u[:, :CV]
            x0 = ((x.double() - (1 - ab[step]).sqrt() * eps.double()) / ab[step].sqrt()).clamp(-1, 1)
            mean = c0[step] * x0 + ct[step] * x.double()
            if step > 0:
                frac = (out_c[:, CV:].double() + 1) / 2
                log_var = frac * nb[step].log() + (1 - frac) * post_log[step]
                x = (mean + (0.5 * log_var).exp() * torch.randn(B * n, CV, generator=g).double()).float()
            else:
                x = mean.float()
    ref = (x * 0.6).view(B, n, CV).transpose(1, 2).reshape(B, CV, PATCH_NUMS[-1], PATCH_NUMS[-1])
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(s.residual, ref, rtol=0, atol=1e-5)


def test_maskgit_passes_and_residual():
    model, _ = model_for()
    # small weights for the diffusion MLP so its learned variance stays in range
    with torch.no_grad():
        for prm in model.diffloss.parameters():
            prm.mul_(0.1)
    tok = tokenizer()
    ctx, mask, _ = text()
    n = PATCH_NUMS[-1] ** 2
    passes = model._maskgit_steps(2, n, 2, torch.Generator().manual_seed(0), "cpu")
    # pass 1 keeps max(1, min(15, floor(16 cos(pi / 4)))) = 11 masked: it predicts 5, pass 2 the other 11
    assert [int(m[0].sum()) for m in passes] == [5, 11]
    assert torch.equal(passes[0] ^ passes[1], torch.ones(2, n, dtype=torch.bool))
    one = model._maskgit_steps(2, n, 1, None, "cpu")
    assert len(one) == 1 and bool(one[0].all())  # the default: every token in one pass
    four = model._maskgit_steps(1, n, 4, torch.Generator().manual_seed(1), "cpu")
    assert int(sum(m.long() for m in four).max()) == 1 and int(sum(m.sum() for m in four)) == n
    g = torch.Generator().manual_seed(0)
    s = model.sample(ctx, tok, mask, generator=g, num_maskgit_iters=2, top_k=None)
    assert s.residual.shape == (2, CV, PATCH_NUMS[-1], PATCH_NUMS[-1]) and torch.isfinite(s.residual).all()
    assert s.residual.abs().max() <= 0.6 + 1e-6  # x0 clipped to [-1, 1], times 0.6
    f_hat = tok.empty_f_hat(2)
    for k in range(len(PATCH_NUMS)):
        f_hat = tok.add_scale(f_hat, k, s.indices[k])
    torch.testing.assert_close(s.f_hat, f_hat + s.residual)
    # same generator seed, same draws
    again = model.sample(ctx, tok, mask, generator=torch.Generator().manual_seed(0), num_maskgit_iters=2)
    assert all(torch.equal(a, b) for a, b in zip(again.indices, s.indices))
    assert torch.equal(again.residual, s.residual)


def test_diffusion_net_equals_harts_and_hartkits():
    model, sd = model_for(seed=2)
    g = torch.Generator().manual_seed(4)
    x, c = torch.randn(6, CV, generator=g), torch.randn(6, C, generator=g)
    t = torch.tensor([0, 1, 142, 500, 998, 999])
    out = model.diffloss.net(x, t, c)
    torch.testing.assert_close(out, hart_mlp_adaln(sd, x, t, c), rtol=0, atol=1e-5)
    net = DiffusionMLP(CV, C, CONFIG["diff_width"], DD, learn_sigma=True)
    net.load_state_dict(hart_diffusion_to_hartkit(model.state_dict(), DD), strict=True)
    torch.testing.assert_close(net(x, t, c), out, rtol=0, atol=1e-6)


def test_load_from_release_folder(tmp_path):
    folder = write_release(tmp_path / "llm", reference_state())
    model = load_hart_transformer(folder, V, CV, patch_nums=PATCH_NUMS)
    assert not model.training and len(model.blocks) == DEPTH
    assert torch.equal(model.head.bias, reference_state()["head.bias"])
    with pytest.raises(ConfigError, match="patch_nums"):
        load_hart_transformer(folder, V, CV, patch_nums=(1, 2, 4, 8))
    # the pipeline route loads the same tensors into the generator the stages drive
    cfg = SimpleNamespace(name="hart_0.7b", checkpoint=str(folder))
    gen = load_hart_generator(cfg, tokenizer(), text_encoder=lambda prompts: text(len(prompts)))
    assert torch.equal(gen.transformer.head.bias, model.head.bias)
    with pytest.raises(ConfigError, match="patch_nums must start at 1"):
        HARTTransformer({**CONFIG, "patch_nums": [2, 3, 4]}, V, CV)
