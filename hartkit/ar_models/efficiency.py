"""Efficiency of a generator: parameters, MACs per image, steps, latency and throughput.

MACs are counted with ``torch.utils.flop_counter.FlopCounterMode`` over the
exact sequence of calls sampling makes (KV-cached scale steps, logits head,
every diffusion step), with dummy inputs, so it also runs on the meta device
for paper-scale presets. FlopCounterMode counts FLOPs of matmuls, convolutions
and attention (2 per multiply-add); MACs = FLOPs / 2. Element-wise ops,
sampling and the frozen text encoder are not counted (the text encoder is
listed separately).

``preset_rows`` / ``format_table`` size the paper-scale presets (VAR d16..d30
at 256 px, HART-0.7B at 512 / 1024 px) next to the HART paper's 3.2 T (512 px)
and 12.5 T (1024 px) MACs; ``python -m hartkit.tools.efficiency`` adds the
tokenizer decoder's cost and writes them to ``results/efficiency.md``.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from hartkit.ar_models import sampling  # called as sampling.generate_images: patchable on its module
from hartkit.ar_models.conditioning import ClassConditioner, Condition
from hartkit.ar_models.model import ScaleAR, TokenSpec
from hartkit.ar_models.presets import load_preset
from hartkit.tokenizers.protocol import ScaleTokenizer

VAR_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
HART_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)
HART_1024 = (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64)  # unverified (docs/reference.md, section 1)


def parameter_counts(model: ScaleAR, tokenizer: torch.nn.Module | None = None) -> dict[str, int]:
    """Parameters per part; with a tokenizer module also its decoding side (``post_quant_conv`` + ``decoder``
    when it has them, else all of it): counting weights needs the module, not the protocol."""
    n = lambda m: 0 if m is None else sum(p.numel() for p in m.parameters())
    counts = dict(model.parameter_groups())
    frozen = getattr(model.cond_module, "frozen", None)
    counts["text_encoder_frozen"] = n(frozen.module) if frozen is not None else 0
    if tokenizer is not None:
        dec = [getattr(tokenizer, a, None) for a in ("post_quant_conv", "decoder")]
        counts["tokenizer_decoder"] = sum(n(m) for m in dec) if any(m is not None for m in dec) else n(tokenizer)
    return counts


def _dummy_condition(model: ScaleAR, B: int, device) -> Condition:
    cm = model.cond_module
    if isinstance(cm, ClassConditioner):
        return model.condition(torch.zeros(B, dtype=torch.long, device=device))
    if cm.encoder is not None:
        return model.condition(["a photo"] * B)
    # a frozen encoder that is not loaded (sizing): its output enters through the projection
    T = getattr(getattr(cm.frozen, "module", None), "max_len", None) or 300
    tokens = torch.zeros(B, T, cm.text_norm.normalized_shape[0], device=device)
    prefix = cm.text_proj(cm.text_norm(tokens))
    return Condition(prefix.amax(dim=1), prefix)


@torch.no_grad()
def simulate_sampling(model: ScaleAR, B: int = 1, guided: bool = True, diffusion_steps: int | None = None,
                      decode_fn=None, f_hat_shape: tuple[int, ...] | None = None) -> None:
    """The compute of sampling B images (inputs are zeros; nothing is sampled)."""
    device = model.level_ids.device
    spec = model.spec
    Bc = 2 * B if guided else B
    cond = _dummy_condition(model, Bc, device)
    Cv = spec.latent_channels
    model.begin_cached(cond)
    try:
        for k, pn in enumerate(spec.patch_nums):
            x = None if k == 0 else torch.zeros(Bc, pn * pn, Cv, device=device)
            h_raw = model.step_cached(k, cond, x, raw=True)
            h = model.head_nm(h_raw, cond.cond_BC)
            if model.head is not None:
                model.head(h)
            diff_here = model.kind == "continuous" or (model.kind == "hybrid" and k == spec.num_scales - 1)
            if diff_here:
                cond_d = h.flatten(0, 1)
                if model.residual_cond is not None:
                    cond_d = model.residual_condition(h_raw, torch.zeros(Bc, pn * pn, Cv, device=device)).flatten(0, 1)
                steps = model.diffusion.num_sample_steps if diffusion_steps is None else diffusion_steps
                xt = torch.zeros(cond_d.shape[0], Cv, device=device)
                t = torch.zeros(cond_d.shape[0], dtype=torch.long, device=device)
                for _ in range(steps):
                    model.diffusion.net(xt, t, cond_d)
    finally:
        model.end_cached()
    if decode_fn is not None and f_hat_shape is not None:
        decode_fn(torch.zeros(B, *f_hat_shape, device=device))


def count_macs(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops() // 2


def generation_macs(model: ScaleAR, guided: bool = True, diffusion_steps: int | None = None,
                    tokenizer: ScaleTokenizer | None = None) -> dict:
    """MACs per image: transformer + heads (AR), diffusion head, tokenizer decoder (if given)."""
    spec = model.spec
    base = count_macs(lambda: simulate_sampling(model, 1, guided, diffusion_steps=0))
    total_ar_diff = count_macs(lambda: simulate_sampling(model, 1, guided, diffusion_steps))
    out = {"macs_ar": base, "macs_diffusion": total_ar_diff - base}
    if tokenizer is not None:
        s = spec.patch_nums[-1]
        out["macs_decoder"] = count_macs(
            lambda: tokenizer.decode_latent(torch.zeros(1, spec.latent_channels, s, s, device=model.level_ids.device)))
    out["macs_total"] = sum(out.values())
    return out


def steps_of(model: ScaleAR, diffusion_steps: int | None = None) -> dict:
    spec = model.spec
    n_diff = 0
    if model.diffusion is not None:
        per = model.diffusion.num_sample_steps if diffusion_steps is None else diffusion_steps
        n_diff = per * (spec.num_scales if model.kind == "continuous" else 1)
    return {"ar_steps": spec.num_scales, "diffusion_steps": n_diff}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_generation(generate_fn, batch: int, device: torch.device, repeats: int = 3, warmup: int = 1) -> float:
    """Median seconds of ``generate_fn(batch)``."""
    for _ in range(warmup):
        generate_fn(batch)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        generate_fn(batch)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def latency_and_throughput(generate_fn, device: torch.device, max_batch: int = 64, repeats: int = 3) -> dict:
    """Latency at batch 1 and images/s at the largest batch <= ``max_batch`` that fits in memory."""
    lat = time_generation(generate_fn, 1, device, repeats=repeats)
    batch = max_batch
    while True:
        try:
            t = time_generation(generate_fn, batch, device, repeats=max(1, repeats - 1))
            break
        except torch.OutOfMemoryError:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if batch == 1:
                raise
            batch //= 2
    return {"latency_s": lat, "throughput_img_s": batch / t, "throughput_batch": batch}


# ---------------------------------------------------------------------- paper-scale table

PAPER_MACS = {"hart_0.7b@512": 3.2e12, "hart_0.7b@1024": 12.5e12}
# Qwen2-1.5B: 28 layers x (attention 2*1536^2 + 2*1536*256, SwiGLU 3*1536*8960) = 1.31 B non-embedding
# parameters; one forward over 300 prompt tokens ~ 1.31e9 * 300 MACs (attention scores add < 1%).
QWEN2_1_5B_MACS_300 = 1.31e9 * 300


def generation_efficiency(model: ScaleAR, tokenizer, conds, sampling_kw: dict, device: torch.device,
                          measure: bool = True, max_batch: int = 64) -> dict[str, float]:
    """Parameters, MACs per image and sequential steps of sampling ``model`` with ``sampling_kw``
    (``generate_images``' keywords), and, with ``measure``, latency at batch 1, throughput up to ``max_batch``
    and (hybrid) the residual head's share of the latency, timed on ``conds`` (class ids or prompts, repeated
    to fill a batch). ``parameters`` / ``macs`` / ``steps`` are the leaderboard's generic columns."""
    kw = dict(sampling_kw)
    counts = parameter_counts(model, tokenizer)
    out: dict[str, float] = {
        "params_ar": counts["ar"],
        "params_diffusion_head": counts["diffusion_head"],
        "params_text_encoder": counts["text_encoder_trained"] + counts["text_encoder_frozen"],
        "params_tokenizer_decoder": counts.get("tokenizer_decoder", 0),
    }
    guided = kw["cfg"] != 0.0 or kw["diffusion_cfg"] not in (None, 0.0)
    macs = generation_macs(model, guided=guided, diffusion_steps=kw["diffusion_steps"], tokenizer=tokenizer)
    out.update({k: float(v) for k, v in macs.items()})
    out["macs_per_image"] = out.pop("macs_total")
    out.update({k: float(v) for k, v in steps_of(model, kw["diffusion_steps"]).items()})
    if not measure:
        return with_generic_columns(out, counts)

    def gen(batch: int, **extra):
        g = torch.Generator(device=device).manual_seed(0)
        reps = (batch + len(conds) - 1) // len(conds)
        c = (torch.cat([conds] * reps) if isinstance(conds, torch.Tensor) else list(conds) * reps)[:batch]
        return sampling.generate_images(model, tokenizer, c, generator=g, **kw, **extra)

    return with_generic_columns(measured(out, gen, device, max_batch, model.kind == "hybrid"), counts)


