"""FSQ (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple") on VAR's scale walk.

Each of the d = len(levels) dimensions is bounded and rounded to one of L_i
values: ``b = tanh(u + s) * (L - 1)(1 + eps) / 2 - o`` (o = 1/2 for even L,
else 0; s = atanh(o / ((L - 1)(1 + eps) / 2)) centres the even grids),
``code = round(b) / floor(L / 2)`` with a straight-through gradient through the
rounding. The implicit codebook is the product grid: ``vocab_size =
prod(levels)``, index = the mixed-radix number of the per-dimension levels
(first dimension least significant), as in the paper's appendix code and in
vector-quantize-pytorch (``tests/test_tokenizer_quantizers_plugin.py`` checks
codes and indices against it). No auxiliary loss: FSQ needs none.

Levels recommended by the paper (section 4.1): 2^8 [8, 6, 5], 2^10
[8, 5, 5, 5] (1000 codes), 2^12 [7, 5, 5, 5, 5], 2^14 [8, 8, 8, 6, 5],
2^16 [8, 8, 8, 5, 5, 5].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from hartkit.errors import ConfigError
from hartkit.tokenizers.config import QuantizerConfig
from hartkit.tokenizers.quantizers import register_quantizer
from hartkit.tokenizers.quantizers.base import ImplicitScaleQuantizer, parse_options


@dataclass
class FSQConfig(QuantizerConfig):
    type: str = "fsq"
    levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])
    vocab_size: int = 0  # prod(levels); 0 derives it, any other value must equal it
    dead_code_reinit: bool = False
    bound_eps: float = 1e-3  # the paper's (1 + eps) margin that keeps round(b) inside the L levels


@register_quantizer("fsq")
class FSQ(ImplicitScaleQuantizer):
    config_class = FSQConfig
    type_name = "fsq"

    def __init__(self, channels: int, patch_nums, levels, bound_eps: float = 1e-3, **walk):
        levels = [int(L) for L in levels]
        if not levels or min(levels) < 2:
            raise ConfigError(f"tokenizer.quantizer.levels={levels} needs at least one dimension and every "
                              f"level >= 2 (the paper's 2^10 choice: [8, 5, 5, 5])")
        super().__init__(channels, patch_nums, code_dim=len(levels), vocab_size=math.prod(levels), **walk)
        self.levels = levels
        L = torch.tensor(levels, dtype=torch.int32)
        # float32 constants computed as the paper's code computes them (so codes agree bit for bit)
        half_l = (L - 1) * (1 + bound_eps) / 2
        offset = torch.where(L % 2 == 0, 0.5, 0.0)
        self.register_buffer("_half_l", half_l, persistent=False)
        self.register_buffer("_offset", offset, persistent=False)
        self.register_buffer("_shift", torch.atanh(offset / half_l), persistent=False)
        self.register_buffer("_half_width", (L // 2).float(), persistent=False)
        self.register_buffer("_levels", L.long(), persistent=False)
        self.register_buffer("_basis", torch.cumprod(torch.tensor([1] + levels[:-1]), 0).long(), persistent=False)

    @classmethod
    def from_config(cls, cfg, channels: int, patch_nums, phi_on_last_scale: bool) -> FSQ:
        opts = parse_options(FSQConfig, cfg)
        if opts.vocab_size and opts.vocab_size != math.prod(opts.levels):
            raise ConfigError(f"tokenizer.quantizer.vocab_size={opts.vocab_size} does not match levels={list(opts.levels)} "
                              f"(prod = {math.prod(opts.levels)}); set vocab_size=0 to derive it")
        return cls(channels, patch_nums, levels=opts.levels, bound_eps=opts.bound_eps,
                   **cls.walk_kwargs(opts, phi_on_last_scale))

    def bound(self, u: torch.Tensor) -> torch.Tensor:
        return torch.tanh(u + self._shift) * self._half_l - self._offset

    def code(self, v_Nd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.bound(v_Nd)
        rounded = b.round()
        codes = (b + (rounded - b).detach()) / self._half_width
        idx = ((rounded.detach() + self._half_width).long() * self._basis).sum(-1)
        return codes, idx

    def codes_of(self, idx: torch.Tensor) -> torch.Tensor:
        level = (idx.unsqueeze(-1) // self._basis) % self._levels
        return (level.float() - self._half_width) / self._half_width
