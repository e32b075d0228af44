"""VAR / LDM-style convolutional encoder and decoder.

Module names follow VAR's tokenizer checkpoint (``vae_ch160v4096z32.pth``) so
its state dict loads without renaming: ``conv_in``, ``down.{i}.block.{j}``,
``down.{i}.attn.{j}``, ``down.{i}.downsample.conv``, ``mid.{block_1,attn_1,
block_2}``, ``norm_out``, ``conv_out`` and the decoder mirror with
``up.{i}.upsample.conv`` (docs/reference.md, section 1).

``patch_shortcut`` (off for VAR's layout, on in the small CPU preset) adds a
linear path around each network: the encoder adds ``patch_in``, a stride-f f x f
convolution of the image (a linear map of each f x f patch, as in a ViT's patch
embedding), to its output; the decoder adds ``patch_out``, the transposed map
from each latent cell back to its f x f patch. Together they are a learnable
linear patch autoencoder (its optimum is the PCA of f x f patches) that the deep
convolutional path refines. This is a residual path in the sense of DC-AE's
"residual autoencoding" (Chen et al. 2024, space-to-channel shortcuts around
the down- and up-sampling blocks): a shortcut whose information does not have
to be learned through every layer, so a small network trained for minutes
starts from the best linear code instead of from a blur. Measured in
``results/research_log.md``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from hartkit.errors import ConfigError


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with VAR's eps; small widths get the largest group count that divides them."""
    groups = math.gcd(channels, max_groups)
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, dropout: float = 0.0, norm_groups: int = 32):
        super().__init__()
        self.norm1 = group_norm(in_ch, norm_groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = group_norm(out_ch, norm_groups)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        # a 1x1 projection only where the width changes (VAR's key layout has it only there)
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions, with a fused 1x1 ``qkv`` conv (q, k, v in that order)."""

    def __init__(self, ch: int, norm_groups: int = 32):
        super().__init__()
        self.norm = group_norm(ch, norm_groups)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).transpose(2, 3).unbind(1)  # each (B, HW, C)
        h = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
        return x + self.proj_out(h.transpose(1, 2).reshape(B, C, H, W))


class Downsample(nn.Module):
    """Pad right/bottom by one, then a stride-2 3x3 conv (asymmetric padding as in VAR/LDM)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), value=0.0))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: res blocks, optional attention after each, optional resampling."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()


def _attn_level_set(attn_levels, num_levels: int) -> set[int]:
    out = set()
    for lvl in attn_levels:
        idx = lvl + num_levels if lvl < 0 else lvl
        if not 0 <= idx < num_levels:
            raise ConfigError(f"attention level {lvl} is out of range for {num_levels} levels (ch_mult has {num_levels} entries)")
        out.add(idx)
    return out


class Encoder(nn.Module):
    def __init__(self, ch: int, ch_mult, num_res_blocks: int, attn_levels=(), mid_attn: bool = True,
                 out_channels: int = 32, in_channels: int = 3, dropout: float = 0.0, norm_groups: int = 32,
                 patch_shortcut: bool = False):
        super().__init__()
        ch_mult = tuple(ch_mult)
        self.num_levels = len(ch_mult)
        attn_set = _attn_level_set(attn_levels, self.num_levels)
        factor = 2 ** (self.num_levels - 1)
        self.patch_in = nn.Conv2d(in_channels, out_channels, factor, stride=factor) if patch_shortcut else None
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        block_in = ch
        for i, mult in enumerate(ch_mult):
            level = Level()
            block_out = ch * mult
            for _ in range(num_res_blocks):
                level.block.append(ResnetBlock(block_in, block_out, dropout, norm_groups))
                block_in = block_out
                if i in attn_set:
                    level.attn.append(AttnBlock(block_in, norm_groups))
            if i != self.num_levels - 1:
                level.downsample = Downsample(block_in)
            self.down.append(level)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, dropout, norm_groups)
        self.mid.attn_1 = AttnBlock(block_in, norm_groups) if mid_attn else nn.Identity()
        self.mid.block_2 = ResnetBlock(block_in, block_in, dropout, norm_groups)
        self.norm_out = group_norm(block_in, norm_groups)
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        shortcut = self.patch_in(x) if self.patch_in is not None else None
        for level in self.down:
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out if shortcut is None else out + shortcut


class Decoder(nn.Module):
    def __init__(self, ch: int, ch_mult, num_res_blocks: int, attn_levels=(), mid_attn: bool = True,
                 in_channels: int = 32, out_channels: int = 3, dropout: float = 0.0, norm_groups: int = 32,
                 patch_shortcut: bool = False):
        super().__init__()
        ch_mult = tuple(ch_mult)
        self.num_levels = len(ch_mult)
        attn_set = _attn_level_set(attn_levels, self.num_levels)
        factor = 2 ** (self.num_levels - 1)
        self.patch_out = nn.ConvTranspose2d(in_channels, out_channels, factor, stride=factor) if patch_shortcut else None
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(in_channels, block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, dropout, norm_groups)
        self.mid.attn_1 = AttnBlock(block_in, norm_groups) if mid_attn else nn.Identity()
        self.mid.block_2 = ResnetBlock(block_in, block_in, dropout, norm_groups)
        levels: list[Level] = []
        for i in reversed(range(self.num_levels)):
            level = Level()
            block_out = ch * ch_mult[i]
            for _ in range(num_res_blocks):
                level.block.append(ResnetBlock(block_in, block_out, dropout, norm_groups))
                block_in = block_out
                if i in attn_set:
                    level.attn.append(AttnBlock(block_in, norm_groups))
            if i != 0:
                level.upsample = Upsample(block_in)
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)  # up[i] is level i; run from the deepest level up
        self.norm_out = group_norm(block_in, norm_groups)
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for level in reversed(self.up):
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out if self.patch_out is None else out + self.patch_out(z)
