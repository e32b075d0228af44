"""HART's recipe as published (issue 11, item 3): no Phi at the hybrid's last scale, the residual target of
codes sampled from the model's own logits, HART's last-scale token subset applied alike to every kind."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from hartkit.ar_models.config import ARConfig
from hartkit.ar_models.model import (
    ScaleAR,
    TokenBatch,
    TokenSpec,
    hart_expected_kept,
    hart_mask_rate,
    hart_num_kept,
)
from hartkit.ar_models.token_cache import encode_dataset, to_token_batch
from hartkit.tokenizers import Tokens, build_tokenizer
from hartkit.tokenizers.fake import FakeMultiScaleTokenizer
from hartkit.tokenizers.protocol import teacher_forcing_input

PROMPTS = ["a red circle", "two green squares", "", "a small yellow triangle"]
EPS32 = torch.finfo(torch.float32).eps  # bounds the relative error of one float32 operation (unit roundoff eps/2)

# a tiny hybrid tokenizer whose last scale (8x8 = 64 tokens) is larger than HART's 32-token floor
TINY_TOK = {
    "autoencoder": {"ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "dec_res_blocks": 1, "attn_levels": [],
                    "mid_attn": False, "z_channels": 4, "norm_groups": 4},
    "quantizer": {"vocab_size": 32, "patch_nums": [1, 2, 4, 8], "num_phi": 4},
}


def tiny_tokenizer(kind="hybrid", **quantizer):
    torch.manual_seed(0)
    cfg = OmegaConf.create({"name": kind, "kind": kind, **TINY_TOK})
    cfg.quantizer.update(quantizer)
    tok = build_tokenizer(cfg).eval()
    with torch.no_grad():
        tok.quantize.embedding.weight.normal_(0, 0.5)  # spread the codes so that many get used
        for phi in tok.quantize.quant_resi.qresi_ls:  # a Phi that visibly differs from the identity
            phi.weight.normal_(0, 0.3)
    return tok


def images(B=4, size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, size, size, generator=g) * 2 - 1


def tiny_ar_cfg(**over) -> ARConfig:
    cfg = OmegaConf.structured(ARConfig)
    cfg.depth, cfg.width, cfg.heads = 2, 64, 4
    cfg.text_encoder.width, cfg.text_encoder.depth, cfg.text_encoder.max_len = 32, 1, 8
    cfg.text_encoder.vocab_buckets = 256
    cfg.diffusion.width, cfg.diffusion.depth, cfg.diffusion.batch_mul = 32, 1, 1
    for k, v in over.items():
        OmegaConf.update(cfg, k, v)
    return cfg


def walk_bound(f, contributions):
    """Elementwise bound on every intermediate of the walk and of the decode: |f| + sum_k |h_k|."""
    return f.abs() + sum(h.abs() for h in contributions)


# --------------------------------------------------------------------------------------------------------------
def test_phi_off_discrete_plus_residual_gives_back_the_latent_for_any_last_code():
    """HART's convention: without Phi at the last scale, f_hat_{<K} + E[c] + (rest_before_last - E[c]) is the
    latent for *every* last-scale code c (the ground truth or one the generator sampled), up to the rounding of
    the 2K float32 additions / subtractions involved; with VAR's Phi at the last scale it is not."""
    tok = tiny_tokenizer(phi_on_last_scale=None)  # None: the kind decides; hybrid -> HART (no Phi)
    assert tok.quantize.phi_on_last_scale is False
    K = len(tok.patch_nums)
    with torch.no_grad():
        f = tok.encode_latent(images())
        indices, _, rest = tok.quantize.encode_walk(f)
        n_last = tok.patch_nums[-1] ** 2
        other = torch.randint(0, tok.vocab_size, (f.shape[0], n_last), generator=torch.Generator().manual_seed(5))
        assert (other != indices[-1]).float().mean() > 0.5  # mostly other codes than the ground truth
        for codes in (indices[-1], other):
            last_map = tok.add_scale(torch.zeros_like(f), K - 1, codes)
            assert torch.equal(last_map, tok.quantize.embed_scale(codes, K - 1))  # no Phi: the embedding itself
            tokens = Tokens("hybrid", tok.patch_nums, indices=indices[:-1] + [codes], residual=rest - last_map)
            latent = tok.tokens_to_latent(tokens)
            contributions = [tok.add_scale(torch.zeros_like(f), k, indices[k]) for k in range(K - 1)] + [last_map]
            tol = 2 * K * EPS32 * walk_bound(f, contributions)
            err = (latent - f).abs()
            assert (err <= tol).all(), float((err - tol).max())
        # the tokenizer's own tokens (ground-truth codes, residual f - f_hat) decode to the latent too
        tokens = tok.encode(images())
        assert torch.equal(tokens.rest_before_last, rest)
        assert ((tok.tokens_to_latent(tokens) - f).abs() <= tol).all()

        # VAR's convention at the last scale: the same construction misses by far more than the bound
        tok.quantize.phi_on_last_scale = True
        last_map = tok.add_scale(torch.zeros_like(f), K - 1, other)
        tokens = Tokens("hybrid", tok.patch_nums, indices=indices[:-1] + [other],
                        residual=rest - tok.quantize.embed_scale(other, K - 1))
        err = (tok.tokens_to_latent(tokens) - f).abs()
        assert err.max() > 1e3 * tol.max()
        assert not torch.equal(last_map, tok.quantize.embed_scale(other, K - 1))


