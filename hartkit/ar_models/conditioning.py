"""What the generator is conditioned on: a class label or a prompt.

Both produce a ``Condition``: a vector ``cond_BC`` that drives every AdaLN
modulation and the start token, and (text only) prefix tokens ``prefix_BTC``
that the image tokens attend to (HART: the projected text is "stage 0" of the
sequence, its max-pool is the AdaLN vector).

The null condition for classifier-free guidance is an extra class id
(``num_classes``) or the empty prompt. Condition dropout replaces each
sample's condition independently with probability ``p`` (HART's released
training code draws a normal instead of a uniform number and so drops about
54% at p = 0.1; docs/reference.md, section 4).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Union

import torch
from torch import nn

from hartkit.ar_models.config import TextEncoderConfig
from hartkit.ar_models.text_encoders import build_text_encoder
from hartkit.errors import ConfigError

log = logging.getLogger(__name__)

CondInput = Union[torch.Tensor, list[str]]  # class ids (B,) or prompts


@dataclass
class Condition:
    cond_BC: torch.Tensor
    prefix_BTC: torch.Tensor | None = None

    @property
    def prefix_len(self) -> int:
        return 0 if self.prefix_BTC is None else self.prefix_BTC.shape[1]


def dropout_mask(n: int, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Bool (n,): True where a sample's condition is replaced by the null condition (independent Bernoulli(p))."""
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"ar.train.cond_drop_p must be in [0, 1], got {p}")
    return torch.rand(n, generator=generator) < p


class ClassConditioner(nn.Module):
    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.class_emb = nn.Embedding(num_classes + 1, dim)  # last row: the null class
        nn.init.trunc_normal_(self.class_emb.weight, std=(1 / dim / 3) ** 0.5)

    def null_inputs(self, n: int) -> torch.Tensor:
        return torch.full((n,), self.num_classes, dtype=torch.long)

    def apply_dropout(self, labels: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        return torch.where(drop.to(labels.device), torch.full_like(labels, self.num_classes), labels)

    def concat(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, b.to(a.device)])

    def forward(self, labels: torch.Tensor) -> Condition:
        labels = torch.as_tensor(labels)
        if labels.device.type != "meta" and labels.numel() and (labels.min() < 0 or labels.max() > self.num_classes):
            raise ValueError(f"class ids must be in [0, {self.num_classes}] (the last one is the null class)")
        return Condition(self.class_emb(labels.to(self.class_emb.weight.device)))


class _Frozen:
    """Holds a frozen encoder outside the module tree (not trained, not checkpointed, moved on first use)."""

    def __init__(self, module: nn.Module):
        self.module = module


class TextConditioner(nn.Module):
    def __init__(self, cfg: TextEncoderConfig, dim: int, text_dim: int | None = None, encoder: nn.Module | None = None):
        """``text_dim`` skips building the encoder (meta-device sizing of frozen encoders); ``encoder`` injects one."""
        super().__init__()
        self.frozen: _Frozen | None = None
        self.encoder: nn.Module | None = None
        if encoder is None and text_dim is None:
            encoder = build_text_encoder(cfg)
        if encoder is not None:
            text_dim = encoder.out_dim
            if cfg.name in ("clip", "hf") and cfg.width != text_dim:
                log.warning("ar.text_encoder.width=%d but the loaded %s encoder outputs %d features; using %d "
                            "(set the width in conf/ar/text_encoder/%s.yaml so meta-device sizing matches)",
                            cfg.width, cfg.name, text_dim, text_dim, cfg.name)
            if getattr(encoder, "trainable", True):
                self.encoder = encoder
            else:
                self.frozen = _Frozen(encoder)
        elif cfg.name == "learned":  # the learned encoder belongs to the model even when only sizing it
            self.encoder = build_text_encoder(cfg)
            text_dim = self.encoder.out_dim
        assert text_dim is not None
        self.text_norm = nn.LayerNorm(text_dim)
        self.text_proj = nn.Linear(text_dim, dim)

    def null_inputs(self, n: int) -> list[str]:
        return [""] * n

    def apply_dropout(self, prompts: list[str], drop: torch.Tensor) -> list[str]:
        return ["" if d else p for p, d in zip(prompts, drop.tolist())]

    def concat(self, a: list[str], b: list[str]) -> list[str]:
        return list(a) + list(b)

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.encoder is not None:
            return self.encoder(prompts)
        if self.frozen is None:
            raise RuntimeError("this text conditioner was built for sizing only (no encoder)")
        device = self.text_proj.weight.device
        enc = self.frozen.module
        if next(enc.parameters()).device != device:
            enc.to(device)
        with torch.no_grad():
            return enc(prompts)

    def forward(self, prompts: list[str]) -> Condition:
        if isinstance(prompts, str):
            raise TypeError("pass a list of prompts, not one string")
        tokens_BTD, valid_BT = self.encode(prompts)
        prefix = self.text_proj(self.text_norm(tokens_BTD.to(self.text_proj.weight.dtype)))
        pooled = prefix.masked_fill(~valid_BT.to(prefix.device)[..., None], float("-inf")).amax(dim=1)
        return Condition(pooled, prefix)


def build_conditioner(condition: str, num_classes: int, text_cfg: TextEncoderConfig, dim: int,
                      text_dim: int | None = None, text_encoder: nn.Module | None = None) -> nn.Module:
    if condition == "class":
        return ClassConditioner(num_classes, dim)
    if condition == "text":
        return TextConditioner(text_cfg, dim, text_dim=text_dim, encoder=text_encoder)
    raise ConfigError(f"ar.condition={condition!r} is unknown; choose text or class")
