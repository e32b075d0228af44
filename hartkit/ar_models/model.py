"""The scale-wise autoregressive generator: one backbone for all three token kinds.

Sequence layout (one image): [text prefix (T tokens, text only)] [start
token(s) of scale 1] [teacher-forcing inputs of scales 2..K]. The start token
is the condition vector plus a learned start position; the input of scale k+1
is ``Linear(Cvae -> C)`` of the area-resized cumulative latent after scale k
(supplied by the tokenizer). Every image token gets its scale's level
embedding and, with ``pos=absolute``, a learned position embedding; with
``pos=rope2d`` positions enter as rotary embeddings on q/k instead. The output
at the positions of scale k predicts scale k.

Training (``ScaleAR.loss``) follows HART's ``HARTForT2I.forward``
(mit-han-lab/hart, ``hart/modules/models/transformer/hart_transformer_t2i.py``):
a subset of the last scale's tokens (``final_scale_subset``: HART's
``random_masking`` rule by default, the same for every kind) enters the pass;
the hybrid's residual diffusion target is the latent before the last scale
minus the embedding of a code sampled from the model's own logits, and its
condition ``decoder_norm(h + word_embed(embedding(code)))``. All draws come
from the generator the loss receives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hartkit.ar_models.backbone import BlockStack
from hartkit.ar_models.conditioning import CondInput, Condition, build_conditioner
from hartkit.ar_models.config import ARConfig
from hartkit.ar_models.heads import ResidualCondition, build_diffusion_head, has_categorical, has_diffusion
from hartkit.ar_models.layers import NORMS, AdaLNBeforeHead
from hartkit.ar_models.logits import sample_logits
from hartkit.ar_models.positions import POSITION_SCHEMES, rope_tables, scale_grid_coords, text_coords
from hartkit.errors import ConfigError
from hartkit.tokenizers.protocol import KINDS, ScaleTokenizer

SUBSET_RULES = ("hart", "all", "fraction")
RESIDUAL_CODES = ("sampled", "teacher")


@dataclass(frozen=True)
class TokenSpec:
    """What the generator needs to know about its tokenizer."""

    kind: str
    patch_nums: tuple[int, ...]
    vocab_size: int  # 0 for continuous
    latent_channels: int
    last_scale_phi: bool = False  # hybrid: the tokenizer applies Phi at the last scale (VAR's convention, not HART's)
    # (V, Cvae) code embeddings: the hybrid loss embeds the codes it samples (HART: vae_quant_proxy.embedding)
    codebook: torch.Tensor | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"tokenizer kind must be one of {KINDS}, got {self.kind!r}")
        if has_categorical(self.kind) and self.vocab_size <= 0:
            raise ValueError(f"a {self.kind} tokenizer needs vocab_size > 0")

    @classmethod
    def from_tokenizer(cls, tokenizer: ScaleTokenizer) -> TokenSpec:
        kind, V = tokenizer.kind, int(tokenizer.vocab_size)
        codebook, phi_last = None, False
        if kind == "hybrid":
            phi_last = bool(tokenizer.phi_on_last_scale)
            device = tokenizer.empty_f_hat(1).device  # the tokenizer's own device
            with torch.no_grad():
                codebook = tokenizer.code_embedding(torch.arange(V, device=device)).detach().float().cpu().clone()
        return cls(kind, tuple(int(p) for p in tokenizer.patch_nums), V, int(tokenizer.latent_channels),
                   last_scale_phi=phi_last, codebook=codebook)

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
    # (B, pn_K**2, Cvae) latent before the last scale's code is subtracted (hybrid; HART's f_rest_wo_last_discrete)
    rest_before_last: torch.Tensor | None = None


def take_tokens(x: torch.Tensor | None, idx: torch.Tensor | None) -> torch.Tensor | None:
    """Rows ``idx`` of the token axis (dim 1) of ``x`` (B, L, ...): idx None (all), (n,) shared, or (B, n) per image."""
    if x is None or idx is None:
        return x
    if idx.ndim == 1:
        return x[:, idx]
    return x.gather(1, idx.view(*idx.shape, *([1] * (x.ndim - 2))).expand(*idx.shape, *x.shape[2:]))


HART_MASK_RATE_MIN, HART_MASK_RATE_STD = 0.5, 0.25  # HARTForT2I.__init__: truncnorm((0.5 - 1) / 0.25, 0, 1.0, 0.25)
HART_TOP_K, HART_VOCAB, HART_TOP_P = 600, 4096, 0.96  # HARTForT2I.forward: codes for the residual target


def hart_mask_rate(generator: torch.Generator | None = None) -> float:
    """One draw of HART's mask rate: normal(1, 0.25) truncated to [0.5, 1] (left half of a Gaussian centred
    at 100% masking, MAR's generator), by the inverse CDF of one uniform from ``generator``."""
    dev = generator.device if generator is not None else None
    u = float(torch.rand((), generator=generator, device=dev, dtype=torch.float64))
    lo = float(torch.special.ndtr(torch.tensor((HART_MASK_RATE_MIN - 1.0) / HART_MASK_RATE_STD, dtype=torch.float64)))
    z = float(torch.special.ndtri(torch.tensor(lo + u * (0.5 - lo), dtype=torch.float64)))
    return min(1.0, max(HART_MASK_RATE_MIN, 1.0 + HART_MASK_RATE_STD * z))