def test_hybrid_default_follows_hart_and_discrete_follows_var():
    assert tiny_tokenizer("hybrid").quantize.phi_on_last_scale is False
    assert tiny_tokenizer("discrete").quantize.phi_on_last_scale is True
    assert tiny_tokenizer("hybrid", phi_on_last_scale=True).quantize.phi_on_last_scale is True


# --------------------------------------------------------------------------------------------------------------
def _cache_batch(tok, B=4):
    """The generator's batch through the real token cache (encode_dataset -> to_token_batch)."""
    imgs = images(B)
    items = [{"image": imgs[i], "prompt": PROMPTS[i % len(PROMPTS)], "category": "c", "category_id": 0}
             for i in range(B)]

    def collate(rows):
        return {"image": torch.stack([r["image"] for r in rows]), "prompt": [r["prompt"] for r in rows],
                "category": [r["category"] for r in rows], "category_id": [r["category_id"] for r in rows]}

    enc = encode_dataset(tok, items, batch_size=B, device="cpu", collate_fn=collate)
    return to_token_batch(enc["tensors"], list(enc["prompts"]), "cpu"), imgs


def test_residual_target_is_rest_before_last_minus_the_sampled_codes_embedding(monkeypatch):
    tok = tiny_tokenizer()
    batch, imgs = _cache_batch(tok)
    K = len(tok.patch_nums)
    with torch.no_grad():  # the cache's rest_before_last is the latent minus the discrete scales before the last
        f = tok.encode_latent(imgs)
        tokens = tok.encode(imgs)
        before = [tok.add_scale(torch.zeros_like(f), k, tokens.indices[k]) for k in range(K - 1)]
        expect_rest = f - sum(before)
        tol = 2 * K * EPS32 * walk_bound(f, before)
        assert ((batch.rest_before_last - expect_rest.flatten(2).transpose(1, 2)).abs()
                <= tol.flatten(2).transpose(1, 2)).all()

    torch.manual_seed(0)
    model = ScaleAR(tiny_ar_cfg(), TokenSpec.from_tokenizer(tok)).train()
    assert model.residual_codes == "sampled" and model.subset_rule == "hart"
    seen = {}
    real_subset, real_target, real_diff = model.final_scale_subset, model.sampled_residual_target, model.diffusion.loss

    def subset(*a, **k):
        seen["token_idx"] = real_subset(*a, **k)
        return seen["token_idx"]

    def target(*a, **k):
        seen["target"], seen["code_emb"], seen["codes"] = out = real_target(*a, **k)
        return out

    def diff_loss(x0, cond, generator=None):
        seen["x0"] = x0
        return real_diff(x0, cond, generator=generator)

    monkeypatch.setattr(model, "final_scale_subset", subset)
    monkeypatch.setattr(model, "sampled_residual_target", target)
    monkeypatch.setattr(model.diffusion, "loss", diff_loss)
    loss, metrics = model.loss(batch, generator=torch.Generator().manual_seed(7))
    assert torch.isfinite(loss) and "code_match" in metrics

    n_last, start = tok.patch_nums[-1] ** 2, sum(p * p for p in tok.patch_nums[:-1])
    kept = seen["token_idx"][:, start:] - start  # (B, 32): HART keeps exactly 32 of 64
    assert kept.shape == (4, 32) and (kept < n_last).all()
    codes = seen["codes"]
    assert codes.shape == kept.shape
    # expected target, built independently: rest before the last scale at the kept positions - E[sampled code]
    rest_map = tokens.rest_before_last.flatten(2).transpose(1, 2)  # (B, 64, C)
    rest_kept = torch.stack([rest_map[b, kept[b]] for b in range(4)])
    expected = rest_kept - tok.code_embedding(codes)
    torch.testing.assert_close(seen["target"], expected, atol=0, rtol=0)
    torch.testing.assert_close(seen["x0"], expected.flatten(0, 1), atol=0, rtol=0)
    # the codes were sampled, not the ground truth: the target is not the ground-truth residual
    gt = torch.stack([tokens.indices[-1][b, kept[b]] for b in range(4)])
    assert (codes != gt).any()
    gt_residual = torch.stack([tokens.residual.flatten(2).transpose(1, 2)[b, kept[b]] for b in range(4)])
    assert not torch.allclose(seen["target"], gt_residual)
    # and each target decodes with its sampled code back to the latent (no Phi at the last scale)
    torch.testing.assert_close(tok.code_embedding(codes) + seen["target"], rest_kept, atol=1e-6, rtol=0)


