"""Text tables of evaluation results for the log: every number with its 95% interval, baselines as rows.

``rows`` are (label, role, metrics, intervals) tuples, ``role`` being ``model`` or a baseline's role
(``floor``, ``ceiling``, ``baseline``), as the ``recon_eval`` and ``gen_eval`` stages collect them.
"""

from __future__ import annotations


def cell(metrics: dict, intervals: dict, key: str) -> str:
    """``value [low, high]`` (the 95% interval when there is one); ``-`` for a missing metric."""
    v = metrics.get(key)
    if v is None:
        return "-"
    ci = intervals.get(key)
    return f"{v:.4g} [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else f"{v:.4g}"


def format_comparison(rows: list, noise_floor: dict) -> str:
    """The tokenizer's decode paths next to its baselines, every number with its 95% interval."""
    keys = ["psnr", "ssim"] + sorted({k for _, _, m, _ in rows for k in m
                                      if k.startswith(("rfd", "rfid", "rkid")) and "/" not in k and
                                      not k.endswith("_discrete")})
    lines = []
    out_rows = []
    for label, role, m, ci in rows:
        out_rows.append((label, role, [cell(m, ci, k) for k in keys]))  # noqa: B007
        if any(f"{k}_discrete" in m for k in keys):
            out_rows.append((f"{label} (discrete only)", role, [cell(m, ci, f"{k}_discrete") for k in keys]))
    w0 = max(len(r[0]) + len(r[1]) + 3 for r in out_rows) + 2
    widths = [max(len(k), *(len(r[2][i]) for r in out_rows)) + 2 for i, k in enumerate(keys)]
    lines.append(f"{'row (95% bootstrap interval)':<{w0}}" + "".join(f"{k:>{w}}" for k, w in zip(keys, widths)))
    for label, role, cells in out_rows:
        label = label if role == "model" else f"{label} [{role}]"
        lines.append(f"{label:<{w0}}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    if noise_floor:
        nf = ", ".join(f"{k} {v:.4g}" for k, v in noise_floor.items() if isinstance(v, float))
        lines.append(f"noise floor (real vs real, {noise_floor.get('sets', '')}): {nf}")
    return "\n".join(lines)


def format_table(metrics: dict, kind: str) -> str:
    """A small text table: one row per decode path, then per-scale codebook statistics."""
    paths = [("discrete+residual" if kind == "hybrid" else kind, "")]
    if kind == "hybrid":
        paths.append(("discrete only", "_discrete"))
    names = sorted({k for k in metrics if "/" not in k and not k.endswith("_discrete")} -
                   {"codebook_usage", "perplexity", "tokens_per_image", "bits_per_image"})
    widths = [max(12, len(n) + 2) for n in names]
    lines = [f"{'path':<20}" + "".join(f"{n:>{w}}" for n, w in zip(names, widths))]
    for label, suffix in paths:
        lines.append(f"{label:<20}" + "".join(_fmt(metrics.get(n + suffix), w) for n, w in zip(names, widths)))
    bits = metrics.get("bits_per_image")
    lines.append(f"tokens/image {metrics['tokens_per_image']:.0f}, bits/image "
                 + ("n/a (continuous)" if bits is None else f"{bits:.0f}"))
    if "codebook_usage" in metrics:
        scales = sorted(int(k.rsplit("_", 1)[1]) for k in metrics if k.startswith("codebook_usage/scale_"))
        lines.append(f"codebook usage {metrics['codebook_usage']:.3f}, perplexity {metrics['perplexity']:.1f}; per scale:")
        lines.append("  usage      " + " ".join(f"{metrics[f'codebook_usage/scale_{k}']:.3f}" for k in scales))
        lines.append("  perplexity " + " ".join(f"{metrics[f'perplexity/scale_{k}']:.1f}" for k in scales))
    return "\n".join(lines)


def _fmt(value, width: int = 12) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.4f}"


def format_generation_rows(rows: list, noise: dict) -> str:
    """The generator's row next to its baselines' (headline metrics only), then the noise floor."""
    keys = [k for k in ("fid", "fd_embedded", "fd_clip", "kid", "kid_embedded", "kid_clip", "clip_score",
                        "clip_score_embedded", "prompt_accuracy") if any(k in r[2] for r in rows)]
    cells = [(label if role == "model" else f"{label} [{role}]", [cell(m, ci, k) for k in keys])
             for label, role, m, ci in rows]
    w0 = max(len(c[0]) for c in cells) + 2
    widths = [max(len(k), *(len(c[1][i]) for c in cells)) + 2 for i, k in enumerate(keys)]
    lines = [f"{'row':<{w0}}" + "".join(f"{k:>{w}}" for k, w in zip(keys, widths))]
    lines += [f"{label:<{w0}}" + "".join(f"{v:>{w}}" for v, w in zip(vals, widths)) for label, vals in cells]
    if noise:
        nf = ", ".join(f"{k} {v:.4g}" for k, v in noise.items() if isinstance(v, float))
        lines.append(f"noise floor (real vs real, {noise.get('sets', '')}): {nf}")
    return "\n".join(lines)
