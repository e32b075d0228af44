"""Plug-in quantizers (FSQ, LFQ, BSQ) on VAR's scale walk: registry and configs, single-scale agreement with
vector-quantize-pytorch, entropy terms by hand, multi-scale round trips, the hybrid contract, training."""

from __future__ import annotations

import math
from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from hartkit.errors import ConfigError
from hartkit.tokenizers import build_tokenizer
from hartkit.tokenizers.checkpoint import tokenizer_config
from hartkit.tokenizers.config import QuantizerConfig
from hartkit.tokenizers.quantizer import MultiScaleQuantizer
from hartkit.tokenizers.quantizers import available, build_quantizer, tokenizer_label
from hartkit.tokenizers.quantizers.bsq import BSQ
from hartkit.tokenizers.quantizers.fsq import FSQ
from hartkit.tokenizers.quantizers.lfq import LFQ

PLUGINS = ("fsq", "lfq", "bsq")


def single_scale(cls, channels, pn=4, **kw):
    """One scale, no Phi at it: the walk reduces to project_out(code(project_in(f)))."""
    return cls(channels, (pn,), phi_on_last_scale=False, **kw)


def multi_scale(qtype, channels=6, patch_nums=(1, 2, 3, 4), phi_last=True, seed=0, **q):
    torch.manual_seed(seed)
    defaults = {"fsq": {"levels": [5, 4, 3]}, "lfq": {"vocab_size": 16}, "bsq": {"vocab_size": 16}}[qtype]
    quant = build_quantizer({"type": qtype, "patch_nums": list(patch_nums), **defaults, **q}, channels, patch_nums,
                            phi_last)
    with torch.no_grad():  # gains that differ per scale, so a mix-up of scales would show
        quant.log_gain.copy_(torch.linspace(0.5, -1.0, len(patch_nums)))
    return quant


# ---------------------------------------------------------------------------------------- registry, configs
def test_registry_lists_var_and_the_plugins_and_refuses_unknown_types():
    assert {"var", *PLUGINS} <= set(available())
    q = build_quantizer({"vocab_size": 8, "patch_nums": [1, 2]}, 4, (1, 2), True)
    assert type(q) is MultiScaleQuantizer  # a config without `type` is VAR's codebook
    with pytest.raises(ConfigError, match="fsq"):
        build_quantizer({"type": "nope", "patch_nums": [1]}, 4, (1,), True)


def test_existing_configs_gain_no_key_and_plugins_validate_their_own():
    from hartkit.configs import compose

    plain = {f.name for f in fields(QuantizerConfig)}
    for tok in ("discrete", "hybrid", "var_pretrained"):
        assert set(compose([f"tokenizer={tok}"]).tokenizer.quantizer) == plain  # same hash as before
    cfg = compose(["tokenizer=discrete", "tokenizer/quantizer=fsq"])
    assert cfg.tokenizer.quantizer.type == "fsq" and list(cfg.tokenizer.quantizer.levels) == [8, 5, 5, 5]
    assert tokenizer_label(cfg.tokenizer) == "discrete-fsq"
    assert tokenizer_label(compose(["tokenizer=hybrid"]).tokenizer) == "hybrid"
    with pytest.raises(Exception, match="levelz"):
        compose(["tokenizer/quantizer=fsq", "tokenizer.quantizer.levelz=[3]"])
    with pytest.raises(Exception, match="group_size"):
        compose(["tokenizer/quantizer=lfq", "tokenizer.quantizer.group_size=2"])  # a BSQ key
    for qtype, vocab in (("fsq", 1000), ("lfq", 1024), ("bsq", 1024)):
        c = compose(["tokenizer=hybrid", f"tokenizer/quantizer={qtype}"])
        assert build_tokenizer(c.tokenizer).vocab_size == vocab
        # an artifact's config.yaml (plain YAML) validates against the same schema
        again = tokenizer_config(OmegaConf.create(OmegaConf.to_yaml(c.tokenizer)))
        assert OmegaConf.to_container(again) == OmegaConf.to_container(c.tokenizer)


