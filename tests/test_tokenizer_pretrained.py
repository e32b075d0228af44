"""VAR / HART checkpoint loaders: key layout, a reference forward pass, mismatches, safety, writing back.

The state dicts are built here, at a small width, from VAR's key layout rules
(docs/reference.md, section 1), independently of hartkit's modules; the reference
forward pass below is a plain functional re-statement of VAR's tokenizer.
"""

import pickle

import pytest
import torch
import torch.nn.functional as F

from hartkit.tokenizers import CheckpointMismatchError
from hartkit.tokenizers.pretrained import (
    load_pretrained_tokenizer,
    read_state_dict,
    save_in_layout,
    to_layout,
)

CH, CH_MULT, ENC_BLOCKS, DEC_BLOCKS, CVAE, V = 32, (1, 1, 2), 2, 3, 8, 64
PATCH_NUMS = (1, 2, 3, 4)  # latent 4x4 at 16 px (4x); Phi map [0, 1, 2, 3] (no ties)
PHI_OF_SCALE = [0, 1, 2, 3]


def var_layout() -> dict[str, tuple[int, ...]]:
    """Key -> shape of a VAR tokenizer checkpoint, from VAR's architecture rules."""
    out: dict[str, tuple[int, ...]] = {}

    def conv(name, cin, cout, k):
        out[f"{name}.weight"], out[f"{name}.bias"] = (cout, cin, k, k), (cout,)

    def norm(name, c):
        out[f"{name}.weight"], out[f"{name}.bias"] = (c,), (c,)

    def block(name, cin, cout):
        norm(f"{name}.norm1", cin), conv(f"{name}.conv1", cin, cout, 3)
        norm(f"{name}.norm2", cout), conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    def attn(name, c):
        norm(f"{name}.norm", c), conv(f"{name}.qkv", c, 3 * c, 1), conv(f"{name}.proj_out", c, c, 1)

    last = len(CH_MULT) - 1
    conv("encoder.conv_in", 3, CH, 3)
    c = CH
    for i, m in enumerate(CH_MULT):
        for j in range(ENC_BLOCKS):
            block(f"encoder.down.{i}.block.{j}", c, CH * m)
            c = CH * m
            if i == last:
                attn(f"encoder.down.{i}.attn.{j}", c)
        if i != last:
            conv(f"encoder.down.{i}.downsample.conv", c, c, 3)
    block("encoder.mid.block_1", c, c), attn("encoder.mid.attn_1", c), block("encoder.mid.block_2", c, c)
    norm("encoder.norm_out", c), conv("encoder.conv_out", c, CVAE, 3)
    c = CH * CH_MULT[-1]
    conv("decoder.conv_in", CVAE, c, 3)
    block("decoder.mid.block_1", c, c), attn("decoder.mid.attn_1", c), block("decoder.mid.block_2", c, c)
    for i in reversed(range(len(CH_MULT))):
        for j in range(DEC_BLOCKS):
            block(f"decoder.up.{i}.block.{j}", c, CH * CH_MULT[i])
            c = CH * CH_MULT[i]
            if i == last:
                attn(f"decoder.up.{i}.attn.{j}", c)
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", c, c, 3)
    norm("decoder.norm_out", c), conv("decoder.conv_out", c, 3, 3)
    conv("quant_conv", CVAE, CVAE, 3), conv("post_quant_conv", CVAE, CVAE, 3)
    out["quantize.embedding.weight"] = (V, CVAE)
    for i in range(4):
        conv(f"quantize.quant_resi.qresi_ls.{i}", CVAE, CVAE, 3)
    out["quantize.ema_vocab_hit_SV"] = (len(PATCH_NUMS), V)
    return out


