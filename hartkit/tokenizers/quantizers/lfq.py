"""LFQ (Yu et al. 2023, MAGVIT-v2, "Language Model Beats Diffusion") on VAR's scale walk.

Each of the d = log2(vocab_size) dimensions is quantized to its sign,
``code_i = +1 if u_i > 0 else -1`` (straight-through in training); the index is
the binary number of the signs, the first dimension the most significant bit
(vector-quantize-pytorch's and BSQ-ViT's order; MAGVIT-v2 writes the sum with
the first bit least significant, the same codes numbered differently).

MAGVIT-v2's entropy loss, with soft assignments over all 2^d codes
``p(c|u) = softmax_c(-||u - c||^2 / T)`` (``= softmax_c(2 u.c / T)``, every
code having the same norm):
``entropy_weight * (sample_entropy_weight * E_u[H(p(.|u))] - batch_entropy_weight
* H(E_u[p(.|u)]))``: confident assignments per vector, all codes used over the
batch. The batch entropy is exact (an N x 2^d matrix per scale), so keep d
small (the CPU default has 10 bits); BSQ's module shows the factorised form.
Plus ``commit_weight * mse(u, sg[code])``. All averaged over the scales of the
walk. ``tests/test_tokenizer_quantizers_plugin.py`` checks codes, indices and
the loss against vector-quantize-pytorch's ``LFQ``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hartkit.tokenizers.quantizers import register_quantizer
from hartkit.tokenizers.quantizers.base import (
    EntropyQuantizerConfig,
    ImplicitScaleQuantizer,
    batch_entropy_from_log_probs,
    parse_options,
    power_of_two_bits,
    sample_entropy_from_log_probs,
)


@dataclass
class LFQConfig(EntropyQuantizerConfig):
    type: str = "lfq"
    vocab_size: int = 1024  # 2^bits


def bit_weights(bits: int) -> torch.Tensor:
    """2^(d-1) ... 2^0: the first dimension is the most significant bit."""
    return 2 ** torch.arange(bits - 1, -1, -1)


def bits_of(idx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(...,) indices -> (..., d) bits in {0, 1} as floats."""
    return ((idx.unsqueeze(-1) // weights) % 2).float()


class SignQuantizer(ImplicitScaleQuantizer):
    """Codes are the signs of the d = log2(vocab_size) code dimensions (straight-through in training), indexed as
    a binary number, first dimension most significant; ``unit_sphere`` scales them to length 1 (BSQ). The loss
    is MAGVIT-v2's entropy form plus commitment; a subclass defines ``entropies(v) -> (sample, batch)``."""

    unit_sphere = False

    def __init__(self, channels: int, patch_nums, vocab_size: int = 1024, entropy_weight: float = 0.1,
                 sample_entropy_weight: float = 1.0, batch_entropy_weight: float = 1.0,
                 entropy_temperature: float = 0.01, commit_weight: float = 0.25, **walk):
        bits = power_of_two_bits(vocab_size, self.type_name)
        super().__init__(channels, patch_nums, code_dim=bits, vocab_size=vocab_size, **walk)
        self.entropy_weight = float(entropy_weight)
        self.sample_entropy_weight = float(sample_entropy_weight)
        self.batch_entropy_weight = float(batch_entropy_weight)
        self.entropy_temperature = float(entropy_temperature)
        self.commit_weight = float(commit_weight)
        self.register_buffer("_bit_weights", bit_weights(bits), persistent=False)

    def _length(self, signs: torch.Tensor) -> torch.Tensor:
        return F.normalize(signs, dim=-1) if self.unit_sphere else signs

    def code(self, v_Nd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        positive = v_Nd > 0
        hard = self._length(torch.where(positive, 1.0, -1.0).to(v_Nd.dtype))
        idx = (positive.long() * self._bit_weights).sum(-1)
        codes = v_Nd + (hard - v_Nd).detach() if self.training else hard
        return codes, idx

    def codes_of(self, idx: torch.Tensor) -> torch.Tensor:
        return self._length(bits_of(idx, self._bit_weights) * 2 - 1)

    def entropies(self, v_Nd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def code_loss(self, v_Nd: torch.Tensor, codes_Nd: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if not self.training:
            return v_Nd.new_zeros(()), {}
        h_sample, h_batch = self.entropies(v_Nd)
        commit = F.mse_loss(v_Nd, codes_Nd.detach())
        loss = self.entropy_weight * (self.sample_entropy_weight * h_sample - self.batch_entropy_weight * h_batch) \
            + self.commit_weight * commit
        return loss, {"entropy/sample": float(h_sample.detach()), "entropy/batch": float(h_batch.detach()),
                      "commit": float(commit.detach())}

    @staticmethod
    def entropy_kwargs(o: EntropyQuantizerConfig) -> dict[str, float]:
        return dict(entropy_weight=o.entropy_weight, sample_entropy_weight=o.sample_entropy_weight,
                    batch_entropy_weight=o.batch_entropy_weight, entropy_temperature=o.entropy_temperature,
                    commit_weight=o.commit_weight)


@register_quantizer("lfq")
class LFQ(SignQuantizer):
    config_class = LFQConfig
    type_name = "lfq"

    def __init__(self, channels: int, patch_nums, vocab_size: int = 1024, **kwargs):
        super().__init__(channels, patch_nums, vocab_size=vocab_size, **kwargs)
        # all 2^d codes (V, d), for the soft assignments of the entropy loss
        self.register_buffer("_all_codes", self.codes_of(torch.arange(vocab_size)), persistent=False)

    @classmethod
    def from_config(cls, cfg, channels: int, patch_nums, phi_on_last_scale: bool) -> LFQ:
        o = parse_options(LFQConfig, cfg)
        return cls(channels, patch_nums, vocab_size=o.vocab_size, **cls.entropy_kwargs(o),
                   **cls.walk_kwargs(o, phi_on_last_scale))

    def entropies(self, v_Nd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean per-sample entropy, batch entropy) of p(c|u) over all 2^d codes."""
        log_p = F.log_softmax(2 * v_Nd @ self._all_codes.t() / self.entropy_temperature, dim=-1)
        return sample_entropy_from_log_probs(log_p), batch_entropy_from_log_probs(log_p)