def test_plugin_configs_refuse_what_cannot_work():
    with pytest.raises(ConfigError, match="power of two"):
        build_quantizer({"type": "lfq", "vocab_size": 1000, "patch_nums": [1]}, 4, (1,), True)
    with pytest.raises(ConfigError, match="does not match levels"):
        build_quantizer({"type": "fsq", "levels": [4, 4], "vocab_size": 15, "patch_nums": [1]}, 4, (1,), True)
    with pytest.raises(ConfigError, match="dead_code_reinit"):
        build_quantizer({"type": "bsq", "dead_code_reinit": True, "patch_nums": [1]}, 4, (1,), True)
    with pytest.raises(ConfigError, match="must divide"):
        build_quantizer({"type": "bsq", "vocab_size": 16, "group_size": 3, "patch_nums": [1]}, 4, (1,), True)
    with pytest.raises(ConfigError, match="levels"):
        build_quantizer({"type": "fsq", "levelz": [3], "patch_nums": [1]}, 4, (1,), True)


# ------------------------------------------------------------------- single scale vs vector-quantize-pytorch
@pytest.fixture
def vqp():
    return pytest.importorskip("vector_quantize_pytorch")  # the dev extra; only these comparisons need it


def latent(channels, pn=4, batch=3, scale=1.5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, pn, pn, generator=g) * scale


@pytest.mark.parametrize("channels", [4, 6])  # 4: no projections (exact); 6: projections copied across
def test_fsq_single_scale_matches_vector_quantize_pytorch(vqp, channels):
    levels = [8, 5, 5, 3]
    ours = single_scale(FSQ, channels, levels=levels).eval()
    ref = vqp.FSQ(levels=levels, dim=channels).eval()
    if channels != len(levels):
        ref.project_in.load_state_dict(ours.project_in.state_dict())
        ref.project_out.load_state_dict(ours.project_out.state_dict())
    f = latent(channels)
    with torch.no_grad():
        out, idx = ref(f)
        indices, f_hat = ours.encode_indices(f)
        walk = ours(f)
    assert ours.vocab_size == ref.codebook_size == 600
    assert torch.equal(indices[0], idx.flatten(1).long())
    assert torch.equal(walk.indices[0], indices[0])
    if channels == len(levels):
        assert torch.equal(walk.f_hat, out) and torch.equal(f_hat, out)
    else:
        torch.testing.assert_close(walk.f_hat, out, atol=1e-6, rtol=0)
        torch.testing.assert_close(f_hat, out, atol=1e-6, rtol=0)
    # the implicit codebook: every index maps to the code vector-quantize-pytorch gives it
    all_idx = torch.arange(600)
    torch.testing.assert_close(ours.codes_of(all_idx), ref._indices_to_codes(all_idx), atol=0, rtol=0)


