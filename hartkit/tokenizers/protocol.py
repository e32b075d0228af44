"""What a scale-wise generator may ask of a tokenizer: the ``ScaleTokenizer`` protocol.

The generators in ``hartkit.ar_models`` are written against this protocol and
the ``Tokens`` value, never against a concrete tokenizer class, so a generator
trains and samples on the trained ``MultiScaleTokenizer`` (all three kinds, all
quantizer plug-ins), a converted VAR / HART checkpoint, or the weight-free
``hartkit.tokenizers.fake.FakeMultiScaleTokenizer`` alike
(docs/design.md, "The tokenizer protocol").

The members follow the next-scale decomposition of VAR (Tian et al. 2024,
Sec. 3.2 and Algorithm 1; docs/reference.md, section 1): a latent ``f`` of
``latent_channels`` x h x h is the sum of per-scale contributions, scale k
living on a ``patch_nums[k]`` square grid with ``patch_nums[-1] == h``.

- ``empty_f_hat(B)``: the zero latent the walk starts from;
- ``add_scale(f_hat, k, value)``: ``f_hat`` plus scale k's contribution, where
  ``value`` is that scale's codes (B, pn_k**2) or, for the continuous kind, its
  map (B, C, pn_k, pn_k); the tokenizer applies its own upsampling and Phi;
- ``next_scale_input(f_hat, k)``: the generator's input for scale k + 1, the
  cumulative ``f_hat`` area-resized to pn_{k+1} and flattened to
  (B, pn_{k+1}**2, C) (VAR's ``get_next_autoregressive_input``);
- ``code_embedding(idx)``: the codebook rows (..., C) of codes (discrete and
  hybrid); HART's residual target is ``rest_before_last - code_embedding(c)``
  for the code c the generator sampled (docs/reference.md, section 2);
- ``encode`` / ``decode`` / ``decode_latent``: images in [-1, 1] to ``Tokens``
  and back, and a latent straight to images;
- ``kind``, ``patch_nums``, ``vocab_size`` (0 for continuous),
  ``latent_channels`` and ``phi_on_last_scale`` (whether the last scale's codes
  pass through Phi: VAR yes, HART no) size the generator and choose its heads.

``teacher_forcing_input`` is written here once, from those members only.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from hartkit.tokenizers.tokens import KINDS, Tokens

__all__ = ["KINDS", "ScaleTokenizer", "Tokens", "teacher_forcing_input"]


@runtime_checkable
class ScaleTokenizer(Protocol):
    """A multi-scale tokenizer as the generators see it (structural: no base class to inherit)."""

    kind: str  # one of KINDS: "discrete", "continuous", "hybrid"
    patch_nums: tuple[int, ...]  # side of each scale's grid, increasing; the last is the latent's side
    vocab_size: int  # codebook size; 0 for the continuous kind
    latent_channels: int  # C of the latent f (VAR's Cvae)

    @property
    def phi_on_last_scale(self) -> bool:
        """Whether the last scale's contribution passes through Phi (VAR: true; HART's hybrid: false)."""
        ...

    def encode(self, img_B3HW: torch.Tensor) -> Tokens:
        """Images in [-1, 1] (B, 3, H, W) -> their tokens."""
        ...

    def decode(self, tokens: Tokens, use_residual: bool = True) -> torch.Tensor:
        """Tokens -> images in [-1, 1]; ``use_residual=False`` drops a hybrid's continuous residual."""
        ...

    def decode_latent(self, f_hat_BChw: torch.Tensor) -> torch.Tensor:
        """A latent (B, C, h, h) -> images in [-1, 1]."""
        ...

    def empty_f_hat(self, B: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Zeros (B, C, h, h) on ``device`` (None: the tokenizer's device)."""
        ...

    def add_scale(self, f_hat: torch.Tensor, k: int, value: torch.Tensor) -> torch.Tensor:
        """``f_hat`` plus scale k: codes (B, pn_k**2) or, continuous, a map (B, C, pn_k, pn_k)."""
        ...

    def next_scale_input(self, f_hat: torch.Tensor, k: int) -> torch.Tensor:
        """The input of scale k + 1 after scales 0..k: (B, pn_{k+1}**2, C)."""
        ...

    def code_embedding(self, idx: torch.Tensor) -> torch.Tensor:
        """Codebook rows of codes ``idx`` (...,) -> (..., C); only discrete and hybrid tokenizers have them."""
        ...

    def eval(self) -> Any:
        """Inference mode (``torch.nn.Module.eval``): no codebook statistics or dead-code resets while encoding."""
        ...


def teacher_forcing_input(tokenizer: ScaleTokenizer, tokens: Tokens) -> torch.Tensor:
    """The generator's inputs of scales 2..K from ground-truth tokens: (B, L - pn_1**2, C).

    Scale k + 1 sees the cumulative latent after the true scales 0..k, area-resized
    to its own grid (VAR's ``idxBl_to_var_input``): ``add_scale`` then
    ``next_scale_input`` for k = 0..K-2, concatenated small to large.
    """
    if tokens.kind != tokenizer.kind:
        raise ValueError(f"{tokens.kind} tokens cannot be teacher-forced through a {tokenizer.kind} tokenizer")
    values = tokens.scales if tokens.kind == "continuous" else tokens.indices
    if values is None:
        raise ValueError(f"these {tokens.kind} tokens carry no per-scale values")
    f_hat = tokenizer.empty_f_hat(tokens.batch_size, values[0].device)
    inputs = []
    for k in range(len(tokenizer.patch_nums) - 1):
        f_hat = tokenizer.add_scale(f_hat, k, values[k])
        inputs.append(tokenizer.next_scale_input(f_hat, k))
    return torch.cat(inputs, dim=1)
