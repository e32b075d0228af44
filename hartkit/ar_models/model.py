"""The scale-wise autoregressive generator: one backbone for all three token kinds.

Sequence layout (one image): [text prefix (T tokens, text only)] [start
token(s) of scale 1] [teacher-forcing inputs of scales 2..K]. The start token
is the condition vector plus a learned start position; the input of scale k+1
is ``Linear(Cvae -> C)`` of the area-resized cumulative latent after scale k
(supplied by the tokenizer). Every image token gets its scale's level
embedding and, with ``pos=absolute``, a learned position embedding; with
``pos=rope2d`` positions enter as rotary embeddings on q/k instead. The output
at the positions of scale k predicts scale k.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hartkit.ar_models.backbone import BlockStack
from hartkit.ar_models.conditioning import CondInput, Condition, build_conditioner
from hartkit.ar_models.config import ARConfig
from hartkit.ar_models.heads import ResidualCondition, build_diffusion_head, has_categorical, has_diffusion
from hartkit.ar_models.layers import NORMS, AdaLNBeforeHead
from hartkit.ar_models.positions import POSITION_SCHEMES, rope_tables, scale_grid_coords, text_coords
from hartkit.tokenizers.tokens import KINDS


@dataclass(frozen=True)
class TokenSpec:
    """What the generator needs to know about its tokenizer."""

    kind: str
    patch_nums: tuple[int, ...]
    vocab_size: int  # 0 for continuous
    latent_channels: int

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"tokenizer kind must be one of {KINDS}, got {self.kind!r}")
        if has_categorical(self.kind) and self.vocab_size <= 0:
            raise ValueError(f"a {self.kind} tokenizer needs vocab_size > 0")

    @classmethod
    def from_tokenizer(cls, tokenizer) -> TokenSpec:
        return cls(tokenizer.kind, tuple(int(p) for p in tokenizer.patch_nums), int(getattr(tokenizer, "vocab_size", 0)),
                   int(tokenizer.latent_channels))

    @property
    def num_tokens(self) -> int:
        return sum(p * p for p in self.patch_nums)

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    def scale_slice(self, k: int) -> slice:
        start = sum(p * p for p in self.patch_nums[:k])
        return slice(start, start + self.patch_nums[k] ** 2)


@dataclass
class TokenBatch:
    """Teacher-forcing inputs and targets of one batch (built from the token cache)."""

    cond: CondInput  # class ids (B,) or prompts, after condition dropout
    x_in: torch.Tensor  # (B, L - pn_1**2, Cvae) teacher-forcing inputs of scales 2..K
    idx: torch.Tensor | None = None  # (B, L) code indices (discrete / hybrid)
    cont: torch.Tensor | None = None  # (B, L, Cvae) continuous value of every token (continuous)
    residual: torch.Tensor | None = None  # (B, pn_K**2, Cvae) continuous residual of the final scale (hybrid)
    code_emb: torch.Tensor | None = None  # (B, pn_K**2, Cvae) codebook rows of the final scale's indices (hybrid)


class ScaleAR(nn.Module):
    def __init__(self, cfg: ARConfig, spec: TokenSpec, text_dim: int | None = None, text_encoder: nn.Module | None = None):
        super().__init__()
        if cfg.pos not in POSITION_SCHEMES:
            raise ValueError(f"ar.pos={cfg.pos!r} is unknown; choose one of {POSITION_SCHEMES}")
        if cfg.norm not in NORMS:
            raise ValueError(f"ar.norm={cfg.norm!r} is unknown; choose one of {NORMS}")
        self.spec, self.pos = spec, cfg.pos
        self.kind = spec.kind
        C, L, first_l = cfg.width, spec.num_tokens, spec.patch_nums[0] ** 2
        self.width, self.heads, self.first_l = C, cfg.heads, first_l
        self.cond_module = build_conditioner(cfg.condition, cfg.num_classes, cfg.text_encoder, C, text_dim, text_encoder)
        self.word_embed = nn.Linear(spec.latent_channels, C)
        init_std = (1 / C / 3) ** 0.5
        self.pos_start = nn.Parameter(torch.randn(1, first_l, C) * init_std)
        self.pos_1LC = nn.Parameter(torch.randn(1, L, C) * init_std) if cfg.pos == "absolute" else None
        self.lvl_embed = nn.Embedding(spec.num_scales, C)
        nn.init.trunc_normal_(self.lvl_embed.weight, std=init_std)
        self.blocks = BlockStack(C, cfg.depth, cfg.heads, cfg.mlp_ratio, cfg.norm, cfg.qv_bias, cfg.attn_l2_norm,
                                 cfg.drop_path)
        self.blocks.init_weights(C)
        self.head_nm = AdaLNBeforeHead(C, C, cfg.norm)
        self.head = nn.Linear(C, spec.vocab_size) if has_categorical(spec.kind) else None
        if self.head is not None:
            nn.init.trunc_normal_(self.head.weight, std=0.02 * init_std)
            nn.init.zeros_(self.head.bias)
        self.residual_cond = ResidualCondition(spec.latent_channels, C) if spec.kind == "hybrid" else None
        self.diffusion = build_diffusion_head(cfg.diffusion, spec.latent_channels, C) if has_diffusion(spec.kind) else None
        level = torch.cat([torch.full((p * p,), k, dtype=torch.long) for k, p in enumerate(spec.patch_nums)])
        self.register_buffer("level_ids", level, persistent=False)
        self.register_buffer("coords", scale_grid_coords(spec.patch_nums), persistent=False)

    # ---------------------------------------------------------------- conditioning
    def condition(self, cond_inputs: CondInput) -> Condition:
        return self.cond_module(cond_inputs)

    def null_inputs(self, n: int) -> CondInput:
        return self.cond_module.null_inputs(n)

    # ---------------------------------------------------------------- sequence pieces
    def _rope(self, coords_n2: torch.Tensor):
        if self.pos != "rope2d":
            return None
        return rope_tables(coords_n2, self.width // self.heads)

    def _add_positions(self, x_BnC: torch.Tensor, token_idx: torch.Tensor) -> torch.Tensor:
        x_BnC = x_BnC + self.lvl_embed(self.level_ids[token_idx])
        if self.pos_1LC is not None:
            x_BnC = x_BnC + self.pos_1LC[:, token_idx]
        return x_BnC

    def _start_tokens(self, cond: Condition) -> torch.Tensor:
        return cond.cond_BC.unsqueeze(1) + self.pos_start

    def forward(self, cond: Condition, x_in: torch.Tensor | None, token_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced, block-causally masked pass. Returns the head-normed hidden states (B, n, C) of
        the image tokens ``token_idx`` (default: all L; sorted global indices, always including scale 1)."""
        L = self.spec.num_tokens
        if token_idx is None:
            token_idx = torch.arange(L, device=self.level_ids.device)
        start = self._start_tokens(cond)
        parts = [start[:, token_idx[token_idx < self.first_l]]]
        rest_idx = token_idx[token_idx >= self.first_l] - self.first_l
        if rest_idx.numel():
            if x_in is None or x_in.shape[1] != L - self.first_l:
                got = None if x_in is None else x_in.shape[1]
                raise ValueError(f"teacher-forcing input has {got} tokens, expected {L - self.first_l}")
            parts.append(self.word_embed(x_in[:, rest_idx].to(start.dtype)))
        x = torch.cat(parts, dim=1)
        x = self._add_positions(x, token_idx)
        T = cond.prefix_len
        scale_ids = self.level_ids[token_idx] + 1
        coords = self.coords[token_idx]
        if T:
            x = torch.cat([cond.prefix_BTC.to(x.dtype), x], dim=1)
            scale_ids = torch.cat([torch.zeros(T, dtype=torch.long, device=x.device), scale_ids])
            coords = torch.cat([text_coords(T).to(coords.device), coords])
        h = self.blocks(x, cond.cond_BC, self._rope(coords), scale_ids)
        return self.head_nm(h[:, T:], cond.cond_BC)

    # ---------------------------------------------------------------- KV-cached sampling
    def begin_cached(self, cond: Condition) -> None:
        """Clear the KV cache and, with text, run the prefix through it."""
        self.blocks.set_caching(True)
        T = cond.prefix_len
        if T:
            self.blocks(cond.prefix_BTC, cond.cond_BC, self._rope(text_coords(T).to(self.coords.device)), None)

    def end_cached(self) -> None:
        self.blocks.set_caching(False)

    def step_cached(self, k: int, cond: Condition, x_scale_in: torch.Tensor | None) -> torch.Tensor:
        """Hidden states (B, pn_k**2, C) of scale k given its input (None for the first scale)."""
        sl = self.spec.scale_slice(k)
        token_idx = torch.arange(sl.start, sl.stop, device=self.level_ids.device)
        x = self._start_tokens(cond) if k == 0 else self.word_embed(x_scale_in.to(cond.cond_BC.dtype))
        x = self._add_positions(x, token_idx)
        h = self.blocks(x, cond.cond_BC, self._rope(self.coords[token_idx]), None)
        return self.head_nm(h, cond.cond_BC)

    # ---------------------------------------------------------------- training loss
    def final_scale_subset(self, keep: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sorted global indices: every token of scales 1..K-1 plus a random ``keep`` fraction of the final scale."""
        sl = self.spec.scale_slice(self.spec.num_scales - 1)
        n_last = sl.stop - sl.start
        n_keep = max(1, round(keep * n_last))
        dev = generator.device if generator is not None else None
        kept = torch.randperm(n_last, generator=generator, device=dev)[:n_keep].sort().values.cpu() + sl.start
        return torch.cat([torch.arange(sl.start), kept]).to(self.level_ids.device)

    def loss(self, batch: TokenBatch, final_scale_keep: float = 1.0,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        L = self.spec.num_tokens
        last = self.spec.scale_slice(self.spec.num_scales - 1)
        if self.diffusion is not None and final_scale_keep < 1.0:
            token_idx = self.final_scale_subset(final_scale_keep, generator)
        else:
            token_idx = torch.arange(L, device=self.level_ids.device)
        cond = self.condition(batch.cond)
        h = self(cond, batch.x_in, token_idx)
        total = h.new_zeros(())
        metrics: dict[str, float] = {}
        if self.head is not None:
            assert batch.idx is not None, "discrete/hybrid training needs code indices"
            logits = self.head(h).float()
            target = batch.idx[:, token_idx]
            ce = F.cross_entropy(logits.flatten(0, 1), target.flatten())
            total = total + ce
            metrics["ce"] = ce.item()
            metrics["acc"] = (logits.argmax(-1) == target).float().mean().item()
        if self.kind == "hybrid":
            assert batch.residual is not None and batch.code_emb is not None, "hybrid training needs residual + code_emb"
            last_pos = token_idx[token_idx >= last.start] - last.start
            h_last = h[:, -last_pos.numel():]
            cond_d = self.residual_cond(h_last, batch.code_emb[:, last_pos])
            dl = self.diffusion.loss(batch.residual[:, last_pos].flatten(0, 1).to(h.dtype), cond_d.flatten(0, 1),
                                     generator=generator)
            total = total + dl
            metrics["diff"] = dl.item()
        elif self.kind == "continuous":
            assert batch.cont is not None, "continuous training needs the per-token continuous values"
            dl = self.diffusion.loss(batch.cont[:, token_idx].flatten(0, 1).to(h.dtype), h.flatten(0, 1), generator=generator)
            total = total + dl
            metrics["diff"] = dl.item()
        metrics["loss"] = total.item()
        return total, metrics

    # ---------------------------------------------------------------- bookkeeping
    def parameter_groups(self) -> dict[str, int]:
        """Parameter counts by part (the frozen text encoder is not part of the module; counted separately)."""
        n = lambda m: 0 if m is None else sum(p.numel() for p in m.parameters())
        diff = n(self.diffusion) + n(self.residual_cond)
        enc = n(getattr(self.cond_module, "encoder", None))
        total = n(self)
        return {"ar": total - diff - enc, "diffusion_head": diff, "text_encoder_trained": enc, "total_trained": total}