@pytest.mark.parametrize("channels", [4, 6])
def test_lfq_single_scale_matches_vector_quantize_pytorch(vqp, channels):
    ours = single_scale(LFQ, channels, vocab_size=16, entropy_weight=0.3, batch_entropy_weight=0.7,
                        entropy_temperature=1.0, commit_weight=0.2)
    ref = vqp.LFQ(dim=channels, codebook_size=16, entropy_loss_weight=0.3, diversity_gamma=0.7,
                  commitment_loss_weight=0.2)
    if channels != 4:
        ref.project_in.load_state_dict(ours.project_in.state_dict())
        ref.project_out.load_state_dict(ours.project_out.state_dict())
    f = latent(channels, scale=0.3)
    ours.eval(), ref.eval()
    with torch.no_grad():
        out, idx, _ = ref(f)
        indices, f_hat = ours.encode_indices(f)
    assert torch.equal(indices[0], idx.flatten(1).long())
    torch.testing.assert_close(f_hat, out, atol=1e-6 if channels != 4 else 0, rtol=0)
    # the loss, in training mode: entropy terms + commitment, as vector-quantize-pytorch computes them
    ours.train(), ref.train()
    with torch.no_grad():
        (_, _, aux), parts = ref(f, inv_temperature=1.0, return_loss_breakdown=True)
        v = ours.scale_input(f.permute(0, 2, 3, 1).reshape(-1, channels), 0)
        loss, stats = ours.code_loss(v, ours.code(v)[0])
    assert stats["entropy/sample"] == pytest.approx(float(parts.per_sample_entropy), rel=1e-5)
    assert stats["entropy/batch"] == pytest.approx(float(parts.batch_entropy), rel=1e-5)
    assert stats["commit"] == pytest.approx(float(parts.commitment), rel=1e-5)
    assert float(loss) == pytest.approx(float(aux), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("channels", [16, 6])  # BSQ = vector-quantize-pytorch's LFQ(spherical=True)
def test_bsq_single_scale_matches_vector_quantize_pytorch_spherical_lfq(vqp, channels):
    ours = single_scale(BSQ, channels, vocab_size=2**16 if channels == 16 else 16, entropy_temperature=1.0)
    ref = vqp.LFQ(dim=channels, codebook_size=ours.vocab_size, spherical=True, entropy_loss_weight=0.1)
    if channels != ours.code_dim:
        ref.project_in.load_state_dict(ours.project_in.state_dict())
        ref.project_out.load_state_dict(ours.project_out.state_dict())
    f = latent(channels, scale=0.5)
    ours.eval(), ref.eval()
    with torch.no_grad():
        out, idx, _ = ref(f)
        indices, f_hat = ours.encode_indices(f)
    assert torch.equal(indices[0], idx.flatten(1).long())
    if channels == 16:
        assert torch.equal(f_hat, out)
        assert torch.allclose(f_hat.norm(dim=1), torch.ones(()))  # codes on the unit sphere
    else:
        torch.testing.assert_close(f_hat, out, atol=1e-6, rtol=0)
    if channels == 6:  # the exact entropies (group_size 0: one group) equal the full soft assignment's
        ours.train(), ref.train()
        with torch.no_grad():
            _, parts = ref(f, inv_temperature=1.0, return_loss_breakdown=True)
            h_sample, h_batch = ours.entropies(ours.scale_input(f.permute(0, 2, 3, 1).reshape(-1, channels), 0))
        assert float(h_sample) == pytest.approx(float(parts.per_sample_entropy), rel=1e-5)
        assert float(h_batch) == pytest.approx(float(parts.batch_entropy), rel=1e-5)


# ---------------------------------------------------------------------------------- entropy terms by hand
def test_lfq_entropy_loss_on_a_hand_computable_case():
    # one bit, two vectors +a and -a with 4a / T = ln 3: p(+1 | +a) = 3/4, p(+1 | -a) = 1/4
    T = 0.5
    a = math.log(3) * T / 4
    q = LFQ(1, (1,), vocab_size=2, entropy_weight=2.0, sample_entropy_weight=1.5, batch_entropy_weight=0.5,
            entropy_temperature=T, commit_weight=0.1).train()
    v = torch.tensor([[a], [-a]])
    codes, idx = q.code(v)
    assert idx.tolist() == [1, 0] and codes.flatten().tolist() == pytest.approx([1.0, -1.0])
    h_sample, h_batch = q.entropies(v)
    hb = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert float(h_sample) == pytest.approx(hb, rel=1e-6)
    assert float(h_batch) == pytest.approx(math.log(2), rel=1e-6)  # the batch average is (1/2, 1/2)
    loss, _ = q.code_loss(v, codes)
    commit = (1 - a) ** 2
    assert float(loss) == pytest.approx(2.0 * (1.5 * hb - 0.5 * math.log(2)) + 0.1 * commit, rel=1e-6)


def test_bsq_factorised_batch_entropy_on_correlated_bits():
    # two bits that always agree: the codes (+,+) and (-,-), each half the time, with confident assignments
    q = BSQ(2, (1,), vocab_size=4, group_size=1, entropy_temperature=1e-3).train()
    v = F.normalize(torch.tensor([[1.0, 1.0], [-1.0, -1.0]] * 3), dim=-1)
    h_sample, h_batch = q.entropies(v)
    assert float(h_sample) == pytest.approx(0.0, abs=1e-6)
    assert float(h_batch) == pytest.approx(2 * math.log(2), rel=1e-5)  # per-bit groups: 1 bit of entropy each
    exact = BSQ(2, (1,), vocab_size=4, group_size=0, entropy_temperature=1e-3).train()
    assert float(exact.entropies(v)[1]) == pytest.approx(math.log(2), rel=1e-5)  # the true entropy: 2 codes


def test_bsq_entropies_follow_the_papers_equations_by_enumeration():
    # p(c|v) = softmax_c(-||v - c||^2 / T) over all 2^d codes c in {+-1/sqrt(d)}^d, enumerated
    d, group, T = 6, 3, 0.2
    q = BSQ(d, (1,), vocab_size=2**d, group_size=group, entropy_temperature=T).train()
    v = F.normalize(torch.randn(10, d, generator=torch.Generator().manual_seed(3)), dim=-1).double()
    codes = q.codes_of(torch.arange(2**d)).double()
    p = torch.softmax(-torch.cdist(v, codes) ** 2 / T, dim=-1)  # (N, 2^d)
    h_sample = -(p * p.log()).sum(-1).mean()
    # batch entropy per group of bits: marginalise the averaged distribution onto each group's sub-code
    avg = p.mean(0).view(*([2] * d))  # axis i = bit i (most significant first)
    h_groups = 0.0
    for j in range(d // group):
        others = [i for i in range(d) if not j * group <= i < (j + 1) * group]
        m = avg.sum(dim=others).flatten()
        h_groups += float(-(m * m.log()).sum())
    ours_sample, ours_batch = q.entropies(v.float())
    assert float(ours_sample) == pytest.approx(float(h_sample), rel=1e-4)
    assert float(ours_batch) == pytest.approx(h_groups, rel=1e-4)


# ------------------------------------------------------------------------------ multi-scale walk, contracts
@pytest.mark.parametrize("qtype", PLUGINS)
@pytest.mark.parametrize("phi_last", [True, False])
def test_multi_scale_round_trip_indices_to_latent(qtype, phi_last):
    quant = multi_scale(qtype, phi_last=phi_last).eval()
    f = latent(6, pn=4, scale=2.0)
    indices, f_hat, rest_before_last = quant.encode_walk(f)
    assert [tuple(i.shape) for i in indices] == [(3, 1), (3, 4), (3, 9), (3, 16)]
    assert all(int(i.min()) >= 0 and int(i.max()) < quant.vocab_size for i in indices)
    assert torch.equal(quant.indices_to_f_hat(indices, (4, 4)), f_hat)  # indices -> latent == quantized latent
    # the training walk (straight-through codes) picks the same codes and the same latent
    quant.train()
    walk = quant(f)
    for a, b in zip(walk.indices, indices):
        assert torch.equal(a, b)
    torch.testing.assert_close(walk.f_hat, f_hat, atol=1e-5, rtol=0)
    assert torch.isfinite(walk.vq_loss) and 0 < walk.stats["codebook_usage"] <= 1
    if not phi_last:  # HART's convention: the last scale adds embedding(code) itself at each position
        last = quant.embedding(indices[-1]).view(3, 4, 4, 6).permute(0, 3, 1, 2)
        torch.testing.assert_close(f_hat - quant.indices_to_f_hat(indices[:-1], (4, 4)), last, atol=1e-6, rtol=0)


@pytest.mark.parametrize("qtype", PLUGINS)
def test_straight_through_gradients_reach_encoder_side_projections_and_gains(qtype):
    quant = multi_scale(qtype).train()
    f = latent(6, pn=4).requires_grad_(True)
    walk = quant(f)
    (walk.f_hat.square().mean() + walk.vq_loss).backward()
    for name, grad in (("f", f.grad), ("project_in", quant.project_in.weight.grad),
                       ("project_out", quant.project_out.weight.grad), ("log_gain", quant.log_gain.grad)):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def partial_sums(quant, indices, hw):
    """F_k: the walk's quantized latent after scales 0..k (exact codes), for every k."""
    return [quant.indices_to_f_hat(indices[:k + 1], hw) for k in range(len(indices))]


@pytest.mark.parametrize("qtype", PLUGINS)
def test_the_latent_loss_reaches_the_encoder_only_through_its_commitment_term(qtype):
    # VAR's latent loss per scale k is beta * mse(sg[F_k], f) + mse(F_k, sg[f]): the encoder commits through the
    # first term, the code side (projections, gains, Phi) learns from the second. Were the second term to reach
    # f through the straight-through codes, it would push f *away* from F_k (the codes do not move with f, the
    # gradient says they do), outweighing beta < 1: LFQ's unbounded code inputs then grew without limit
    # (results/research_log.md). With the code losses off, the f-gradient must be the first term's alone.
    off = {} if qtype == "fsq" else {"entropy_weight": 0.0, "commit_weight": 0.0}
    f0 = latent(6, pn=4, scale=2.0)
    for beta in (0.0, 0.25):
        quant = multi_scale(qtype, beta=beta, **off).train()
        f = f0.clone().requires_grad_(True)
        walk = quant(f)
        grad_f, *grads = torch.autograd.grad(walk.vq_loss, [f, quant.project_out.weight, quant.log_gain,
                                                            *quant.quant_resi.parameters()], allow_unused=True)
        F_k = partial_sums(quant, walk.indices, (4, 4))
        K, n = len(F_k), f0.numel()
        expected = sum(2 * beta * (f0 - Fk) / n for Fk in F_k) / K
        torch.testing.assert_close(torch.zeros_like(f0) if grad_f is None else grad_f, expected, atol=1e-7, rtol=0)
        # ... and the code side still learns from the second term
        assert all(g is not None and g.abs().sum() > 0 for g in grads[:2])
        assert sum(float(g.abs().sum()) for g in grads[2:] if g is not None) > 0


def test_lfq_latent_trained_on_the_walk_loss_stays_within_the_codes_reach():
    # An encoder output f trained by gradient descent on the latent loss alone (quantizer frozen, code losses off).
    # Its gradient is (2 beta / (n K)) sum_k (f - F_k) (the test above), so a step of lr = alpha n / (2 beta) gives
    # f' = (1 - alpha) f + alpha mean_k F_k, a convex combination: max|f'| <= max(max|f|, max_k max|F_k|), where
    # the F_k are sums of fixed codes (bounded). Before the fix f grew by orders of magnitude within these steps.
    quant = multi_scale("lfq", entropy_weight=0.0, commit_weight=0.0).train().requires_grad_(False)
    f = latent(6, pn=4, scale=2.0).requires_grad_(True)
    alpha = 0.5
    opt = torch.optim.SGD([f], lr=alpha * f.numel() / (2 * quant.beta))
    for _ in range(40):
        before = float(f.detach().abs().max())
        walk = quant(f)
        reach = max(float(Fk.abs().max()) for Fk in partial_sums(quant, walk.indices, (4, 4)))
        opt.zero_grad()
        walk.vq_loss.backward()
        opt.step()
        assert float(f.detach().abs().max()) <= max(before, reach) + 1e-5


def tiny_tokenizer(kind, qtype, seed=0):
    torch.manual_seed(seed)
    q = {"fsq": {"levels": [5, 4, 3]}, "lfq": {"vocab_size": 64}, "bsq": {"vocab_size": 64, "group_size": 3}}[qtype]
    return build_tokenizer({
        "name": kind, "kind": kind,
        "autoencoder": {"ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "dec_res_blocks": 1, "z_channels": 4,
                        "norm_groups": 4},
        "quantizer": {"type": qtype, "patch_nums": [1, 2, 4, 8], **q},
    })


@pytest.mark.parametrize("qtype", PLUGINS)
def test_generator_helpers_and_the_hybrid_residual_contract(qtype):
    from hartkit.ar_models.model import TokenSpec

    tok = tiny_tokenizer("hybrid", qtype).eval()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    tokens = tok.encode(x)
    f = tok.encode_latent(x)
    torch.testing.assert_close(tok.tokens_to_latent(tokens), f, atol=1e-5, rtol=0)  # discrete + residual = f
    # the generators rebuild f_hat scale by scale with add_scale, and teacher forcing from the same sums
    f_hat, inputs = tok.empty_f_hat(2), []
    for k, idx in enumerate(tokens.indices):
        f_hat = tok.add_scale(f_hat, k, idx)
        if k < len(tokens.indices) - 1:
            inputs.append(tok.next_scale_input(f_hat, k))
    torch.testing.assert_close(f_hat, tok.tokens_to_latent(tokens, use_residual=False), atol=1e-6, rtol=0)
    torch.testing.assert_close(tok.teacher_forcing_input(tokens), torch.cat(inputs, 1), atol=0, rtol=0)
    # HART's residual target: the latent before the last scale minus the code's embedding (any code works)
    code = tok.code_embedding(tokens.indices[-1]).view(2, 8, 8, 4).permute(0, 3, 1, 2)
    torch.testing.assert_close(tokens.rest_before_last - code, tokens.residual, atol=1e-5, rtol=0)
    spec = TokenSpec.from_tokenizer(tok)
    assert spec.vocab_size == tok.vocab_size and spec.codebook.shape == (tok.vocab_size, 4)
    assert not spec.last_scale_phi


@pytest.mark.parametrize("qtype", PLUGINS)
@pytest.mark.parametrize("kind", ["discrete", "hybrid"])
def test_tiny_tokenizer_trains_and_reports_usage_and_bits(tmp_path, qtype, kind):
    from hartkit.stages.recon_eval import evaluate_reconstruction
    from hartkit.tokenizers.trainer import train_tokenizer

    images = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    data = [{"image": img, "index": i} for i, img in enumerate(images)]
    model = tiny_tokenizer(kind, qtype)
    cfg = tokenizer_config({
        "name": kind, "kind": kind, "quantizer": {"type": qtype, "patch_nums": [1, 2, 4, 8]},
        "train": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 4, "log_every": 2,
                  "grid_images": 2, "lr": 1e-3},
    })
    before = [p.detach().clone() for p in model.quantize.parameters()]
    result = train_tokenizer(model, data, cfg, tmp_path, torch.device("cpu"), seed=0)
    assert result.finished and math.isfinite(result.summary["final_loss"])
    assert 0 < result.summary["final_usage"] <= 1
    assert any(not torch.equal(a, b) for a, b in zip(before, result.model.quantize.parameters()))
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    loader = [{"image": images[i:i + 6]} for i in (0, 6)]
    metrics, _ = evaluate_reconstruction(result.model, loader, OmegaConf.create({"fd_features": []}),
                                         torch.device("cpu"))
    V = result.model.vocab_size
    assert metrics["bits_per_image"] == pytest.approx((1 + 4 + 16 + 64) * math.log2(V))
    assert 0 < metrics["codebook_usage"] <= 1 and 1 <= metrics["perplexity"] <= V
    assert math.isfinite(metrics["psnr"])


# ------------------------------------------------------------------ a quantizer of one's own (the README's)
@pytest.fixture
def my_quantizer():
    from dataclasses import dataclass

    from hartkit.tokenizers.quantizers import QUANTIZERS, register_quantizer
    from hartkit.tokenizers.quantizers.base import ImplicitScaleQuantizer, parse_options

    @dataclass
    class MyConfig(QuantizerConfig):
        type: str = "myq"
        dead_code_reinit: bool = False
        bits: int = 8

    class MyQuantizer(ImplicitScaleQuantizer):
        config_class = MyConfig

        @classmethod
        def from_config(cls, cfg, channels, patch_nums, phi_on_last_scale):
            o = parse_options(MyConfig, cfg)
            q = cls(channels, patch_nums, code_dim=o.bits, vocab_size=2**o.bits,
                    **cls.walk_kwargs(o, phi_on_last_scale))
            q.register_buffer("w", 2 ** torch.arange(o.bits), persistent=False)
            return q

        def code(self, v):
            hard = torch.where(v > 0, 1.0, -1.0)
            return v + (hard - v).detach(), ((v > 0).long() * self.w).sum(-1)

        def codes_of(self, idx):
            return ((idx.unsqueeze(-1) // self.w) % 2).float() * 2 - 1

    register_quantizer("myq")(MyQuantizer)
    yield MyQuantizer
    QUANTIZERS.pop("myq")


def test_a_quantizer_of_ones_own_plugs_in_through_the_registry(my_quantizer):
    cfg = tokenizer_config({"name": "discrete", "kind": "hybrid", "quantizer": {"type": "myq", "bits": 5,
                                                                                "patch_nums": [1, 2, 4, 8]},
                            "autoencoder": {"ch": 8, "ch_mult": [1, 2], "z_channels": 4, "norm_groups": 4}})
    assert tokenizer_label(cfg) == "discrete-myq"
    torch.manual_seed(0)
    tok = build_tokenizer(cfg).eval()
    assert isinstance(tok.quantize, my_quantizer) and tok.vocab_size == 32
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    tokens = tok.encode(x)
    assert torch.equal(tok.quantize.indices_to_f_hat(tokens.indices, (8, 8)),
                       tok.tokens_to_latent(tokens, use_residual=False))
    tok.train()
    assert torch.isfinite(tok(x, use_residual=False).aux_loss)
    with pytest.raises(ValueError, match="must default to 'other'"):
        from hartkit.tokenizers.quantizers import register_quantizer

        register_quantizer("other")(my_quantizer)