def test_sampled_codes_follow_the_logits_top_k_and_come_from_the_generator():
    tok = tiny_tokenizer()
    batch, _ = _cache_batch(tok)
    torch.manual_seed(0)
    model = ScaleAR(tiny_ar_cfg(**{"train.residual_top_k": 1}), TokenSpec.from_tokenizer(tok)).train()
    with torch.no_grad():
        model.head.weight.normal_(0, 0.5)
    logits = torch.randn(4, 32, tok.vocab_size)
    pos = torch.arange(32).expand(4, -1)
    _, _, codes = model.sampled_residual_target(batch, logits, pos)
    assert torch.equal(codes, logits.argmax(-1))  # top-k 1: the model's own most likely code
    # the default top-k scales HART's 600 of 4096 codes to the vocabulary
    assert ScaleAR(tiny_ar_cfg(), TokenSpec.from_tokenizer(tok)).residual_top_k == round(600 * 32 / 4096)
    # reproducible from the step generator alone, whatever the global RNG does
    model2 = ScaleAR(tiny_ar_cfg(), TokenSpec.from_tokenizer(tok)).train()
    outs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        loss, _ = model2.loss(batch, generator=torch.Generator().manual_seed(11))
        outs.append(loss.item())
    assert outs[0] == outs[1]


