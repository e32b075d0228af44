"""HART's text-to-image transformer (``HARTForT2I``, ``hart-0.7b-1024px`` folder ``llm/``), as HART's code reads.

``HARTTransformer(config, vocab_size, latent_channels)`` is a module whose ``state_dict()`` keys, order and shapes
are those of HART's ``HARTForT2I.state_dict()`` (``hart_official.hart_layout``), so the release's ``ema_model.bin``
loads with ``load_state_dict(strict=True)``; ``load_hart_transformer(path, ...)`` does that after the layout check
of hart_official.py. Written from a reading of mit-han-lab/hart (commit e28a41f); every fact with its file and
function is listed in hartkit/ar_models/README.md, "Official HART generator". In short:

- sequence: the T projected text tokens ``context_embed(context_norm(text))`` are the first stage (no start
  token), followed by the word-embedded inputs of scales 2..K: L + T - 1 tokens; each gets ``lvl_embed`` of its
  stage (0 for text); the logits of the last text token and of every image token, (B, L, V), are returned
  (``HARTForT2I.forward``: ``x_BLC_logits[:, context_token - 1:]``);
- attention (``LlamaAttention``): q/k/v from one bias-free linear plus (q_bias, 0, v_bias), q.k scaled by
  0.25 / sqrt(head_dim) (or l2-normalised q, k with the clamped learned per-head scale when attn_l2_norm),
  block-causal mask by stage (text tokens see all text tokens, padding included: no text mask), RoPE with
  base 10000: 1-D on the text's ``context_position_ids`` (``cumsum(mask) - 1``, ``encode_prompts``), and for
  image tokens a 2-D table on (row, col) * pn_K / pn offset by the last text position, whose frequencies
  are ``10000 ** (-arange(0, d, 4) / d)`` laid out [row, row, col, col] over the head and applied with
  ``rotate_half``, so element j < d/2 turns by a row angle and j + d/2 by a column angle (``LlamaRotaryEmbedding``);
- blocks (``AdaLNSelfAttn``): RMSNorm with a learned weight (``LlamaRMSNormFused``, eps ``norm_eps``),
  AdaLN from ``ada_lin(pool(text))`` with pool = max over the T projected text tokens (``context_pooling``,
  ``sep_aln_pooling_mode``; "avg" masks padding), six vectors in VAR's order gamma1, gamma2, scale1, scale2,
  shift1, shift2; LlamaMLP (SiLU-gated, no biases, hidden ``int(2 * mlp_ratio * C / 3 + 255) // 256 * 256``);
- head (``get_logits``, ``AdaLNBeforeHead``): RMSNorm (learned weight) modulated by ``ada_lin(max over T)``
  (always max), then ``head``;
- sampling (``autoregressive_infer_cfg``): KV cache over stages, CFG on a doubled batch whose second half has
  zero text features, zero position ids and mask (1, 0, ..., 0); guided logits ``(1 + t) c - t u`` with
  ``t = cfg * si / (K - 1)``; the first stage keeps the last text token's logits; top-k 600 before the 8th
  scale and 300 from it on (the ``top_k`` argument of HART's function is not used), ``top_p`` as passed (0);
  the last scale MaskGIT-style in ``num_maskgit_iters`` passes (1: all tokens at once) over a random order,
  guided with the previous scale's t (HART reuses ``ratio``), then (``final_stage=0``) the residual diffusion
  on ``decoder_norm(h + word_embed(code_embedding(idx)))``, added to the code embeddings;
- ``more_smooth`` (HART's sample.py default): f_hat takes the Gumbel-softmax mixture of codebook rows of the
  top-k-filtered guided logits (``sample_with_top_k_top_p_`` filters in place) times (1 + ratio), tau
  ``max(0.27 (1 - 0.95 ratio), 0.005)`` (``gumbel_softmax_with_rng``) instead of the drawn codes' rows.

The pipeline drives this module through ``hart_generator.HARTGenerator`` (with HART's prompt encoder,
``hart_text.HARTTextEncoder``). Not reproduced (``HART_CAVEATS`` in hart_official.py): HART's random streams (its MaskGIT orders
come from numpy's global generator, its diffusion noise from torch's global one, its codes and Gumbel noise from
a CUDA generator; here one ``torch.Generator`` draws all), the random draws of the training ``forward`` (text
dropping, which last-scale tokens are kept; ``forward(last_keep=...)`` takes a given subset) and its diffusion
loss, float16 autocast with HART's fused kernels. Verified against restatements of HART's code only: no
official weights or outputs were available.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hartkit.ar_models.diffusion import DiffusionHead
from hartkit.ar_models.hart_official import (
    DIFF_FREQ_DIM,
    HART_VAE_SCALE,
    check_hart_config,
    check_hart_state_dict,
    hart_attn_bias,
    hart_ffn_hidden,
    hart_level_ids,
    hart_num_positions,
    read_hart_checkpoint,
)
from hartkit.errors import ConfigError

ROPE_BASE = 10000.0  # AdaLNSelfAttn -> LlamaAttention(rope_theta=10000)
L2_MAX_LOG_SCALE = math.log(100.0)  # LlamaAttention.max_scale_mul (attn_l2_norm only)
HART_TOP_K_EARLY, HART_TOP_K_LATE, HART_TOP_K_SWITCH = 600, 300, 7  # autoregressive_infer_cfg: 600 if si < 7


# ------------------------------------------------------------------------------------------------ pieces
class HartRMSNorm(nn.Module):
    """``LlamaRMSNormFused``: ``(x * rsqrt(mean(x^2) + eps)).to(x.dtype) * weight``, statistics in float32; the
    weight is learned everywhere (HART's ``elementwise_affine=False`` and ``scale=`` keywords are ignored)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))
        r = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * r).to(x.dtype) * self.weight.to(x.dtype)


