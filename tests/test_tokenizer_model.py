"""MultiScaleTokenizer: the token interface the AR models rely on, for all three kinds."""

import pytest
import torch
from omegaconf import OmegaConf

from hartkit.tokenizers import ImageSizeError, Tokens, build_tokenizer

TINY = {
    "autoencoder": {"ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "dec_res_blocks": 1, "attn_levels": [-1],
                    "mid_attn": True, "z_channels": 4, "norm_groups": 4},
    "quantizer": {"vocab_size": 32, "patch_nums": [1, 2, 3, 4, 8], "num_phi": 4},
}


def tiny(kind, **quantizer):
    torch.manual_seed(0)
    cfg = OmegaConf.create({"name": kind, "kind": kind, **TINY})
    cfg.quantizer.update(quantizer)
    model = build_tokenizer(cfg).eval()
    if kind != "continuous":
        model.quantize.embedding.weight.data.normal_(0, 0.5)  # spread codes so many get used
    return model


def images(B=2, size=16):
    torch.manual_seed(1)
    return torch.rand(B, 3, size, size) * 2 - 1


@pytest.mark.parametrize("kind", ["discrete", "continuous", "hybrid"])
@pytest.mark.parametrize("phi_last", [True, False])
def test_walk_teacher_forcing_and_decode_agree(kind, phi_last):
    model = tiny(kind, phi_on_last_scale=phi_last)
    x = images()
    with torch.no_grad():
        tokens = model.encode(x)
        values = tokens.scales if kind == "continuous" else tokens.indices
        f_hat = model.empty_f_hat(2)
        step_inputs = []
        for k in range(len(model.patch_nums)):
            f_hat = model.add_scale(f_hat, k, values[k])
            if k < len(model.patch_nums) - 1:
                step_inputs.append(model.next_scale_input(f_hat, k))
        tf = model.teacher_forcing_input(tokens)
        L = sum(p * p for p in model.patch_nums)
        assert tf.shape == (2, L - 1, model.latent_channels)
        torch.testing.assert_close(torch.cat(step_inputs, 1), tf, atol=1e-5, rtol=0)
        torch.testing.assert_close(f_hat, model.tokens_to_latent(tokens, use_residual=False), atol=1e-5, rtol=0)
        torch.testing.assert_close(model.decode_latent(f_hat), model.decode(tokens, use_residual=False),
                                   atol=1e-5, rtol=0)


def test_teacher_forcing_is_area_resized_cumulative_f_hat():
    model = tiny("discrete")
    with torch.no_grad():
        tokens = model.encode(images())
        tf = model.teacher_forcing_input(tokens)
        # scale 2's input: f_hat after scales 1 and 2, area-resized to 3x3
        partial = Tokens("discrete", model.patch_nums, indices=tokens.indices[:2])
        f_hat2 = model.quantize.indices_to_f_hat(partial.indices, (8, 8))
        expected = torch.nn.functional.adaptive_avg_pool2d(f_hat2, 3).flatten(2).transpose(1, 2)
        start = 4  # tf holds the 2x2 inputs (4 rows) first, then the 3x3 inputs
        torch.testing.assert_close(tf[:, start:start + 9], expected, atol=1e-6, rtol=0)


def test_encode_matches_training_forward_indices():
    model = tiny("discrete")
    x = images()
    with torch.no_grad():
        tokens = model.encode(x)
        model.train()
        walk = model.quantize(model.quant_conv(model.encoder(x)))
    for a, b in zip(tokens.indices, walk.indices):
        assert torch.equal(a, b)


def test_straight_through_gradients_reach_the_encoder():
    model = tiny("discrete").train()
    out = model(images())
    ((out.recon - images()).abs().mean()).backward()
    assert model.encoder.conv_in.weight.grad is not None
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    # the codebook learns through the VQ loss, not through the straight-through path
    assert model.quantize.embedding.weight.grad is None or model.quantize.embedding.weight.grad.abs().sum() == 0
    model.zero_grad()
    out = model(images())
    out.aux_loss.backward()
    assert model.quantize.embedding.weight.grad.abs().sum() > 0
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0  # commitment term


def test_hybrid_residual_reproduces_the_continuous_latent():
    model = tiny("hybrid")
    x = images()
    with torch.no_grad():
        tokens = model.encode(x)
        f = model.encode_latent(x)
        assert tokens.residual.shape == f.shape
        # (f - f_hat) + f_hat == f up to float32 rounding of the two additions
        torch.testing.assert_close(model.tokens_to_latent(tokens), f, atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(model.decode(tokens), model.decode_latent(f), atol=1e-5, rtol=1e-6)
        discrete_only = model.decode(tokens, use_residual=False)
    assert (discrete_only - model.decode(tokens)).abs().max() > 1e-3


def test_hybrid_training_uses_both_paths():
    model = tiny("hybrid").train()
    model.residual_drop_p = 0.5
    x = images(B=1, size=16)
    torch.manual_seed(0)
    with torch.no_grad():
        used = {model(x).used_residual for _ in range(12)}
    assert used == {True, False}
    assert model(images(), use_residual=True).used_residual is True


def test_continuous_tokens_and_kl():
    model = tiny("continuous")
    x = images()
    with torch.no_grad():
        tokens = model.encode(x)
        assert tokens.indices is None and len(tokens.scales) == len(model.patch_nums)
        torch.testing.assert_close(model.tokens_to_latent(tokens), model.encode_latent(x), atol=1e-6, rtol=0)
    assert model.vocab_size == 0
    with pytest.raises(ValueError):
        model.code_embedding(torch.zeros(1, dtype=torch.long))
    model.train()
    out = model(x)
    assert out.aux_loss > 0 and out.stats["kl"] > 0


def test_freeze_quantizer_path():
    model = tiny("hybrid")
    model.freeze_quantizer_path()
    model.train()
    assert not model.quantize.training and not model.encoder.training and model.decoder.training
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"post_quant_conv", "decoder"}