def hart_expected_kept(n: int, min_keep: int = 32, grid: int = 20001) -> float:
    """Mean number of last-scale tokens HART's rule keeps (quadrature over the truncated normal's density)."""
    z = torch.linspace((HART_MASK_RATE_MIN - 1.0) / HART_MASK_RATE_STD, 0.0, grid, dtype=torch.float64)
    w = torch.exp(-0.5 * z * z)
    kept = torch.tensor([hart_num_kept(n, float(1.0 + HART_MASK_RATE_STD * zi), min_keep) for zi in z.tolist()],
                        dtype=torch.float64)
    return float((w * kept).sum() / w.sum())


def hart_num_kept(n: int, mask_rate: float, min_keep: int = 32) -> int:
    """Last-scale tokens HART keeps: ``n - min(ceil(n * r), n - min_keep)`` (HARTForT2I.random_masking);
    all of them when the scale has no more than ``min_keep`` tokens."""
    dropped = min(math.ceil(n * mask_rate), n - min_keep)
    return n - max(0, dropped)


class ScaleAR(nn.Module):
    def __init__(self, cfg: ARConfig, spec: TokenSpec, text_dim: int | None = None, text_encoder: nn.Module | None = None):
        super().__init__()
        if cfg.pos not in POSITION_SCHEMES:
            raise ConfigError(f"ar.pos={cfg.pos!r} is unknown; choose one of {POSITION_SCHEMES}")
        if cfg.norm not in NORMS:
            raise ConfigError(f"ar.norm={cfg.norm!r} is unknown; choose one of {NORMS}")
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
        self.residual_cond = ResidualCondition(cfg.norm, C) if spec.kind == "hybrid" else None
        tcfg = cfg.train
        self.subset_rule = str(getattr(tcfg, "final_scale_subset", "hart"))
        if self.subset_rule not in SUBSET_RULES:
            raise ConfigError(f"ar.train.final_scale_subset={self.subset_rule!r} is unknown; choose one of {SUBSET_RULES}")
        self.subset_min_keep = int(getattr(tcfg, "final_scale_min_keep", 32))
        self.subset_keep = float(getattr(tcfg, "final_scale_keep", 1.0))
        self.residual_codes = str(getattr(tcfg, "residual_codes", "sampled"))
        if self.residual_codes not in RESIDUAL_CODES:
            raise ConfigError(f"ar.train.residual_codes={self.residual_codes!r} is unknown; choose one of {RESIDUAL_CODES}")
        top_k = getattr(tcfg, "residual_top_k", None)
        self.residual_top_k = max(1, round(HART_TOP_K * spec.vocab_size / HART_VOCAB)) if top_k is None else int(top_k)
        self.residual_top_p = float(getattr(tcfg, "residual_top_p", HART_TOP_P))
        self.detach_diffusion_condition = bool(getattr(tcfg, "detach_diffusion_condition", None))
        if spec.kind == "hybrid" and self.residual_codes == "sampled" and spec.last_scale_phi:
            raise ConfigError("ar.train.residual_codes=sampled needs a hybrid tokenizer without Phi at the last scale "
                             "(tokenizer.quantizer.phi_on_last_scale=false, HART's convention): with Phi the residual "
                             "of a token depends on its neighbours' codes. Use ar.train.residual_codes=teacher instead")
        if spec.kind == "hybrid":
            cb = spec.codebook if spec.codebook is not None else torch.zeros(spec.vocab_size, spec.latent_channels)
            if tuple(cb.shape) != (spec.vocab_size, spec.latent_channels):
                raise ValueError(f"codebook of shape {tuple(cb.shape)}, expected ({spec.vocab_size}, {spec.latent_channels})")
            # a copy of the (frozen) tokenizer's code embeddings, rebuilt from the tokenizer when a generator loads
            # (zeros + copy_: allocated on the default device, so a ``with device:`` build puts it there too)
            self.register_buffer("codebook", torch.zeros(cb.shape).copy_(cb.detach()), persistent=False)
            self.has_codebook = spec.codebook is not None
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
    def _rope(self, coords: torch.Tensor):
        """cos/sin tables for coords (n, 2) shared by the batch, or (B, n, 2) per image (-> (B, 1, n, P))."""
        if self.pos != "rope2d":
            return None
        if coords.ndim == 2:
            return rope_tables(coords, self.width // self.heads)
        cos, sin = rope_tables(coords.reshape(-1, 2), self.width // self.heads)
        return cos.view(*coords.shape[:2], -1).unsqueeze(1), sin.view(*coords.shape[:2], -1).unsqueeze(1)

    def _add_positions(self, x_BnC: torch.Tensor, token_idx: torch.Tensor) -> torch.Tensor:
        x_BnC = x_BnC + self.lvl_embed(self.level_ids[token_idx])
        if self.pos_1LC is not None:
            x_BnC = x_BnC + self.pos_1LC[0, token_idx]
        return x_BnC

    def _start_tokens(self, cond: Condition) -> torch.Tensor:
        return cond.cond_BC.unsqueeze(1) + self.pos_start

    def forward(self, cond: Condition, x_in: torch.Tensor | None, token_idx: torch.Tensor | None = None,
                raw: bool = False) -> torch.Tensor:
        """Teacher-forced, block-causally masked pass over the image tokens ``token_idx``: None (all L),
        sorted global indices (n,) shared by the batch (always including scale 1), or (B, n) per image
        (every row with the same number of tokens per scale, as ``final_scale_subset`` makes them).
        Returns the head-normed hidden states (B, n, C); ``raw=True``: the last block's output."""
        L = self.spec.num_tokens
        if token_idx is None:
            token_idx = torch.arange(L, device=self.level_ids.device)
        start = self._start_tokens(cond)
        needs_inputs = bool((token_idx >= self.first_l).any())
        if needs_inputs and (x_in is None or x_in.shape[1] != L - self.first_l):
            got = None if x_in is None else x_in.shape[1]
            raise ValueError(f"teacher-forcing input has {got} tokens, expected {L - self.first_l}")
        if token_idx.ndim == 1:
            parts = [start[:, token_idx[token_idx < self.first_l]]]
            rest_idx = token_idx[token_idx >= self.first_l] - self.first_l
            if rest_idx.numel():
                parts.append(self.word_embed(x_in[:, rest_idx].to(start.dtype)))
            x = torch.cat(parts, dim=1)
            scale_ids = self.level_ids[token_idx] + 1
        else:  # per image: embed every token, then keep each image's own
            x_all = torch.cat([start, self.word_embed(x_in.to(start.dtype))], dim=1) if needs_inputs else start
            x = take_tokens(x_all, token_idx)
            scale_ids = self.level_ids[token_idx[0]] + 1
        x = self._add_positions(x, token_idx)
        T = cond.prefix_len
        coords = self.coords[token_idx]
        if T:
            x = torch.cat([cond.prefix_BTC.to(x.dtype), x], dim=1)
            scale_ids = torch.cat([torch.zeros(T, dtype=torch.long, device=x.device), scale_ids])
            tc = text_coords(T).to(coords.device)
            coords = torch.cat([tc.expand(*coords.shape[:-2], T, 2), coords], dim=-2)
        h = self.blocks(x, cond.cond_BC, self._rope(coords), scale_ids)[:, T:]
        return h if raw else self.head_nm(h, cond.cond_BC)

    def residual_condition(self, h_raw_BnC: torch.Tensor, code_emb_BnCv: torch.Tensor) -> torch.Tensor:
        """HART's diffusion condition ``decoder_norm(h + word_embed(code embedding))`` (raw hidden states)."""
        return self.residual_cond(h_raw_BnC, code_emb_BnCv, self.word_embed)

    # ---------------------------------------------------------------- KV-cached sampling
    def begin_cached(self, cond: Condition) -> None:
        """Clear the KV cache and, with text, run the prefix through it."""
        self.blocks.set_caching(True)
        T = cond.prefix_len
        if T:
            self.blocks(cond.prefix_BTC, cond.cond_BC, self._rope(text_coords(T).to(self.coords.device)), None)

    def end_cached(self) -> None:
        self.blocks.set_caching(False)

    def step_cached(self, k: int, cond: Condition, x_scale_in: torch.Tensor | None, raw: bool = False) -> torch.Tensor:
        """Head-normed hidden states (B, pn_k**2, C) of scale k given its input (None for the first scale);
        ``raw=True``: the last block's output."""
        sl = self.spec.scale_slice(k)
        token_idx = torch.arange(sl.start, sl.stop, device=self.level_ids.device)
        x = self._start_tokens(cond) if k == 0 else self.word_embed(x_scale_in.to(cond.cond_BC.dtype))
        x = self._add_positions(x, token_idx)
        h = self.blocks(x, cond.cond_BC, self._rope(self.coords[token_idx]), None)
        return h if raw else self.head_nm(h, cond.cond_BC)

    # ---------------------------------------------------------------- training loss
    def final_scale_subset(self, B: int, generator: torch.Generator | None = None,
                           keep: float | None = None) -> torch.Tensor | None:
        """The image tokens of one training step: None (all, rule ``all``) or (B, n) sorted global indices per
        image, every token of scales 1..K-1 plus each image's kept last-scale tokens. The rule
        (``ar.train.final_scale_subset``) does not depend on the kind, and these are the step generator's first
        draws, so generators of any kind given the same generator state keep the same tokens.

        ``hart``: HART's token subsample (``HARTForT2I.random_masking``): one mask rate per batch
        (``hart_mask_rate``), ``hart_num_kept`` tokens kept, chosen by a random order per image
        (``sample_orders``). ``fraction``: ``round(keep * n)`` per image (``keep`` default: ar.train.final_scale_keep).
        """
        K = self.spec.num_scales
        if self.subset_rule == "all" or K < 2:
            return None
        last = self.spec.scale_slice(K - 1)
        n = last.stop - last.start
        if self.subset_rule == "hart":
            n_keep = hart_num_kept(n, hart_mask_rate(generator), self.subset_min_keep)
        else:
            frac = self.subset_keep if keep is None else float(keep)
            n_keep = min(n, max(1, round(frac * n)))
        dev = generator.device if generator is not None else None
        order = torch.rand(B, n, generator=generator, device=dev).argsort(dim=1)
        kept = order[:, n - n_keep:].sort(dim=1).values.to(self.level_ids.device) + last.start
        earlier = torch.arange(last.start, device=self.level_ids.device).expand(B, -1)
        return torch.cat([earlier, kept], dim=1)

    def loss(self, batch: TokenBatch, final_scale_keep: float | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy over the kept tokens (discrete / hybrid) + the diffusion loss (hybrid: kept last-scale
        tokens; continuous: every kept token). ``final_scale_keep`` is used by the ``fraction`` rule only (the
        trainer passes ar.train.final_scale_keep). Every random draw comes from ``generator``, in this order:
        the token subset, the hybrid's sampled codes, the diffusion timesteps / noise."""
        L = self.spec.num_tokens
        last = self.spec.scale_slice(self.spec.num_scales - 1)
        B = batch.x_in.shape[0]
        token_idx = self.final_scale_subset(B, generator, final_scale_keep)
        cond = self.condition(batch.cond)
        h_raw = self(cond, batch.x_in, token_idx, raw=True)
        h = self.head_nm(h_raw, cond.cond_BC)
        total = h.new_zeros(())
        metrics: dict[str, float] = {}
        logits = None
        if self.head is not None:
            assert batch.idx is not None, "discrete/hybrid training needs code indices"
            logits = self.head(h).float()
            target = take_tokens(batch.idx, token_idx)
            ce = F.cross_entropy(logits.flatten(0, 1), target.flatten())
            total = total + ce
            metrics["ce"] = ce.item()
            metrics["acc"] = (logits.argmax(-1) == target).float().mean().item()
        if self.kind == "hybrid":
            all_idx = torch.arange(L, device=h.device) if token_idx is None else token_idx
            first = all_idx if all_idx.ndim == 1 else all_idx[0]
            n_last = int((first >= last.start).sum())
            last_pos = all_idx[..., -n_last:] - last.start  # (n_last,) or (B, n_last)
            h_last = h_raw[:, -n_last:]
            if self.detach_diffusion_condition:
                h_last = h_last.detach()
            if self.residual_codes == "sampled":
                target_d, code_emb, codes = self.sampled_residual_target(batch, logits[:, -n_last:], last_pos, generator)
                gt = take_tokens(batch.idx[:, last.start:], last_pos)
                metrics["code_match"] = (codes == gt).float().mean().item()
            else:  # teacher forcing: ground-truth codes and residual (a departure from HART)
                assert batch.residual is not None and batch.code_emb is not None, "teacher mode needs residual + code_emb"
                target_d = take_tokens(batch.residual, last_pos)
                code_emb = take_tokens(batch.code_emb, last_pos)
            cond_d = self.residual_condition(h_last, code_emb)
            dl = self.diffusion.loss(target_d.flatten(0, 1).to(h.dtype), cond_d.flatten(0, 1), generator=generator)
            total = total + dl
            metrics["diff"] = dl.item()
        elif self.kind == "continuous":
            assert batch.cont is not None, "continuous training needs the per-token continuous values"
            dl = self.diffusion.loss(take_tokens(batch.cont, token_idx).flatten(0, 1).to(h.dtype), h.flatten(0, 1),
                                     generator=generator)
            total = total + dl
            metrics["diff"] = dl.item()
        metrics["loss"] = total.item()
        return total, metrics

    def sampled_residual_target(self, batch: TokenBatch, logits_last: torch.Tensor, last_pos: torch.Tensor,
                                generator: torch.Generator | None = None):
        """HART's residual target (``HARTForT2I.forward``): codes sampled from the model's own last-scale logits
        (top-k / top-p, under no_grad), target = (latent before the last scale) - embedding(sampled code).
        Returns (target, code embeddings, codes), each (B, n_last, ...)."""
        if batch.rest_before_last is None:
            raise ValueError("ar.train.residual_codes=sampled needs TokenBatch.rest_before_last (the token cache "
                             "stores it from format 2 on)")
        if not self.has_codebook:
            raise ValueError("ar.train.residual_codes=sampled needs the tokenizer's codebook: build the generator "
                             "with ScaleAR(cfg, TokenSpec.from_tokenizer(tokenizer))")
        with torch.no_grad():
            codes = sample_logits(logits_last.detach(), self.residual_top_k, self.residual_top_p, generator)
        code_emb = self.codebook[codes]
        rest = take_tokens(batch.rest_before_last, last_pos).float()
        return rest - code_emb, code_emb, codes

    # ---------------------------------------------------------------- bookkeeping
    def parameter_groups(self) -> dict[str, int]:
        """Parameter counts by part (the frozen text encoder is not part of the module; counted separately)."""
        n = lambda m: 0 if m is None else sum(p.numel() for p in m.parameters())
        diff = n(self.diffusion) + n(self.residual_cond)
        enc = n(getattr(self.cond_module, "encoder", None))
        total = n(self)
        return {"ar": total - diff - enc, "diffusion_head": diff, "text_encoder_trained": enc, "total_trained": total}
