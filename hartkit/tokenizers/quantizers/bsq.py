"""BSQ (Zhao, Xiong & Krähenbühl 2024, "Image and Video Tokenization with Binary Spherical Quantization")
on VAR's scale walk.

Each scale's projected vector is put on the unit sphere, ``v = u / ||u||``, and
quantized to the nearest corner of the hypercube inscribed in it,
``code = sign(v) / sqrt(d)`` (zero counts as negative; straight-through in
training), d = log2(vocab_size); the index is the binary number of the signs,
first dimension most significant (as LFQ here).

Entropy terms (BSQ section 3.3): the soft assignment
``p(c|v) = softmax_c(-||v - c||^2 / T) = prod_i sigmoid(4 v_i c_i / T)`` (c_i = +-1/sqrt(d))
factorises over dimensions, so the per-sample entropy is exact and cheap,
``sum_i H_b(sigmoid(4 v_i / (T sqrt(d))))``; the batch (codebook) entropy
``H(E_v[p(.|v)])`` does not factorise and BSQ approximates it by splitting
the d bits into groups of ``group_size`` and summing the groups' exact
entropies over their 2^group_size sub-codes (BSQ-ViT: groups of 9 bits; 0 here
means one group, the exact entropy). Loss: ``entropy_weight *
(sample_entropy_weight * H_sample - batch_entropy_weight * H_batch) +
commit_weight * mse(v, sg[code])``, averaged over the scales (BSQ-ViT sums the
commitment over dimensions and divides the entropy penalty by its inverse
temperature; here the weights absorb both). ``tests/test_tokenizer_quantizers_plugin.py``
checks codes and indices against vector-quantize-pytorch's ``LFQ(spherical=True)``
and the entropies against the equations above evaluated by enumeration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hartkit.errors import ConfigError
from hartkit.tokenizers.quantizers import register_quantizer
from hartkit.tokenizers.quantizers.base import (
    EntropyQuantizerConfig,
    batch_entropy_from_log_probs,
    parse_options,
    power_of_two_bits,
)
from hartkit.tokenizers.quantizers.lfq import SignQuantizer, bit_weights, bits_of


@dataclass
class BSQConfig(EntropyQuantizerConfig):
    type: str = "bsq"
    vocab_size: int = 1024  # 2^bits
    group_size: int = 0  # bits per group of the factorised batch entropy; 0: all bits in one group (exact)


def binary_entropy_of_logit(a: torch.Tensor) -> torch.Tensor:
    """H_b(sigmoid(a)) in nats, stable for any a."""
    p = torch.sigmoid(a)
    return -(p * F.logsigmoid(a) + (1 - p) * F.logsigmoid(-a))


@register_quantizer("bsq")
class BSQ(SignQuantizer):
    config_class = BSQConfig
    type_name = "bsq"
    unit_sphere = True

    def __init__(self, channels: int, patch_nums, vocab_size: int = 1024, group_size: int = 0, **kwargs):
        bits = power_of_two_bits(vocab_size, "bsq")
        group = bits if group_size in (0, None) else int(group_size)
        if group < 1 or bits % group:
            raise ConfigError(f"tokenizer.quantizer.group_size={group_size} must divide the {bits} bits of "
                              f"vocab_size={vocab_size} (0: one group, the exact batch entropy)")
        super().__init__(channels, patch_nums, vocab_size=vocab_size, **kwargs)
        self.group_size = group
        # the 2^g sub-codes of one group, entries +-1/sqrt(d) (the group's coordinates of full codes)
        sub = bits_of(torch.arange(2**group), bit_weights(group)) * 2 - 1
        self.register_buffer("_group_codes", sub / math.sqrt(bits), persistent=False)

    @classmethod
    def from_config(cls, cfg, channels: int, patch_nums, phi_on_last_scale: bool) -> BSQ:
        o = parse_options(BSQConfig, cfg)
        return cls(channels, patch_nums, vocab_size=o.vocab_size, group_size=o.group_size,
                   **cls.entropy_kwargs(o), **cls.walk_kwargs(o, phi_on_last_scale))

    def code_input(self, u_Nd: torch.Tensor) -> torch.Tensor:
        return F.normalize(u_Nd, dim=-1)

    def entropies(self, v_Nd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean per-sample entropy: exact, per dimension; batch entropy: summed over groups of bits)."""
        d, T = self.code_dim, self.entropy_temperature
        h_sample = binary_entropy_of_logit(4 * v_Nd / (T * math.sqrt(d))).sum(-1).mean()
        groups = v_Nd.view(v_Nd.shape[0], d // self.group_size, self.group_size)  # (N, G, g)
        log_p = F.log_softmax(2 * groups @ self._group_codes.t() / T, dim=-1)  # (N, G, 2^g)
        h_batch = sum(batch_entropy_from_log_probs(log_p[:, j]) for j in range(log_p.shape[1]))
        return h_sample, h_batch
