"""Next-scale sampling with a KV cache, classifier-free guidance and top-k / top-p.

Per scale k (of K): run the scale's input through the cached transformer,
then
- categorical: ``logits = (1 + t) cond - t uncond`` with ``t = cfg * k / (K-1)``
  (VAR / HART ramp), top-k then top-p, sample;
- hybrid, final scale: after the codes, the residual diffusion head samples
  each token's continuous residual (guidance on its noise prediction),
  conditioned on ``decoder_norm(h + word_embed(code embedding))`` as HART's
  ``autoregressive_infer_cfg`` does; the last scale's codes enter ``f_hat``
  without Phi when the tokenizer follows HART (its ``add_scale``);
- continuous: the diffusion head samples each token's value.
The tokenizer turns the sampled scale into the next scale's input
(``add_scale`` / ``next_scale_input``) and finally decodes the ``Tokens``.
The tokenizer is anything that satisfies ``hartkit.tokenizers.protocol.ScaleTokenizer``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hartkit.ar_models.conditioning import CondInput
from hartkit.ar_models.logits import filter_logits, sample_logits
from hartkit.ar_models.model import ScaleAR
from hartkit.tokenizers.protocol import ScaleTokenizer, Tokens

__all__ = ["cfg_ramp", "filter_logits", "generate_images", "generate_in_batches", "generate_tokens", "sample_logits"]


def cfg_ramp(cfg: float, k: int, num_scales: int) -> float:
    return cfg * k / (num_scales - 1) if num_scales > 1 else cfg


@dataclass
class SampleOutput:
    tokens: Tokens
    f_hat: torch.Tensor
    logits: list[torch.Tensor] = field(default_factory=list)  # guided logits per scale (record_logits=True)


@torch.no_grad()
def generate_tokens(model: ScaleAR, tokenizer: ScaleTokenizer, cond_inputs: CondInput, cfg: float = 0.0, top_k: int = 0,
                    top_p: float = 0.0, generator: torch.Generator | None = None, diffusion_cfg: float | None = None,
                    diffusion_steps: int | None = None, temperature: float = 1.0,
                    diffusion_temperature: float = 1.0, always_guide: bool = False, skip_residual: bool = False,
                    record_logits: bool = False, teacher_inputs: list[torch.Tensor] | None = None,
                    prefix_indices: list[torch.Tensor] | None = None) -> SampleOutput:
    """Sample the tokens of ``len(cond_inputs)`` images.

    ``temperature`` divides the (guided) logits before top-k / top-p; ``diffusion_temperature`` scales the
    noise of the diffusion head's ancestral steps (both 1: plain sampling).
    ``always_guide`` runs the unconditional branch even at cfg 0 (tests, cost measurement).
    ``skip_residual`` (hybrid) skips the residual diffusion head: discrete-only sampling, to measure its cost.
    ``teacher_inputs`` (per scale k >= 1: (B, pn_k**2, Cvae)) replaces the inputs built from the samples,
    to compare the cached path with the teacher-forced forward.
    ``prefix_indices`` (discrete / hybrid; per scale k < len: (B, pn_k**2) codes) fixes the first scales to
    given codes and samples the rest: completion of an image's coarse scales (VAR's zero-shot editing), and the
    probe that tells at which scale sampling loses what teacher forcing knows.
    """
    model.eval()
    spec = model.spec
    K = spec.num_scales
    B = len(cond_inputs)
    device = model.level_ids.device
    guided = always_guide or cfg != 0.0 or (diffusion_cfg not in (None, 0.0))
    inputs = model.cond_module.concat(cond_inputs, model.null_inputs(B)) if guided else cond_inputs
    cond = model.condition(inputs)
    f_hat = tokenizer.empty_f_hat(B, device)
    out = SampleOutput(tokens=None, f_hat=f_hat)  # type: ignore[arg-type]
    indices, scales, residual = [], [], None
    x_in = None
    model.begin_cached(cond)
    try:
        for k, pn in enumerate(spec.patch_nums):
            x_feed = None
            if k > 0:
                x_feed = teacher_inputs[k - 1] if teacher_inputs is not None else x_in
                x_feed = torch.cat([x_feed, x_feed]) if guided else x_feed
            h_raw = model.step_cached(k, cond, x_feed, raw=True)  # (B or 2B, pn*pn, C)
            h = model.head_nm(h_raw, cond.cond_BC)
            t = cfg_ramp(cfg, k, K)
            td = cfg_ramp(cfg if diffusion_cfg is None else diffusion_cfg, k, K)
            if model.head is not None:
                logits = model.head(h).float()
                if guided:
                    lc, lu = logits.chunk(2)
                    logits = (1 + t) * lc - t * lu
                if temperature != 1.0:
                    logits = logits / max(float(temperature), 1e-6)
                if record_logits:
                    out.logits.append(logits)
                idx = sample_logits(logits, top_k, top_p, generator)
                if prefix_indices is not None and k < len(prefix_indices):
                    idx = prefix_indices[k].to(idx.device)
                indices.append(idx)
                value = idx
                if model.kind == "hybrid" and k == K - 1 and not skip_residual:
                    code = tokenizer.code_embedding(torch.cat([idx, idx]) if guided else idx)
                    cond_d = model.residual_condition(h_raw, code).flatten(0, 1)  # guided: rows [cond; uncond]
                    res = model.diffusion.sample(cond_d, guidance=td if guided else None, generator=generator,
                                                 num_steps=diffusion_steps, temperature=diffusion_temperature)
                    residual = res.view(B, pn, pn, -1).permute(0, 3, 1, 2)
            else:
                value_flat = model.diffusion.sample(h.flatten(0, 1), guidance=td if guided else None,
                                                    generator=generator, num_steps=diffusion_steps,
                                                    temperature=diffusion_temperature)
                value = value_flat.view(B, pn, pn, -1).permute(0, 3, 1, 2).contiguous()
                scales.append(value)
            f_hat = tokenizer.add_scale(f_hat, k, value)
            if k < K - 1:
                x_in = tokenizer.next_scale_input(f_hat, k)
    finally:
        model.end_cached()
    out.f_hat = f_hat
    out.tokens = Tokens(kind=spec.kind, patch_nums=spec.patch_nums, indices=indices or None, scales=scales or None,
                        residual=residual)
    return out


@torch.no_grad()
def generate_images(model: ScaleAR, tokenizer: ScaleTokenizer, cond_inputs: CondInput, **kwargs) -> torch.Tensor:
    """Images in [-1, 1], (B, 3, H, W)."""
    out = generate_tokens(model, tokenizer, cond_inputs, **kwargs)
    return tokenizer.decode(out.tokens).clamp(-1, 1)


@torch.no_grad()
def generate_in_batches(model: ScaleAR, tokenizer: ScaleTokenizer, cond_inputs: CondInput, batch_size: int, seed: int = 0,
                        **kwargs) -> torch.Tensor:
    """All images of ``cond_inputs`` (CPU tensor in [-1, 1]); batch i uses the generator seeded ``seed + i``."""
    outs = []
    for i, start in enumerate(range(0, len(cond_inputs), batch_size)):
        g = torch.Generator(device=model.level_ids.device).manual_seed(seed + i)
        outs.append(generate_images(model, tokenizer, cond_inputs[start : start + batch_size], generator=g, **kwargs).cpu())
    return torch.cat(outs)