class HartMLP(nn.Module):
    """``LlamaMLP``: down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def rope_tables_1d(pos: torch.Tensor, head_dim: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (B, n, head_dim) of HART's text RoPE (``LlamaRotaryEmbedding1D``) at positions ``pos`` (B, n);
    computed in float32 as HART does (``dtype`` float64 for a double model)."""
    inv = 1.0 / (ROPE_BASE ** (torch.arange(0, head_dim, 2, device=pos.device).to(dtype) / head_dim))
    ang = pos.to(dtype)[..., None] * inv
    emb = torch.cat([ang, ang], dim=-1)
    return emb.cos(), emb.sin()


def rope_tables_2d(pos: torch.Tensor, head_dim: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (B, n, head_dim) of HART's image RoPE (``LlamaRotaryEmbedding``) at (row, col) ``pos`` (B, n, 2):
    head_dim / 4 frequencies ``base ** (-arange(0, d, 4) / d)``, angles laid out [row, row, col, col]."""
    inv = 1.0 / (ROPE_BASE ** (torch.arange(0, head_dim, 4, device=pos.device).to(dtype) / head_dim))
    row, col = pos.to(dtype)[..., :1] * inv, pos.to(dtype)[..., 1:] * inv
    emb = torch.cat([row, row, col, col], dim=-1)
    return emb.cos(), emb.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def hart_grid_positions(patch_nums: tuple[int, ...], scales: list[int], device=None,
                        dtype=torch.float32) -> torch.Tensor:
    """(n, 2) float32 (row, col) coordinates of the tokens of ``scales`` (row-major), each rescaled to the last
    grid: ``arange(pn) / pn * pn_K`` (``get_position_ids``)."""
    last = patch_nums[-1]
    out = []
    for k in scales:
        pn = patch_nums[k]
        r = torch.arange(pn, device=device)
        grid = torch.stack(torch.meshgrid(r, r, indexing="ij"), dim=-1).reshape(-1, 2)
        out.append(grid.to(dtype) / pn * last)
    return torch.cat(out, dim=0)


class HartAttention(nn.Module):
    """``LlamaAttention`` (no flash / xformers path: the plain softmax attention HART falls back to)."""

    def __init__(self, dim: int, heads: int, l2_norm: bool):
        super().__init__()
        self.heads, self.head_dim, self.l2_norm = heads, dim // heads, l2_norm
        if l2_norm:
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, heads, 1, 1), 4.0).log())
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("zero_k_bias", torch.zeros(dim))
        self.qkv_proj = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.scale = 1.0 if l2_norm else 0.25 / math.sqrt(self.head_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, bias: torch.Tensor | None = None,
                cache: dict | None = None) -> torch.Tensor:
        B, n, C = x.shape
        qkv = F.linear(x, self.qkv_proj.weight, torch.cat([self.q_bias, self.zero_k_bias, self.v_bias]))
        q, k, v = qkv.view(B, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # B H n d
        if self.l2_norm:
            q = F.normalize(q, dim=-1) * self.scale_mul_1H11.clamp_max(L2_MAX_LOG_SCALE).exp()
            k = F.normalize(k, dim=-1)
        cos, sin = cos.to(v.dtype)[:, None], sin.to(v.dtype)[:, None]
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(B, n, C))


class HartBlock(nn.Module):
    """``AdaLNSelfAttn`` with the llama attention and MLP and an unshared AdaLN."""

    def __init__(self, dim: int, heads: int, hidden: int, eps: float, l2_norm: bool):
        super().__init__()
        self.attn = HartAttention(dim, heads, l2_norm)
        self.ffn = HartMLP(dim, hidden)
        self.ln_wo_grad = HartRMSNorm(dim, eps)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, pooled: torch.Tensor, cos, sin, bias=None, cache=None) -> torch.Tensor:
        C = x.shape[-1]
        g1, g2, s1, s2, b1, b2 = self.ada_lin(pooled).view(-1, 1, 6, C).unbind(2)
        x = x + self.attn(self.ln_wo_grad(x) * (s1 + 1) + b1, cos, sin, bias, cache) * g1
        return x + self.ffn(self.ln_wo_grad(x) * (s2 + 1) + b2) * g2


class HartHeadNorm(nn.Module):
    """``AdaLNBeforeHead``: RMSNorm (learned weight) * (1 + scale) + shift, from ``ada_lin(max over text)``."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.ln_wo_grad = HartRMSNorm(dim, eps)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, cond_BTC: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond_BTC.amax(dim=1, keepdim=True)).view(-1, 1, 2, x.shape[-1]).unbind(2)
        return self.ln_wo_grad(x) * (scale + 1) + shift


class _TimeEmbed(nn.Module):
    """diffloss ``TimestepEmbedder``: MLP of [cos, sin] of t * 10000 ** (-i / 128), frequencies in float32."""

    def __init__(self, width: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(DIFF_FREQ_DIM, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = DIFF_FREQ_DIM // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half).to(t.device)
        a = t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([a.cos(), a.sin()], dim=-1))


class _ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.in_ln = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x, y):
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        return x + gate * self.mlp(self.in_ln(x) * (1 + scale) + shift)


class _FinalLayer(nn.Module):
    def __init__(self, width: int, out: int):
        super().__init__()
        self.linear = nn.Linear(width, out)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x, y):
        shift, scale = self.adaLN_modulation(y).chunk(2, dim=-1)
        return self.linear(F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale) + shift)


