"""``HARTGenerator``: HART's released generator (transformer + prompt encoder) where the stages drive a ``ScaleAR``.

``load_hart_generator`` (hart_official.py; ``ar=hart_0.7b ar.checkpoint=.../llm ar/text_encoder=hf
ar.text_encoder.pretrained=.../Qwen2-VL-1.5B-Instruct``) returns one. It offers what the pipeline's
``gen_eval`` stage and its efficiency report ask of a generator:

- ``kind`` ("hybrid"), ``spec`` (the tokenizer's ``TokenSpec``: ``patch_nums``, ``num_tokens``), ``eval()``;
- ``generate_images(tokenizer, prompts, generator=, cfg=, top_k=, top_p=, diffusion_steps=, diffusion_cfg=,
  temperature=, diffusion_temperature=, skip_residual=)``: the keywords of ``sampling.generate_images``, so
  ``gen_eval`` passes ``ar.sampling`` unchanged; images in [-1, 1] (B, 3, H, W);
- ``efficiency(tokenizer, prompts, sampling_kw, device, measure, max_batch)``: the record's efficiency numbers.

Sampling as HART's ``sample.py`` runs it (mit-han-lab/hart e28a41f; ``HART_SAMPLING`` in hart_official.py):

- prompts -> ``HARTTextEncoder`` (hart_text.py: HART's system prompt, 300 padded tokens, last hidden states,
  mask ``tokens != pad``, positions ``cumsum(mask) - 1``; ``encode_prompts``);
- ``HARTTransformer.sample`` (``autoregressive_infer_cfg``) with ``cfg`` (sample.py ``--cfg`` 4.5 = the preset's
  ``ar.sampling.cfg``), ``more_smooth=True`` (sample.py ``--more_smooth``; no config key: the attribute
  ``more_smooth`` of this object), ``num_maskgit_iters=1`` (``autoregressive_infer_cfg`` default, not set by
  sample.py), top-p ``ar.sampling.top_p`` (HART: 0, off), the residual diffusion with the config's
  ``num_sampling_steps`` (8; ``ar.sampling.diffusion_steps`` overrides) at temperature 1 (``DiffLoss.sample``
  call in ``autoregressive_infer_cfg``);
- top-k: ``autoregressive_infer_cfg`` ignores its ``top_k`` argument and uses 600 on the first seven scales, 300
  after. ``ar.sampling.top_k=600`` (the preset's value, HART's first one) selects that rule; another positive
  value is one fixed top-k on every scale and 0 none (both departures from HART);
- images: ``tokenizer.decode_latent(f_hat)`` = ``decoder(post_quant_conv(f_hat)).clamp(-1, 1)``
  (``HARTAutoEncoder.fhat_to_img``; HART then maps to [0, 1], gen_eval does the same).

Not reproduced (``HART_CAVEATS``): HART's random streams (one ``torch.Generator`` draws everything here, so a
seed does not give HART's images), float16 autocast and the fused kernels (float32 here), transformers 4.42.2.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hartkit.ar_models.efficiency import count_macs, measured, with_generic_columns
from hartkit.ar_models.hart_official import HART_SAMPLING
from hartkit.ar_models.hart_transformer import HartSample, HARTTransformer
from hartkit.errors import ConfigError

HART_RULE_TOP_K = int(HART_SAMPLING["top_k_first_7_scales"])  # ar.sampling.top_k value that selects HART's rule


def hart_top_k(top_k: int | None) -> int | None:
    """``HARTTransformer.sample``'s ``top_k`` for ``ar.sampling.top_k``: None (HART's 600 / 300 rule) for None or
    600, else the value (0: off)."""
    if top_k is None or int(top_k) == HART_RULE_TOP_K:
        return None
    return int(top_k)


class HARTGenerator(nn.Module):
    """HART's transformer + prompt encoder behind the interface gen_eval uses (module docstring)."""

    kind = "hybrid"

    def __init__(self, transformer: HARTTransformer, text_encoder: Any, spec: Any, source: str | None = None,
                 more_smooth: bool = bool(HART_SAMPLING["more_smooth"]),
                 num_maskgit_iters: int = int(HART_SAMPLING["num_maskgit_iters"])):
        super().__init__()
        self.transformer = transformer
        self.text_encoder = text_encoder  # an nn.Module (HARTTextEncoder) or any callable prompts -> (ctx, mask, pos)
        self.spec = spec
        self.source = source
        self.more_smooth, self.num_maskgit_iters = bool(more_smooth), int(num_maskgit_iters)
        if tuple(spec.patch_nums) != tuple(transformer.patch_nums):
            raise ConfigError(f"HART's config.json has patch_nums {list(transformer.patch_nums)}, the tokenizer "
                              f"{list(spec.patch_nums)}")

    @property
    def device(self) -> torch.device:
        return self.transformer.head.weight.device

    # --- text ---------------------------------------------------------------------------------------
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(context (B, T, D), mask (B, T), position ids (B, T)) on the transformer's device, checked against its
        config (``context_token`` T, ``context_dim`` D)."""
        if isinstance(prompts, torch.Tensor) or not all(isinstance(p, str) for p in prompts):
            raise ConfigError("HART is text-to-image: it takes prompts (ar.condition=text), not class ids")
        ctx, mask, pos = self.text_encoder(list(prompts))
        T, D = self.transformer.context_token, int(self.transformer.config["context_dim"])
        if tuple(ctx.shape[1:]) != (T, D):
            raise ConfigError(f"the text encoder gives (B, {ctx.shape[1]}, {ctx.shape[-1]}) features, HART's "
                              f"config.json expects (B, context_token={T}, context_dim={D}); set "
                              f"ar.text_encoder.max_len={T} and use the text model HART was trained with")
        dev = self.device
        return ctx.to(dev), mask.to(dev), pos.to(dev)

    # --- sampling -------------------------------------------------------------------------------------
    def sample_encoded(self, text: tuple[torch.Tensor, torch.Tensor, torch.Tensor], tokenizer: Any,
                       cfg: float = float(HART_SAMPLING["cfg"]), top_k: int | None = None,
                       top_p: float = float(HART_SAMPLING["top_p"]), generator: torch.Generator | None = None,
                       diffusion_steps: int | None = None, diffusion_cfg: float | None = None,
                       temperature: float = 1.0, diffusion_temperature: float = 1.0,
                       skip_residual: bool = False, **unused: Any) -> HartSample:
        """``HARTTransformer.sample`` on encoded text with the pipeline's sampling keywords (module docstring).
        Keywords HART has no counterpart for must keep their neutral value (else ConfigError)."""
        if diffusion_cfg is not None:
            raise ConfigError(f"ar.diffusion.cfg={diffusion_cfg}: HART guides the residual diffusion with the "
                              "logits' ramp value (autoregressive_infer_cfg); leave ar.diffusion.cfg unset")
        if float(temperature) != 1.0:
            raise ConfigError(f"ar.sampling.temperature={temperature}: HART's sampling divides no logits by a "
                              "temperature; leave it at 1.0")
        extra = {k: v for k, v in unused.items() if v not in (None, False)}
        if extra:
            raise ConfigError(f"HART's generator does not take {sorted(extra)}")
        ctx, mask, pos = text
        return self.transformer.sample(ctx, tokenizer, mask, pos, cfg=float(cfg), top_k=hart_top_k(top_k),
                                       top_p=float(top_p), generator=generator,
                                       num_maskgit_iters=self.num_maskgit_iters, residual=not skip_residual,
                                       diffusion_temperature=float(diffusion_temperature),
                                       more_smooth=self.more_smooth, diffusion_steps=diffusion_steps)

    @torch.no_grad()
    def sample(self, prompts: list[str], tokenizer: Any, **kw: Any) -> HartSample:
        return self.sample_encoded(self.encode(prompts), tokenizer, **kw)

    @torch.no_grad()
    def generate_images(self, tokenizer: Any, prompts: list[str], **kw: Any) -> torch.Tensor:
        """Images in [-1, 1], (B, 3, H, W): the decoded ``f_hat`` of ``sample``."""
        out = self.sample(prompts, tokenizer, **kw)
        return tokenizer.decode_latent(out.f_hat.to(tokenizer.empty_f_hat(1).dtype)).clamp(-1, 1)

    # --- efficiency -----------------------------------------------------------------------------------
    def parameter_counts(self, tokenizer: Any = None) -> dict[str, int]:
        n = lambda m: 0 if m is None else sum(p.numel() for p in m.parameters())  # noqa: E731
        diff = n(self.transformer.diffloss)
        out = {"ar": n(self.transformer) - diff, "diffusion_head": diff,
               "text_encoder": n(self.text_encoder) if isinstance(self.text_encoder, nn.Module) else 0}
        if tokenizer is not None:
            dec = [getattr(tokenizer, a, None) for a in ("post_quant_conv", "decoder")]
            out["tokenizer_decoder"] = sum(n(m) for m in dec) if any(m is not None for m in dec) else n(tokenizer)
        return out

    def efficiency(self, tokenizer: Any, prompts: list[str], sampling_kw: dict, device: torch.device,
                   measure: bool = True, max_batch: int = 64) -> dict[str, float]:
        """What ``efficiency.generation_efficiency`` reports for a ``ScaleAR``: parameters, MACs per image
        (FlopCounterMode over one real sampling of the first prompt, CFG batch included; the prompt encoder
        is not counted, as for ScaleAR's frozen encoders), steps and, with ``measure``, latency (batch 1, prompt
        encoding and decoding included, as HART's sample.py times it), throughput up to ``max_batch`` and the
        residual head's share of the latency."""
        kw = dict(sampling_kw)
        counts = self.parameter_counts(tokenizer)
        out: dict[str, float] = {"params_ar": counts["ar"], "params_diffusion_head": counts["diffusion_head"],
                                 "params_text_encoder": counts["text_encoder"],
                                 "params_tokenizer_decoder": counts.get("tokenizer_decoder", 0)}
        text = self.encode(list(prompts[:1]))

        def run(residual: bool) -> None:
            g = torch.Generator(device=self.device).manual_seed(0)
            self.sample_encoded(text, tokenizer, generator=g, **{**kw, "skip_residual": not residual})

        macs_ar = count_macs(lambda: run(False))
        macs_all = count_macs(lambda: run(True))
        s = self.transformer.patch_nums[-1]
        z = torch.zeros(1, self.spec.latent_channels, s, s, device=tokenizer.empty_f_hat(1).device)
        macs_dec = count_macs(lambda: tokenizer.decode_latent(z))
        steps = kw.get("diffusion_steps") or self.transformer.num_sampling_steps
        out.update({"macs_ar": float(macs_ar), "macs_diffusion": float(macs_all - macs_ar),
                    "macs_decoder": float(macs_dec), "macs_per_image": float(macs_all + macs_dec),
                    "ar_steps": float(len(self.transformer.patch_nums) - 1 + self.num_maskgit_iters),
                    "diffusion_steps": float(steps)})
        if not measure:
            return with_generic_columns(out, counts)

        def gen(batch: int, **extra):
            g = torch.Generator(device=device).manual_seed(0)
            ps = (list(prompts) * (batch // max(len(prompts), 1) + 1))[:batch]
            return self.generate_images(tokenizer, ps, generator=g, **{**kw, **extra})

        return with_generic_columns(measured(out, gen, device, max_batch, residual=True), counts)