def random_var_state(seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in var_layout().items():
        if key.endswith("norm1.weight") or key.endswith("norm2.weight") or ".norm" in key and key.endswith(".weight"):
            state[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif key == "quantize.embedding.weight":
            state[key] = torch.randn(shape, generator=g)
        elif key == "quantize.ema_vocab_hit_SV":
            state[key] = torch.rand(shape, generator=g)
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 16
            state[key] = torch.randn(shape, generator=g) / fan_in**0.5
    return state


# ---- functional reference of VAR's tokenizer ---------------------------------------------------
def _gn(x, s, p):
    return F.group_norm(x, 32, s[f"{p}.weight"], s[f"{p}.bias"], eps=1e-6)


def _conv(x, s, p, stride=1, padding=1):
    return F.conv2d(x, s[f"{p}.weight"], s[f"{p}.bias"], stride=stride, padding=padding)


def _block(x, s, p):
    h = _conv(F.silu(_gn(x, s, f"{p}.norm1")), s, f"{p}.conv1")
    h = _conv(F.silu(_gn(h, s, f"{p}.norm2")), s, f"{p}.conv2")
    short = _conv(x, s, f"{p}.nin_shortcut", padding=0) if f"{p}.nin_shortcut.weight" in s else x
    return short + h


def _attn(x, s, p):
    B, C, H, W = x.shape
    q, k, v = _conv(_gn(x, s, f"{p}.norm"), s, f"{p}.qkv", padding=0).reshape(B, 3, C, H * W).unbind(1)
    w = torch.softmax(torch.bmm(q.transpose(1, 2), k) * C**-0.5, dim=2)  # (B, HWq, HWk)
    h = torch.bmm(v, w.transpose(1, 2)).reshape(B, C, H, W)
    return x + _conv(h, s, f"{p}.proj_out", padding=0)


def _levels(s, prefix, part):
    return sorted({int(k.split(".")[2]) for k in s if k.startswith(f"{prefix}.{part}.")})


def _blocks(s, p):
    return sorted({int(k.split(".")[4]) for k in s if k.startswith(f"{p}.block.")})


def ref_encode_f(x, s):
    h = _conv(x, s, "encoder.conv_in")
    for i in _levels(s, "encoder", "down"):
        p = f"encoder.down.{i}"
        for j in _blocks(s, p):
            h = _block(h, s, f"{p}.block.{j}")
            if f"{p}.attn.{j}.qkv.weight" in s:
                h = _attn(h, s, f"{p}.attn.{j}")
        if f"{p}.downsample.conv.weight" in s:
            h = _conv(F.pad(h, (0, 1, 0, 1)), s, f"{p}.downsample.conv", stride=2, padding=0)
    h = _block(_attn(_block(h, s, "encoder.mid.block_1"), s, "encoder.mid.attn_1"), s, "encoder.mid.block_2")
    h = _conv(F.silu(_gn(h, s, "encoder.norm_out")), s, "encoder.conv_out")
    return _conv(h, s, "quant_conv")


def ref_decode(f_hat, s):
    h = _conv(_conv(f_hat, s, "post_quant_conv"), s, "decoder.conv_in")
    h = _block(_attn(_block(h, s, "decoder.mid.block_1"), s, "decoder.mid.attn_1"), s, "decoder.mid.block_2")
    for i in reversed(_levels(s, "decoder", "up")):
        p = f"decoder.up.{i}"
        for j in _blocks(s, p):
            h = _block(h, s, f"{p}.block.{j}")
            if f"{p}.attn.{j}.qkv.weight" in s:
                h = _attn(h, s, f"{p}.attn.{j}")
        if f"{p}.upsample.conv.weight" in s:
            h = _conv(F.interpolate(h, scale_factor=2, mode="nearest"), s, f"{p}.upsample.conv")
    return _conv(F.silu(_gn(h, s, "decoder.norm_out")), s, "decoder.conv_out").clamp(-1, 1)


def _phi(h, s, k):
    i = PHI_OF_SCALE[k]
    return 0.5 * h + 0.5 * _conv(h, s, f"quantize.quant_resi.qresi_ls.{i}")


def ref_quantize(f, s, phi_last=True):
    E = s["quantize.embedding.weight"]
    B, C, H, W = f.shape
    rest, f_hat, idxs = f.clone(), torch.zeros_like(f), []
    for k, pn in enumerate(PATCH_NUMS):
        last = k == len(PATCH_NUMS) - 1
        z = rest if last else F.interpolate(rest, size=(pn, pn), mode="area")
        z = z.permute(0, 2, 3, 1).reshape(-1, C)
        idx = torch.cdist(z, E).argmin(1)  # plain Euclidean distance
        h = E[idx].view(B, pn, pn, C).permute(0, 3, 1, 2)
        if not last:
            h = F.interpolate(h, size=(H, W), mode="bicubic")
        if not last or phi_last:
            h = _phi(h, s, k)
        f_hat, rest = f_hat + h, rest - h
        idxs.append(idx.view(B, -1))
    return idxs, f_hat


# ---- tests --------------------------------------------------------------------------------------
def tok_cfg(kind, fmt, path, phi_last=True):
    return {
        "name": fmt, "kind": kind, "checkpoint": str(path), "checkpoint_format": fmt,
        "autoencoder": {"ch": CH, "ch_mult": list(CH_MULT), "num_res_blocks": ENC_BLOCKS, "dec_res_blocks": DEC_BLOCKS,
                        "attn_levels": [-1], "mid_attn": True, "z_channels": CVAE, "norm_groups": 32},
        "quantizer": {"vocab_size": V, "patch_nums": list(PATCH_NUMS), "num_phi": 4, "phi_on_last_scale": phi_last},
    }


@pytest.fixture(scope="module")
def var_state():
    return random_var_state()


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(0)
    return torch.rand(2, 3, 16, 16) * 2 - 1


def test_model_keys_and_shapes_follow_var_layout(tmp_path, var_state):
    torch.save(var_state, tmp_path / "vae.pth")
    model = load_pretrained_tokenizer(tok_cfg("discrete", "var", tmp_path / "vae.pth"))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == var_layout()


def test_var_loader_reproduces_reference_forward(tmp_path, var_state, x):
    torch.save(var_state, tmp_path / "vae_ch160v4096z32.pth")
    model = load_pretrained_tokenizer(tok_cfg("discrete", "var", tmp_path / "vae_ch160v4096z32.pth"))
    with torch.no_grad():
        f_ref = ref_encode_f(x, var_state)
        torch.testing.assert_close(model.encode_latent(x), f_ref, atol=1e-4, rtol=1e-4)
        idx_ref, f_hat_ref = ref_quantize(f_ref, var_state)
        tokens = model.encode(x)
        for a, b in zip(tokens.indices, idx_ref):
            assert torch.equal(a, b)
        torch.testing.assert_close(model.decode(tokens), ref_decode(f_hat_ref, var_state), atol=1e-4, rtol=1e-4)


def test_hart_loader_strips_prefix_ignores_discriminator(tmp_path, var_state, x):
    hart = {f"vae.{k}": v for k, v in var_state.items()}
    hart["disc.net.0.weight"] = torch.randn(8, 3, 4, 4)
    from safetensors.torch import save_file

    save_file(hart, str(tmp_path / "hart_tokenizer.safetensors"))
    model = load_pretrained_tokenizer(tok_cfg("hybrid", "hart", tmp_path / "hart_tokenizer.safetensors", phi_last=False))
    with torch.no_grad():
        f_ref = ref_encode_f(x, var_state)
        idx_ref, f_hat_ref = ref_quantize(f_ref, var_state, phi_last=False)
        tokens = model.encode(x)
        for a, b in zip(tokens.indices, idx_ref):
            assert torch.equal(a, b)
        torch.testing.assert_close(model.decode(tokens, use_residual=False), ref_decode(f_hat_ref, var_state),
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(model.decode(tokens), ref_decode(f_ref, var_state), atol=1e-4, rtol=1e-4)


def test_save_back_in_layout_round_trips(tmp_path, var_state):
    torch.save(var_state, tmp_path / "vae.pth")
    model = load_pretrained_tokenizer(tok_cfg("discrete", "var", tmp_path / "vae.pth"))
    save_in_layout(model, tmp_path / "back.pth", "var")
    back = read_state_dict(tmp_path / "back.pth")
    assert set(back) == set(var_state) and all(torch.equal(back[k], var_state[k]) for k in var_state)
    hart = to_layout(model, "hart")
    assert set(hart) == {f"vae.{k}" for k in var_state}


def test_mismatched_checkpoint_lists_every_problem(tmp_path, var_state):
    bad = dict(var_state)
    del bad["encoder.conv_in.bias"]
    bad["encoder.extra.weight"] = torch.zeros(1)
    bad["quant_conv.weight"] = torch.zeros(CVAE, CVAE, 1, 1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatchError) as err:
        load_pretrained_tokenizer(tok_cfg("discrete", "var", tmp_path / "bad.pth"))
    msg = str(err.value)
    assert "encoder.conv_in.bias" in msg and "encoder.extra.weight" in msg and "quant_conv.weight" in msg
    assert "missing keys (1)" in msg and "unexpected keys (1)" in msg and "shape mismatches (1)" in msg


def test_missing_file_says_where_and_which_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.checkpoint"):
        load_pretrained_tokenizer(tok_cfg("discrete", "var", tmp_path / "nope.pth"))


class _Payload:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def test_pth_is_loaded_with_weights_only(tmp_path):
    with open(tmp_path / "evil.pth", "wb") as fh:
        pickle.dump({"x": _Payload()}, fh, protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        read_state_dict(tmp_path / "evil.pth")