def test_teacher_mode_uses_the_ground_truth_and_phi_last_requires_it():
    tok = tiny_tokenizer(phi_on_last_scale=True)
    with pytest.raises(ValueError, match="residual_codes=teacher"):
        ScaleAR(tiny_ar_cfg(), TokenSpec.from_tokenizer(tok))
    model = ScaleAR(tiny_ar_cfg(**{"train.residual_codes": "teacher"}), TokenSpec.from_tokenizer(tok)).train()
    batch, _ = _cache_batch(tok)
    loss, metrics = model.loss(batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and "code_match" not in metrics


# --------------------------------------------------------------------------------------------------------------
def _fake_pair(V=128, patch_nums=(1, 2, 4, 8)):
    """A discrete and a hybrid generator of one config on tokenizers with the same scales and vocabulary."""
    models = {}
    for kind in ("discrete", "hybrid"):
        tok = FakeMultiScaleTokenizer(kind, patch_nums=patch_nums, vocab_size=V, latent_channels=8)
        torch.manual_seed(0)
        models[kind] = (ScaleAR(tiny_ar_cfg(), TokenSpec.from_tokenizer(tok)).train(), tok)
    return models


def _position_batch(tok, B=4):
    """Targets that name their own position: idx[b, l] = l, so the captured targets say which tokens were used."""
    tokens = tok.encode(images(B, size=32))
    L = tokens.num_tokens
    flat = lambda m: m.flatten(2).transpose(1, 2)
    hybrid = tok.kind == "hybrid"
    return TokenBatch(cond=PROMPTS[:B], x_in=teacher_forcing_input(tok, tokens),
                      idx=torch.arange(L).expand(B, -1).clone(),
                      residual=flat(tokens.residual) if hybrid else None,
                      code_emb=tok.code_embedding(tokens.indices[-1]) if hybrid else None,
                      rest_before_last=flat(tokens.rest_before_last) if hybrid else None)


@pytest.mark.parametrize("rule", ["hart", "fraction", "all"])
def test_categorical_loss_sees_the_same_tokens_for_discrete_and_hybrid(monkeypatch, rule):
    targets = {}
    real_ce = F.cross_entropy

    def spy(logits, target, *a, **k):
        targets.setdefault(spy.kind, []).append(target.clone())
        return real_ce(logits, target, *a, **k)

    monkeypatch.setattr(F, "cross_entropy", spy)
    for kind, (model, tok) in _fake_pair().items():
        model.subset_rule = rule
        spy.kind = kind
        batch = _position_batch(tok)
        for seed in (3, 4):
            model.loss(batch, final_scale_keep=0.25, generator=torch.Generator().manual_seed(seed))
    L, start, n_last = 85, 21, 64
    for a, b in zip(targets["discrete"], targets["hybrid"]):
        assert torch.equal(a, b)  # same tokens, seed for seed
    seen = targets["discrete"][0].view(4, -1)
    n_keep = {"hart": 32, "fraction": 16, "all": n_last}[rule]
    assert seen.shape == (4, start + n_keep)
    assert torch.equal(seen[:, :start], torch.arange(start).expand(4, -1))  # earlier scales are always kept
    if rule != "all":
        assert not torch.equal(seen[0], seen[1])  # a random order per image (HART's sample_orders)
        assert not torch.equal(targets["discrete"][0], targets["discrete"][1])  # and a new draw per step
    else:
        assert torch.equal(seen, torch.arange(L).expand(4, -1))


def test_hart_subset_rule_numbers():
    # HARTForT2I.random_masking: min(ceil(n r), n - 32) of n dropped, r in [0.5, 1]
    assert hart_num_kept(64, 0.5) == 32 and hart_num_kept(64, 1.0) == 32  # 8x8: exactly 32 whatever r
    assert hart_num_kept(4096, 1.0) == 32 and hart_num_kept(4096, 0.5) == 2048
    assert hart_num_kept(16, 0.9) == 16  # no more than 32 tokens: all stay
    g = torch.Generator().manual_seed(0)
    rates = torch.tensor([hart_mask_rate(g) for _ in range(4000)], dtype=torch.float64)
    assert rates.min() >= 0.5 and rates.max() <= 1.0
    # mean of N(1, 0.25) truncated to [0.5, 1]: 1 - 0.25 (phi(0) - phi(-2)) / (Phi(0) - Phi(-2)) = 0.8193
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    mass = 0.5 - 0.5 * math.erfc(2 / math.sqrt(2))
    mean = 1 - 0.25 * (pdf(0) - pdf(-2)) / mass
    sem = 0.1253 / math.sqrt(len(rates))  # the truncated normal's std / sqrt(n)
    assert abs(float(rates.mean()) - mean) < 5 * sem
    # so at 64x64 (HART 1024 px) 1 - 0.8193 = 18.1% of the last scale stays on average (ceil: < 1 token)
    assert abs(hart_expected_kept(4096) / 4096 - (1 - mean)) < 2 / 4096
    assert hart_expected_kept(64) == 32


# --------------------------------------------------------------------------------------------------------------
def test_hart_tokenizer_recipe_preset(compose_cfg):
    """tokenizer=hybrid_hart_recipe: start from the discrete tokenizer, frozen encoder + quantizer, both paths."""
    cfg = compose_cfg("tokenizer=hybrid_hart_recipe").tokenizer
    assert cfg.kind == "hybrid" and cfg.init_from == "discrete" and cfg.freeze_quantizer_path
    assert cfg.residual_drop_p == 0.5 and cfg.quantizer.phi_on_last_scale is False
    plain = compose_cfg("tokenizer=discrete").tokenizer
    # same sizes as the discrete row, so its weights load one to one
    assert cfg.autoencoder == plain.autoencoder
    assert {k: v for k, v in cfg.quantizer.items() if k not in ("phi_on_last_scale", "dead_code_reinit")} == \
        {k: v for k, v in plain.quantizer.items() if k not in ("phi_on_last_scale", "dead_code_reinit")}
    with pytest.raises(ValueError, match="init_from"):  # a frozen random encoder is refused
        build_tokenizer(OmegaConf.merge(cfg, {"init_from": None}))
    model = build_tokenizer(cfg)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"post_quant_conv", "decoder"}