def test_image_size_errors_name_both_numbers():
    model = tiny("discrete")  # 2x downsampling, latent 8 -> 16 px
    with pytest.raises(ImageSizeError, match=r"15x15.*factor 2"):
        model.encode(torch.zeros(1, 3, 15, 15))
    with pytest.raises(ImageSizeError, match="data.resolution=16"):
        model.encode(torch.zeros(1, 3, 32, 32))


def test_var_preset_key_layout_on_meta_device():
    ae = OmegaConf.load("conf/tokenizer/autoencoder/var.yaml")
    q = OmegaConf.load("conf/tokenizer/quantizer/var.yaml")
    with torch.device("meta"):
        model = build_tokenizer({"kind": "discrete", "autoencoder": ae, "quantizer": q})
    sd = model.state_dict()
    assert len(sd) == 324
    assert 108.5e6 < model.num_parameters() < 109.5e6
    shapes = {
        "encoder.conv_in.weight": (160, 3, 3, 3),
        "encoder.down.4.attn.0.qkv.weight": (1920, 640, 1, 1),
        "encoder.conv_out.weight": (32, 640, 3, 3),
        "decoder.conv_in.weight": (640, 32, 3, 3),
        "decoder.conv_out.weight": (3, 160, 3, 3),
        "quantize.embedding.weight": (4096, 32),
        "quantize.ema_vocab_hit_SV": (10, 4096),
        "quant_conv.weight": (32, 32, 3, 3),
        "post_quant_conv.weight": (32, 32, 3, 3),
        "decoder.up.4.upsample.conv.weight": (640, 640, 3, 3),
        "encoder.down.2.block.0.nin_shortcut.weight": (320, 160, 1, 1),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    for i in range(4):
        assert tuple(sd[f"quantize.quant_resi.qresi_ls.{i}.weight"].shape) == (32, 32, 3, 3)
    assert "quantize.quant_resi.qresi_ls.4.weight" not in sd
    assert model.downsample == 16 and model.num_tokens == 680


def test_patch_shortcut_alone_can_carry_the_image_exactly():
    """With the deep paths silenced and the shortcut set to pixel (un)shuffle, the hybrid tokenizer's full decode
    (discrete + residual = the latent) gives back the image: the linear patch path is wired around both nets."""
    torch.manual_seed(0)
    ae = {**TINY["autoencoder"], "z_channels": 12, "patch_shortcut": True}  # 2x2 patches x 3 colours = 12
    model = build_tokenizer(OmegaConf.create({"kind": "hybrid", "autoencoder": ae, "quantizer": TINY["quantizer"]}))
    model.eval()
    unshuffle = torch.zeros(12, 3, 2, 2)  # output channel c*4 + i*2 + j reads colour c at (i, j), as pixel_unshuffle
    for c in range(3):
        for i in range(2):
            for j in range(2):
                unshuffle[c * 4 + i * 2 + j, c, i, j] = 1.0
    identity3x3 = torch.zeros(12, 12, 3, 3)
    identity3x3[range(12), range(12), 1, 1] = 1.0
    with torch.no_grad():
        for conv in (model.encoder.conv_out, model.decoder.conv_out):
            conv.weight.zero_()
            conv.bias.zero_()
        model.encoder.patch_in.weight.copy_(unshuffle)
        model.encoder.patch_in.bias.zero_()
        model.decoder.patch_out.weight.copy_(unshuffle)  # ConvTranspose2d weight is (in, out, k, k): the inverse map
        model.decoder.patch_out.bias.zero_()
        for conv in (model.quant_conv, model.post_quant_conv):
            conv.weight.copy_(identity3x3)
            conv.bias.zero_()
        x = images(B=2, size=16)
        assert torch.allclose(model.encode_latent(x), torch.nn.functional.pixel_unshuffle(x, 2), atol=1e-6)
        recon = model.decode(model.encode(x), use_residual=True)
    assert torch.allclose(recon, x, atol=1e-5)


def test_patch_shortcut_is_off_in_vars_layout_and_adds_two_layers():
    plain = tiny("discrete")
    cfg = OmegaConf.create({"kind": "discrete", **TINY})
    cfg.autoencoder.patch_shortcut = True
    with_shortcut = build_tokenizer(cfg)
    extra = set(with_shortcut.state_dict()) - set(plain.state_dict())
    assert extra == {"encoder.patch_in.weight", "encoder.patch_in.bias", "decoder.patch_out.weight",
                     "decoder.patch_out.bias"}
    assert tuple(with_shortcut.encoder.patch_in.weight.shape) == (4, 3, 2, 2)  # f = 2 for ch_mult [1, 2]
