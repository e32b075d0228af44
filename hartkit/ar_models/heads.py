"""Output heads, chosen by the tokenizer's kind (DESIGN.md, "The spine").

| kind       | heads                                                                  |
|------------|------------------------------------------------------------------------|
| discrete   | categorical over the codebook on every token (VAR)                     |
| hybrid     | categorical on every token + residual diffusion on the final scale (HART) |
| continuous | diffusion on every token of every scale                                 |

All heads read the hidden state after VAR's AdaLN-before-head. The hybrid
diffusion head is conditioned on that hidden state plus the (projected)
codebook embedding of the token's discrete code (teacher-forced in training,
sampled at inference), and learns the continuous residual that the discrete
code leaves.
"""

from __future__ import annotations

import torch
from torch import nn

from hartkit.ar_models.config import DiffusionHeadConfig
from hartkit.ar_models.diffusion import DiffusionHead


def has_categorical(kind: str) -> bool:
    return kind in ("discrete", "hybrid")


def has_diffusion(kind: str) -> bool:
    return kind in ("hybrid", "continuous")


def build_diffusion_head(cfg: DiffusionHeadConfig, token_dim: int, cond_dim: int) -> DiffusionHead:
    return DiffusionHead(token_dim, cond_dim, width=cfg.width, depth=cfg.depth, num_train_steps=cfg.num_train_steps,
                         num_sample_steps=cfg.num_sample_steps, learn_sigma=cfg.learn_sigma,
                         latent_scale=cfg.latent_scale, batch_mul=cfg.batch_mul)


class ResidualCondition(nn.Module):
    """HART: diffusion condition = hidden state + projection of the code's embedding."""

    def __init__(self, code_dim: int, dim: int):
        super().__init__()
        self.code_proj = nn.Linear(code_dim, dim)

    def forward(self, h_BnC: torch.Tensor, code_emb_BnCv: torch.Tensor) -> torch.Tensor:
        return h_BnC + self.code_proj(code_emb_BnCv.to(h_BnC.dtype))