@pytest.mark.parametrize("pos", ["rope2d", "absolute"])
def test_per_image_token_subset_forward_matches_one_image_at_a_time(pos):
    """The (B, n) per-image token path (HART's own order per image) gives each image what a pass over that
    image's tokens alone gives: positions, RoPE and the mask follow the kept tokens."""
    (model, tok), = [v for k, v in _fake_pair().items() if k == "hybrid"]
    torch.manual_seed(0)
    model = ScaleAR(tiny_ar_cfg(pos=pos), model.spec).eval()
    with torch.no_grad():  # open the AdaLN gates (the init keeps them near zero), so attention matters
        for blk in model.blocks.blocks:
            blk.ada_lin[-1].weight.normal_(0, 0.05)
    batch = _position_batch(tok)
    idx = model.final_scale_subset(4, torch.Generator().manual_seed(2))
    with torch.no_grad():
        cond = model.condition(batch.cond)
        h = model(cond, batch.x_in, idx)
        for b in range(4):
            one = model.condition(batch.cond[b:b + 1])
            torch.testing.assert_close(h[b:b + 1], model(one, batch.x_in[b:b + 1], idx[b]), atol=1e-5, rtol=1e-5)
        full = model(cond, batch.x_in, torch.arange(85).expand(4, -1))
        torch.testing.assert_close(full, model(cond, batch.x_in), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("detach", [True, False])
def test_detached_diffusion_condition_leaves_the_transformer_to_the_cross_entropy(monkeypatch, detach):
    """``ar.train.detach_diffusion_condition``: the transformer's gradient is the cross-entropy's alone."""
    tok = tiny_tokenizer()
    batch, _ = _cache_batch(tok)
    torch.manual_seed(0)
    model = ScaleAR(tiny_ar_cfg(**{"train.detach_diffusion_condition": detach}), TokenSpec.from_tokenizer(tok))
    with torch.no_grad():  # a trained head: its zero-initialised output layers would pass no gradient back at all
        for p in model.diffusion.parameters():
            p.add_(0.1 * torch.randn_like(p))

    def block_grads(diffusion_counts: bool) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        if not diffusion_counts:  # the total without the diffusion term: the same draws before it, then zero
            monkeypatch.setattr(model.diffusion, "loss", lambda *a, **k: torch.zeros(()))
        loss, _ = model.loss(batch, generator=torch.Generator().manual_seed(3))
        loss.backward()
        monkeypatch.undo()
        return [p.grad.clone() for p in model.blocks.parameters() if p.grad is not None]

    with_diffusion, ce_only = block_grads(True), block_grads(False)
    assert len(with_diffusion) == len(ce_only) > 0
    same = all(torch.equal(a, b) for a, b in zip(with_diffusion, ce_only))
    assert same is detach  # HART's default (not detached): the diffusion loss also trains the transformer