class HartDiffusionNet(nn.Module):
    """diffloss ``SimpleMLPAdaLN`` under HART's names (learned sigma: 2 * Cvae outputs); the same equations as
    hartkit's ``DiffusionMLP`` (``hart_official.hart_diffusion_to_hartkit`` maps one onto the other)."""

    def __init__(self, latent_channels: int, cond_dim: int, width: int, depth: int):
        super().__init__()
        self.time_embed = _TimeEmbed(width)
        self.cond_embed = nn.Linear(cond_dim, width)
        self.input_proj = nn.Linear(latent_channels, width)
        self.res_blocks = nn.ModuleList(_ResBlock(width) for _ in range(depth))
        self.final_layer = _FinalLayer(width, 2 * latent_channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        y = self.time_embed(t) + self.cond_embed(c)
        h = self.input_proj(x)
        for b in self.res_blocks:
            h = b(h, y)
        return self.final_layer(h, y)


class HartDiffLoss(nn.Module):
    """Holds ``diffloss.net`` (HART's ``DiffLoss`` keeps its schedules outside the state dict)."""

    def __init__(self, latent_channels: int, cond_dim: int, width: int, depth: int):
        super().__init__()
        self.net = HartDiffusionNet(latent_channels, cond_dim, width, depth)


def add_scale_map(tokenizer: Any, f_hat: torch.Tensor, k: int, map_BCpp: torch.Tensor) -> torch.Tensor:
    """``f_hat`` plus scale k's contribution given as a map (B, Cvae, pn, pn) rather than codes (HART's
    ``get_next_autoregressive_input`` on a ``more_smooth`` mixture): through the quantizer's upsampling + Phi
    (``quantize.upsample_scale``, hartkit's tokenizers), else the tokenizer's ``add_scale`` with the map."""
    quant = getattr(tokenizer, "quantize", None)
    if quant is not None and hasattr(quant, "upsample_scale"):
        return f_hat + quant.upsample_scale(map_BCpp.to(f_hat.dtype), k, tuple(f_hat.shape[-2:])).to(f_hat.dtype)
    return tokenizer.add_scale(f_hat, k, map_BCpp.to(f_hat.dtype))


# ------------------------------------------------------------------------------------------------ model
@dataclass
class HartSample:
    """What ``HARTTransformer.sample`` returns for B images."""

    indices: list[torch.Tensor]  # per scale (B, pn_k**2) codes
    f_hat: torch.Tensor  # (B, Cvae, h, w): the tokenizer's latent of the codes (+ the residual when sampled)
    residual: torch.Tensor | None = None  # (B, Cvae, h, w) the diffusion residual of the last scale, if sampled
    guided_logits: list[torch.Tensor] = field(default_factory=list)  # per scale (B, pn_k**2, V), if recorded


class HARTTransformer(nn.Module):
    """``HARTForT2I`` minus its tokenizer: same parameter names, same equations (module docstring)."""

    def __init__(self, config: dict[str, Any], vocab_size: int, latent_channels: int):
        super().__init__()
        c = check_hart_config(config)
        pn = tuple(int(p) for p in c["patch_nums"])
        if pn[0] != 1:
            raise ConfigError(f"HART's first stage predicts one token from the last text token: patch_nums must start "
                              f"at 1, got {list(pn)}")
        if c["sep_aln_pooling_mode"] not in ("max", "avg"):
            raise ConfigError(f"sep_aln_pooling_mode={c['sep_aln_pooling_mode']!r} (HART: 'max' or 'avg')")
        self.config = c
        self.patch_nums, self.context_token = pn, int(c["context_token"])
        self.C, self.heads, self.V, self.Cvae = int(c["embed_dim"]), int(c["num_heads"]), int(vocab_size), int(latent_channels)
        self.head_dim = self.C // self.heads
        if self.head_dim % 4:
            raise ConfigError(f"head_dim {self.head_dim} must be a multiple of 4 (HART's 2-D RoPE)")
        self.pooling = c["sep_aln_pooling_mode"]
        eps, C, Dc = float(c["norm_eps"]), self.C, int(c["context_dim"])
        self.L = sum(p * p for p in pn)
        self.register_buffer("lvl_1L", hart_level_ids(c))
        self.register_buffer("attn_bias_for_masking", hart_attn_bias(c))
        self.word_embed = nn.Linear(self.Cvae, C)
        self.context_embed = nn.Linear(Dc, C)
        self.context_norm = HartRMSNorm(Dc, eps) if c["use_context_norm"] else nn.Identity()
        self.lvl_embed = nn.Embedding(len(pn), C)
        hidden = hart_ffn_hidden(C, float(c["mlp_ratio"]))
        self.blocks = nn.ModuleList(HartBlock(C, self.heads, hidden, eps, bool(c["attn_l2_norm"]))
                                    for _ in range(int(c["depth"])))
        self.head_nm = HartHeadNorm(C, eps)
        self.head = nn.Linear(C, self.V)
        self.decoder_norm = HartRMSNorm(C, eps)
        self.diffloss = HartDiffLoss(self.Cvae, C, int(c["diff_width"]), int(c["diff_depth"]))
        self.num_sampling_steps = int(str(c["num_sampling_steps"]))
        assert self.lvl_1L.shape[1] == hart_num_positions(c)

    # --- shared pieces ------------------------------------------------------------------------
    def condition(self, context: torch.Tensor) -> torch.Tensor:
        """(B, T, C): the projected text tokens, first stage and AdaLN source (``context_embed(context_norm(.))``)."""
        return self.context_embed(self.context_norm(context))

    def pool(self, cond_BTC: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, C) AdaLN condition of the blocks (``context_pooling``)."""
        if self.pooling == "max":
            return cond_BTC.amax(dim=1, keepdim=True)
        m = context_mask.to(cond_BTC.dtype)[..., None]
        return ((cond_BTC * m) / m.sum(1, keepdim=True).clamp(min=1)).sum(1, keepdim=True)

    @property
    def _dtype(self) -> torch.dtype:
        return torch.promote_types(self.head.weight.dtype, torch.float32)

    def _real(self, x: torch.Tensor) -> torch.Tensor:
        """HART's ``.float()`` casts (float64 stays float64, so a double model computes in double)."""
        return x.to(self._dtype)

    def logits(self, h: torch.Tensor, cond_BTC: torch.Tensor) -> torch.Tensor:
        """``get_logits``: head(head_nm(h.float(), cond)) in float32."""
        return self._real(self.head(self._real(self.head_nm(self._real(h), cond_BTC))))

    def _text_inputs(self, context, context_mask, context_position_ids):
        B, T = context.shape[:2]
        if T != self.context_token:
            raise ValueError(f"HART takes exactly context_token={self.context_token} text tokens, got {T}")
        if context_mask is None:
            context_mask = torch.ones(B, T, dtype=torch.bool, device=context.device)
        if context_position_ids is None:  # encode_prompts: cumsum(mask) - 1
            context_position_ids = torch.cumsum(context_mask.long(), dim=1) - 1
        return context_mask, context_position_ids

    def _image_positions(self, scales: list[int], context_position_ids: torch.Tensor) -> torch.Tensor:
        grid = hart_grid_positions(self.patch_nums, scales, context_position_ids.device, self._dtype)
        return grid[None] + context_position_ids[:, -1][:, None, None]  # float32 + int64 -> float32, as HART

    # --- teacher forcing ------------------------------------------------------------------------
    def hidden_states(self, context: torch.Tensor, x_BLCv_wo_first_l: torch.Tensor,
                      context_mask: torch.Tensor | None = None, context_position_ids: torch.Tensor | None = None,
                      last_keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(last block's output (B, T + L - 1 [- dropped], C), the projected text (B, T, C))."""
        context_mask, context_position_ids = self._text_inputs(context, context_mask, context_position_ids)
        B, T = context.shape[:2]
        if x_BLCv_wo_first_l.shape[1] != self.L - 1:
            raise ValueError(f"teacher-forcing input has {x_BLCv_wo_first_l.shape[1]} tokens, expected L - 1 = {self.L - 1}")
        cond = self.condition(context)
        x = torch.cat([cond, self.word_embed(self._real(x_BLCv_wo_first_l))], dim=1)
        x = x + self.lvl_embed(self.lvl_1L.expand(B, -1))
        cos_t, sin_t = rope_tables_1d(context_position_ids, self.head_dim, self._dtype)
        cos_i, sin_i = rope_tables_2d(self._image_positions(list(range(1, len(self.patch_nums))),
                                                            context_position_ids), self.head_dim, self._dtype)
        cos, sin = torch.cat([cos_t, cos_i], dim=1), torch.cat([sin_t, sin_i], dim=1)
        bias = self.attn_bias_for_masking.to(x.dtype)
        if last_keep is not None:  # HART's forward: x_BLC[mask], positions[m_maskgit], attn_bias[:ed, :ed]
            n_last = self.patch_nums[-1] ** 2
            if last_keep.shape != (B, n_last) or len(set(last_keep.sum(1).tolist())) != 1:
                raise ValueError(f"last_keep must be (B, {n_last}) booleans with as many kept tokens in every row")
            keep = torch.cat([torch.ones(B, x.shape[1] - n_last, dtype=torch.bool, device=x.device),
                              last_keep.to(x.device, torch.bool)], dim=1)
            n = int(keep[0].sum())
            x, cos, sin = x[keep].view(B, n, -1), cos[keep].view(B, n, -1), sin[keep].view(B, n, -1)
            bias = bias[..., :n, :n]
        pooled = self.pool(cond, context_mask)
        for b in self.blocks:
            x = b(x, pooled, cos, sin, bias)
        return x, cond

    def forward(self, context: torch.Tensor, x_BLCv_wo_first_l: torch.Tensor, context_mask: torch.Tensor | None = None,
                context_position_ids: torch.Tensor | None = None, last_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits (B, L, V) of every image token: row 0 from the last text token (scale 1), then
        the tokens of scales 2..K from their inputs ``x_BLCv_wo_first_l`` (B, L - 1, Cvae), the cumulative
        latent of the true earlier scales area-resized (``tokenizer.teacher_forcing_input``).

        ``context`` (B, T, context_dim): the text encoder's last hidden states; ``context_mask`` (B, T) its
        attention mask (None: all ones); ``context_position_ids`` default ``cumsum(mask) - 1``.
        ``last_keep`` (B, pn_K**2) bool, as many True per row: only those last-scale tokens enter the sequence
        (HART's training forward with a given ``random_masking`` draw; also what a MaskGIT pass sees); the
        logits are then (B, L - pn_K**2 + kept, V), the kept tokens in raster order."""
        h, cond = self.hidden_states(context, x_BLCv_wo_first_l, context_mask, context_position_ids, last_keep)
        return self.logits(h[:, self.context_token - 1:], cond)

    # --- sampling --------------------------------------------------------------------------------
    @staticmethod
    def null_text(context: torch.Tensor, context_mask: torch.Tensor, context_position_ids: torch.Tensor):
        """The unconditional half of HART's CFG batch: zero features, zero positions, mask (1, 0, ..., 0)."""
        mask = torch.zeros_like(context_mask)
        mask[:, 0] = 1
        return torch.zeros_like(context), mask, torch.zeros_like(context_position_ids)

    @staticmethod
    def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
        """``sample_with_top_k_top_p_``'s in-place filter (which ``more_smooth`` then sees): logits below the
        k-th largest and the ascending-sorted tail whose cumulated probability is <= 1 - top_p (the largest always
        kept) become -inf. A ``top_k`` above the vocabulary keeps all (HART's ``topk`` would raise)."""
        if top_k > 0:
            kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values.amin(dim=-1, keepdim=True)
            logits = logits.masked_fill(logits < kth, -torch.inf)
        if top_p > 0:
            srt, order = logits.sort(dim=-1, descending=False)
            drop = srt.softmax(-1).cumsum(-1) <= 1 - top_p
            drop[..., -1:] = False
            logits = logits.masked_fill(drop.scatter(-1, order, drop), -torch.inf)
        return logits

    @staticmethod
    def _draw(filtered: torch.Tensor, generator, greedy: bool) -> torch.Tensor:
        """``torch.multinomial`` on the softmax of the filtered logits; ``greedy``: their argmax (no draw)."""
        if greedy:
            return filtered.argmax(-1)
        probs = filtered.softmax(-1)
        return torch.multinomial(probs.view(-1, probs.shape[-1]), 1, generator=generator).view(filtered.shape[:-1])

    @staticmethod
    def smooth_weights(filtered: torch.Tensor, ratio: float, generator=None) -> torch.Tensor:
        """``more_smooth``: ``gumbel_softmax_with_rng(filtered * (1 + ratio), tau=max(0.27 (1 - 0.95 ratio),
        0.005), hard=False)``, the Gumbel noise as ``-log(Exponential(1))`` drawn from ``generator``."""
        tau = max(0.27 * (1 - ratio * 0.95), 0.005)
        gumbels = -torch.empty_like(filtered).exponential_(generator=generator).log()
        return ((filtered * (1 + ratio) + gumbels) / tau).softmax(-1)

    def _top_k(self, si: int, top_k: int | None) -> int:
        if top_k is not None:
            return top_k
        return HART_TOP_K_EARLY if si < HART_TOP_K_SWITCH else HART_TOP_K_LATE

    def _maskgit_steps(self, B: int, n: int, iters: int, generator, device) -> list[torch.Tensor]:
        """Boolean (B, n) masks of the last-scale tokens each MaskGIT pass predicts (``autoregressive_infer_cfg``):
        pass s keeps masked max(1, min(#masked - 1, floor(n cos(pi / 2 (s + 1) / iters)))) tokens (the first
        of a random order) and predicts the others; the last pass predicts all still masked."""
        orders = torch.stack([torch.randperm(n, generator=generator, device=generator.device if generator else "cpu")
                              for _ in range(B)]).to(device)
        mask = torch.ones(B, n, dtype=torch.bool, device=device)
        out = []
        for step in range(iters):
            ratio = math.cos(math.pi / 2.0 * (step + 1) / iters)
            keep = max(1, min(int(mask[0].sum()) - 1, math.floor(n * ratio)))
            nxt = torch.zeros(B, n, dtype=torch.bool, device=device).scatter(1, orders[:, :keep], True)
            out.append(mask if step >= iters - 1 else mask ^ nxt)
            mask = nxt
        return out

    @torch.no_grad()
    def sample(self, context: torch.Tensor, tokenizer: Any, context_mask: torch.Tensor | None = None,
               context_position_ids: torch.Tensor | None = None, cfg: float = 4.5, top_k: int | None = None,
               top_p: float = 0.0, generator: torch.Generator | None = None, num_maskgit_iters: int = 1,
               greedy: bool = False, residual: bool = True, diffusion_temperature: float = 1.0,
               record_logits: bool = False, more_smooth: bool = False,
               diffusion_steps: int | None = None) -> HartSample:
        """HART's ``autoregressive_infer_cfg`` with a KV cache over stages.

        ``tokenizer`` follows hartkit's ``ScaleTokenizer`` protocol (``empty_f_hat``, ``add_scale``,
        ``next_scale_input``, ``code_embedding``): HART's ``get_next_autoregressive_input``. ``top_k`` None is
        HART's rule (600 before the 8th scale, 300 from it on). ``greedy`` picks argmaxes (tests). ``residual``
        samples the last scale's diffusion residual (``final_stage=0``) with ``diffusion.DiffusionHead``'s
        sampler on HART's ``diffloss.net`` (cosine schedule respaced to ``num_sampling_steps``, learned
        variance, x0 clipped to [-1, 1] in the 1 / 0.6 scaled space, guidance t; ``diffusion_steps`` None: the
        config's ``num_sampling_steps``). ``more_smooth`` (HART's
        sample.py default; ``autoregressive_infer_cfg``'s default is False): each scale's contribution to f_hat is
        the Gumbel-softmax mixture of codebook rows (``smooth_weights``) instead of the drawn codes' rows; the
        codes, and the diffusion condition, stay the drawn ones. It needs one codebook for all scales
        (``code_embedding``) and a tokenizer that takes a map in ``add_scale`` or has ``quantize.upsample_scale``."""
        self.eval()
        context = self._real(context)
        context_mask, context_position_ids = self._text_inputs(context, context_mask, context_position_ids)
        B, K, pns = context.shape[0], len(self.patch_nums), self.patch_nums
        nctx, nmask, npos = self.null_text(context, context_mask, context_position_ids)
        ctx2, mask2, pos2 = torch.cat([context, nctx]), torch.cat([context_mask, nmask]), torch.cat([context_position_ids, npos])
        cond = self.condition(ctx2)  # (2B, T, C)
        pooled = self.pool(cond, mask2)
        caches: list[dict] = [{} for _ in self.blocks]
        f_hat = self._real(tokenizer.empty_f_hat(B, context.device))  # float32 (float64 for a double model)
        out = HartSample(indices=[], f_hat=f_hat)
        codebook = self._real(tokenizer.code_embedding(torch.arange(self.V, device=context.device))) if more_smooth else None

        def run(x, cos, sin):
            for b, cache in zip(self.blocks, caches):
                x = b(x, pooled, cos, sin, None, cache)
            return x

        def guide(logits, t):
            return (1 + t) * logits[:B] - t * logits[B:]

        # stage 0: the text tokens; scale 1 from the last one
        x = cond + self.lvl_embed.weight[0]
        cos, sin = rope_tables_1d(pos2, self.head_dim, self._dtype)
        h = run(x, cos, sin)
        ratio = 0.0
        for si in range(K - 1):
            ratio = si / (K - 1)
            t = cfg * ratio
            if si > 0:
                cos, sin = rope_tables_2d(self._image_positions([si], pos2), self.head_dim, self._dtype)
                h = run(x, cos, sin)
            logits = guide(self.logits(h, cond), t)
            if si == 0:
                logits = logits[:, -1:]
            filtered = self.filter_logits(logits, self._top_k(si, top_k), top_p)
            idx = self._draw(filtered, generator, greedy)
            if record_logits:
                out.guided_logits.append(logits)
            out.indices.append(idx)
            if more_smooth:
                soft = self.smooth_weights(filtered, ratio, generator) @ codebook  # (B, pn^2, Cvae)
                f_hat = add_scale_map(tokenizer, f_hat, si, soft.transpose(1, 2).reshape(B, -1, pns[si], pns[si]))
            else:
                f_hat = tokenizer.add_scale(f_hat, si, idx)
            nxt = self._real(tokenizer.next_scale_input(f_hat, si))  # (B, pn_{si+1}^2, Cvae)
            x = (self.word_embed(nxt) + self.lvl_embed.weight[si + 1]).repeat(2, 1, 1)

        # last scale: MaskGIT passes, guided with the previous scale's t (HART does not update ratio)
        si, n = K - 1, pns[-1] ** 2
        t = cfg * ratio
        pos_last = self._image_positions([si], pos2)  # (2B, n, 2)
        idx_last = torch.zeros(B, n, dtype=torch.long, device=context.device)
        logits_last = torch.zeros(B, n, self.V, device=context.device, dtype=self._dtype) if record_logits else None
        res = torch.zeros(B, n, self.Cvae, device=context.device, dtype=self._dtype) if residual else None
        soft_last = torch.zeros(B, n, self.Cvae, device=context.device, dtype=self._dtype) if more_smooth else None
        for sel in self._maskgit_steps(B, n, num_maskgit_iters, generator, context.device):
            sel2 = torch.cat([sel, sel])
            xs = x[sel2].view(2 * B, -1, self.C)
            cos, sin = rope_tables_2d(pos_last[sel2].view(2 * B, -1, 2), self.head_dim, self._dtype)
            h = run(xs, cos, sin)
            logits = guide(self.logits(h, cond), t)
            filtered = self.filter_logits(logits, self._top_k(si, top_k), top_p)
            idx = self._draw(filtered, generator, greedy)
            idx_last[sel] = idx.reshape(-1)
            if more_smooth:
                soft_last[sel] = (self.smooth_weights(filtered, ratio, generator) @ codebook).reshape(-1, self.Cvae)
            if record_logits:
                logits_last[sel] = logits.reshape(-1, self.V)
            if residual:
                emb = self.word_embed(self._real(tokenizer.code_embedding(idx)))
                z = self.decoder_norm(h + emb.repeat(2, 1, 1))
                res[sel] = self.sample_residual(z.reshape(-1, self.C), t, generator,
                                                diffusion_temperature, diffusion_steps).to(res.dtype)
        out.indices.append(idx_last)
        if record_logits:
            out.guided_logits.append(logits_last)
        if more_smooth:
            f_hat = add_scale_map(tokenizer, f_hat, si, soft_last.transpose(1, 2).reshape(B, -1, pns[si], pns[si]))
        else:
            f_hat = tokenizer.add_scale(f_hat, si, idx_last)
        if residual:
            side = pns[-1]
            out.residual = res.transpose(1, 2).reshape(B, self.Cvae, side, side)
            f_hat = f_hat + out.residual.to(f_hat.dtype)
        out.f_hat = f_hat
        return out

    def sample_residual(self, z_2NC: torch.Tensor, t: float, generator=None, temperature: float = 1.0,
                        num_steps: int | None = None) -> torch.Tensor:
        """``DiffLoss.sample(z, temperature, cfg=t)``: (N, Cvae) residuals for the conditional half of ``z``
        ([cond; uncond] rows). HART guides unless t == 1.0 exactly (then the conditional rows alone)."""

        # the schedule and the ancestral steps only: the network is HART's own diffloss.net (eps_fn)
        steps = self.num_sampling_steps if num_steps is None else int(num_steps)
        sampler = DiffusionHead(self.Cvae, self.C, width=1, depth=0, num_sample_steps=steps,
                                learn_sigma=True, latent_scale=1.0 / HART_VAE_SCALE).to(z_2NC.device)
        sampler.target_absmax.fill_(1.0)  # clip_denoised=True on the 1 / 0.6 scaled values
        if t == 1.0:
            z, guidance = z_2NC[: z_2NC.shape[0] // 2], None
        else:
            z, guidance = z_2NC, t
        return sampler.sample(z, guidance=guidance, generator=generator, temperature=temperature,
                              eps_fn=self.diffloss.net)


# ------------------------------------------------------------------------------------------------ loading
def build_hart_transformer(config: dict[str, Any], vocab_size: int, latent_channels: int,
                           device: torch.device | str = "cpu") -> HARTTransformer:
    with torch.device(device):
        return HARTTransformer(config, vocab_size, latent_channels)


def load_hart_state_dict(model: HARTTransformer, state: dict[str, torch.Tensor], source: str = "checkpoint",
                        assign: bool = False) -> HARTTransformer:
    """Check ``state`` against HART's layout (hart_official.check_hart_state_dict), fill the buffers HART
    recomputes when the file lacks them, then ``load_state_dict(strict=True)`` (``assign``: take the tensors
    themselves, for a model built on the meta device)."""

    check_hart_state_dict(state, model.config, model.V, model.Cvae, source=source)
    full = dict(state)
    full.setdefault("lvl_1L", hart_level_ids(model.config))
    full.setdefault("attn_bias_for_masking", hart_attn_bias(model.config))
    for i in range(len(model.blocks)):
        full.setdefault(f"blocks.{i}.attn.zero_k_bias", torch.zeros(model.C))
    model.load_state_dict(full, strict=True, assign=assign)
    return model


def load_hart_transformer(path, vocab_size: int, latent_channels: int, device: torch.device | str = "cpu",
                          patch_nums: tuple[int, ...] | None = None,
                          dtype: torch.dtype = torch.float32) -> HARTTransformer:
    """HART's transformer from a release folder (``llm/``: config.json + ema_model.bin, as HART's sample.py loads
    it) or a weights file, in eval mode, in ``dtype`` on ``device``. ``patch_nums`` (the tokenizer's) must equal
    the config's when given. HART samples with float32 weights under ``torch.autocast(float16)``; do the same
    for half precision (a float16 ``dtype`` needs autocast too: inputs are cast to float32 as in HART)."""

    config, state, weights = read_hart_checkpoint(path)
    c = check_hart_config(config)
    if patch_nums is not None and tuple(int(p) for p in c["patch_nums"]) != tuple(patch_nums):
        raise ConfigError(f"{weights}: config.json has patch_nums {list(c['patch_nums'])}, the tokenizer "
                          f"{list(patch_nums)}; set the tokenizer's scales to the checkpoint's")
    model = build_hart_transformer(config, vocab_size, latent_channels, "meta")  # no random init of 0.7 B weights
    load_hart_state_dict(model, state, source=str(weights), assign=True)
    return model.to(device=device, dtype=dtype).eval()
