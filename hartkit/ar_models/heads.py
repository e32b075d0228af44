"""Output heads, chosen by the tokenizer's kind (docs/design.md, "The spine's value: Tokens").

| kind       | heads                                                                  |
|------------|------------------------------------------------------------------------|
| discrete   | categorical over the codebook on every token (VAR)                     |
| hybrid     | categorical on every token + residual diffusion on the final scale (HART) |
| continuous | diffusion on every token of every scale                                 |

The categorical head reads the hidden state after VAR's AdaLN-before-head.
The hybrid diffusion head is conditioned as HART conditions it
(mit-han-lab/hart, ``hart/modules/models/transformer/hart_transformer_t2i.py``,
``HARTForT2I.forward`` and ``autoregressive_infer_cfg``):
``decoder_norm(h + word_embed(embedding(code)))`` with ``h`` the last block's
output (before the head's AdaLN), ``word_embed`` the same ``Linear(Cvae -> C)``
that embeds the transformer's inputs, and ``decoder_norm`` an affine norm of
the backbone's kind. ``code`` is the token's last-scale code: sampled from the
model's own logits in training (HART) or the ground truth
(``ar.train.residual_codes=teacher``, a departure), sampled at inference. The
head learns the continuous residual that the code leaves.
"""

from __future__ import annotations

import torch
from torch import nn

from hartkit.ar_models.config import DiffusionHeadConfig
from hartkit.ar_models.diffusion import DiffusionHead
from hartkit.ar_models.layers import make_norm


def has_categorical(kind: str) -> bool:
    return kind in ("discrete", "hybrid")


def has_diffusion(kind: str) -> bool:
    return kind in ("hybrid", "continuous")


def build_diffusion_head(cfg: DiffusionHeadConfig, token_dim: int, cond_dim: int) -> DiffusionHead:
    return DiffusionHead(token_dim, cond_dim, width=cfg.width, depth=cfg.depth, num_train_steps=cfg.num_train_steps,
                         num_sample_steps=cfg.num_sample_steps, learn_sigma=cfg.learn_sigma,
                         latent_scale=cfg.latent_scale, batch_mul=cfg.batch_mul)


class ResidualCondition(nn.Module):
    """HART's diffusion condition: ``decoder_norm(h + word_embed(code embedding))``."""

    def __init__(self, norm_kind: str, dim: int):
        super().__init__()
        self.decoder_norm = make_norm(norm_kind, dim, affine=True)

    def forward(self, h_BnC: torch.Tensor, code_emb_BnCv: torch.Tensor, word_embed: nn.Module) -> torch.Tensor:
        return self.decoder_norm(h_BnC + word_embed(code_emb_BnCv.to(h_BnC.dtype)))
