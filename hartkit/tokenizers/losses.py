"""Tokenizer training losses: pixel L1/L2, optional LPIPS (local weights only), optional PatchGAN."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from hartkit.tokenizers.autoencoder import group_norm


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, l1_weight: float, l2_weight: float) -> torch.Tensor:
    recon, target = recon.float(), target.float()
    loss = recon.new_zeros(())
    if l1_weight:
        loss = loss + l1_weight * F.l1_loss(recon, target)
    if l2_weight:
        loss = loss + l2_weight * F.mse_loss(recon, target)
    return loss


class LPIPSUnavailableError(RuntimeError):
    pass


# torchvision VGG16 `features.{i}` layers -> torchmetrics' LPIPS VGG slices (relu1_2 .. relu5_3)
_VGG_SLICES = ((1, range(0, 4)), (2, range(4, 9)), (3, range(9, 16)), (4, range(16, 23)), (5, range(23, 30)))


def build_lpips(weights: str | os.PathLike | None) -> nn.Module:
    """torchmetrics' LPIPS (VGG) with the backbone read from a local torchvision VGG16 file.

    torchmetrics ships the LPIPS linear layers but downloads the VGG16 backbone
    on first use; here nothing is downloaded: ``weights`` must be a local copy
    of torchvision's ``vgg16-397923af.pth``.
    """
    if not weights:
        raise LPIPSUnavailableError(
            "tokenizer.train.lpips_weight > 0 needs local VGG16 weights: download torchvision's vgg16-397923af.pth "
            "on a machine with internet and pass tokenizer.train.lpips_weights=/path/to/vgg16-397923af.pth "
            "(or set tokenizer.train.lpips_weight=0)")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise LPIPSUnavailableError(f"tokenizer.train.lpips_weights={path} does not exist")
    from torchmetrics.functional.image.lpips import _LPIPS  # heavy (seconds): only when LPIPS is on

    model = _LPIPS(pretrained=True, net="vgg", pnet_rand=True)  # linear layers from torchmetrics, random backbone
    state = torch.load(path, map_location="cpu", weights_only=True)
    backbone = {}
    for slice_id, layers in _VGG_SLICES:
        for i in layers:
            for p in ("weight", "bias"):
                key = f"features.{i}.{p}"
                if key in state:
                    backbone[f"slice{slice_id}.{i}.{p}"] = state[key]
    missing, unexpected = model.net.load_state_dict(backbone, strict=False)
    if missing or unexpected:
        raise LPIPSUnavailableError(f"{path} is not a torchvision VGG16 state dict (missing {missing})")
    model.eval().requires_grad_(False)
    return model


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix-style): stride-2 4x4 convs, one logit per patch. GroupNorm instead of BatchNorm."""

    def __init__(self, ch: int = 32, num_layers: int = 2):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, ch, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        c = ch
        for i in range(1, num_layers + 1):
            c_next = ch * min(2**i, 8)
            stride = 2 if i < num_layers else 1
            layers += [nn.Conv2d(c, c_next, 4, stride=stride, padding=1), group_norm(c_next, 32), nn.LeakyReLU(0.2)]
            c = c_next
        layers.append(nn.Conv2d(c, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_gan_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                        max_weight: float = 1e4) -> torch.Tensor:
    """Balance the GAN gradient against the reconstruction gradient at the decoder's last layer (VQGAN)."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, max_weight).detach()