def with_generic_columns(out: dict, counts: dict) -> dict:
    """The leaderboard's generic columns: ``parameters`` (AR + diffusion head), ``macs`` and ``steps``."""
    out["parameters"] = float(counts["ar"] + counts["diffusion_head"])
    out["macs"] = out["macs_per_image"]
    out["steps"] = out["ar_steps"] + out["diffusion_steps"]
    return out


def measured(out: dict, gen, device: torch.device, max_batch: int, residual: bool) -> dict:
    """``out`` plus latency and throughput of ``gen(batch, **extra)``, and with ``residual`` (a hybrid generator)
    the residual head's share of the latency (``gen(1, skip_residual=True)`` against ``gen(1)``)."""
    out.update({k: float(v) for k, v in latency_and_throughput(gen, device, max_batch=max_batch).items()})
    if residual:
        out["latency_discrete_only_s"] = time_generation(lambda b: gen(b, skip_residual=True), 1, device)
        out["residual_overhead_pct"] = 100.0 * (out["latency_s"] / out["latency_discrete_only_s"] - 1.0)
    return out


def preset_rows(decoder_macs: dict[int, int] | None = None) -> list[dict]:
    """One row per paper-scale preset; ``decoder_macs`` maps a latent side to the tokenizer decoder's MACs."""
    rows = []
    cases = [(f"var_d{d}", 256, VAR_256, "discrete") for d in (16, 20, 24, 30)]
    cases += [("hart_0.7b", 512, HART_512, "hybrid"), ("hart_0.7b", 1024, HART_1024, "hybrid")]
    for name, px, pns, kind in cases:
        cfg = load_preset(name)
        spec = TokenSpec(kind, pns, 4096, 32)
        with torch.device("meta"):
            model = ScaleAR(cfg, spec, text_dim=cfg.text_encoder.width if cfg.condition == "text" else None).eval()
        counts = parameter_counts(model)
        guided = count_macs(lambda m=model: simulate_sampling(m, 1, True))
        plain = count_macs(lambda m=model: simulate_sampling(m, 1, False))
        diff_only = 0
        if model.diffusion is not None:
            diff_only = guided - count_macs(lambda m=model: simulate_sampling(m, 1, True, diffusion_steps=0))
        rows.append({"preset": name, "resolution": px, "tokens": spec.num_tokens, "params": counts["total_trained"],
                     "params_diffusion": counts["diffusion_head"], "macs_cfg": guided, "macs_no_cfg": plain,
                     "macs_diffusion_cfg": diff_only, **steps_of(model),
                     "macs_decoder": (decoder_macs or {}).get(pns[-1]),
                     "macs_text_encoder_est": QWEN2_1_5B_MACS_300 if cfg.condition == "text" else 0,
                     "paper_macs": PAPER_MACS.get(f"{name}@{px}")})
    return rows


def format_table(rows: list[dict]) -> str:
    fmt_t = lambda v: "-" if v is None else f"{v / 1e12:.2f} T"
    lines = [
        "| preset | px | tokens | params | of which diffusion head | MACs/image, transformer + heads (CFG) "
        "| same, no CFG | of which diffusion head (CFG) | tokenizer decoder | text encoder (estimate) "
        "| no CFG + decoder + text encoder | AR steps | diffusion steps | paper MACs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        dec, te = r.get("macs_decoder"), r.get("macs_text_encoder_est") or 0
        pipeline = None if dec is None else r["macs_no_cfg"] + dec + te
        lines.append(f"| {r['preset']} | {r['resolution']} | {r['tokens']} | {r['params'] / 1e6:.1f} M "
                     f"| {r['params_diffusion'] / 1e6:.1f} M | {fmt_t(r['macs_cfg'])} | {fmt_t(r['macs_no_cfg'])} "
                     f"| {fmt_t(r['macs_diffusion_cfg'])} | {fmt_t(dec)} | {fmt_t(te) if te else '-'} "
                     f"| {fmt_t(pipeline)} | {r['ar_steps']} | {r['diffusion_steps']} | {fmt_t(r['paper_macs'])} |")
    return "\n".join(lines)
