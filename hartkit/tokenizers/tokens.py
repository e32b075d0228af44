"""The one token interface every tokenizer speaks and every AR model consumes.

A latent ``f`` (B x C x h x w) is walked through scales ``pn_1 < ... < pn_K = h``
(docs/reference.md, section 1). Per kind (docs/design.md, "The spine's value: Tokens"):

| kind       | each scale k                        | after the last scale          |
|------------|-------------------------------------|-------------------------------|
| discrete   | codebook indices (B, pn_k**2)       | remainder dropped             |
| hybrid     | codebook indices (B, pn_k**2)       | continuous residual (B,C,h,w) |
| continuous | continuous map (B, C, pn_k, pn_k)   | nothing left                  |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

KINDS = ("discrete", "continuous", "hybrid")


@dataclass
class Tokens:
    kind: str
    patch_nums: tuple[int, ...]
    indices: Optional[list[torch.Tensor]] = None  # per scale: LongTensor (B, pn*pn), row-major
    scales: Optional[list[torch.Tensor]] = None  # per scale: continuous maps (B, C, pn, pn) (continuous kind)
    residual: Optional[torch.Tensor] = None  # hybrid: f - f_hat_discrete, (B, C, h, w)
    # hybrid, from encode: the latent before the last scale's code is subtracted (HART's f_rest_wo_last_discrete),
    # (B, C, h, w); the generator's residual target is this minus the (sampled) last-scale code's contribution
    rest_before_last: Optional[torch.Tensor] = None
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Tokens.kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def batch_size(self) -> int:
        seq = self.indices if self.indices is not None else self.scales
        assert seq is not None
        return seq[0].shape[0]

    @property
    def num_tokens(self) -> int:
        """Tokens per image over all scales (the AR sequence length L)."""
        return sum(pn * pn for pn in self.patch_nums)

    def flat_indices(self) -> torch.Tensor:
        """(B, L) indices, scales concatenated small to large."""
        assert self.indices is not None, f"{self.kind} tokens carry no indices"
        return torch.cat(self.indices, dim=1)

    def to(self, device) -> Tokens:
        mv = lambda xs: None if xs is None else [x.to(device) for x in xs]
        return Tokens(
            kind=self.kind,
            patch_nums=self.patch_nums,
            indices=mv(self.indices),
            scales=mv(self.scales),
            residual=None if self.residual is None else self.residual.to(device),
            rest_before_last=None if self.rest_before_last is None else self.rest_before_last.to(device),
            extras=dict(self.extras),
        )
