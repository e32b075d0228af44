"""Leaderboard: per-protocol tables and plots built from the result records.

    python -m hartkit.tools.leaderboard [--results results] [--no-plots]
    python run.py stages=[leaderboard]

Reads every record under ``<results>/records`` (``hartkit.records``), and
writes ``<results>/leaderboard.md``, ``<results>/leaderboard.csv`` and one PNG
plot per protocol under ``<results>/plots/`` (plots of earlier builds that no
table uses any more are deleted). Rules:

- one table per (task, stage, protocol key): numbers measured under different
  protocols never share a table; the table has one row per model or baseline
  and a few headline metrics as columns; the full protocol text, the noise
  floor, the significance marks, notes and provenance stand below it;
- every table shows its ceiling rows first and its floor rows last
  (``role`` of the record); a trained row worse than a floor row on a metric
  is flagged: ``⚠ below floor: <metric>`` when their intervals separate (or
  either has none), ``below floor within intervals: <metric>`` otherwise;
- a cell is ``value [low, high]`` with the record's 95% bootstrap interval;
  rows of the same config under several seeds (``python run.py -m seed=0,1,2``)
  are aggregated to ``mean ± std (k seeds)``, their interval being the union of
  the seeds' intervals ("same config": equal up to run-only keys, such as thread
  counts, and keys left unset, so a key added later at None does not split them);
- "Differences outside both intervals" lists, per metric, the pairs of rows (at
  least one of them a trained model) whose 95% intervals do not overlap;
- a rerun of the same configuration and seed replaces the older one: per
  (label, config hash, seed) only the newest record is used in the markdown;
  the CSV keeps every run with its run id and a ``latest`` flag, every metric,
  interval (``<metric>:lo`` / ``<metric>:hi``) and per-category number;
- a malformed record is reported by file name (log + a section of the
  markdown) and skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hartkit.eval.intervals import intervals_separate
from hartkit.records import ResultRecord, iter_records
from hartkit.utils.io import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

# config keys that do not change what a run measures (left out of the config hash); the seed is kept
# apart so that runs of one config under several seeds aggregate into one row
RUN_ONLY_KEYS = ("run_name", "paths", "logger", "stages", "resume", "retrain", "device", "threads", "kernels", "seed",
                 "objective")

# headline columns of the markdown tables (everything else stays in the CSV); preferred order
TOKENIZER_COLUMNS = ["rfid", "rfd_embedded", "rfd_clip", "rfd_dinov2", "rkid", "rkid_embedded", "rkid_clip",
                     "psnr", "ssim", "prompt_accuracy", "prompt_accuracy/shape", "class_accuracy", "codebook_usage",
                     "bits_per_image"]
GENERATOR_COLUMNS = ["fid", "fd_embedded", "fd_clip", "fd_dinov2", "kid", "kid_embedded", "kid_clip",
                     "inception_score", "precision", "recall", "clip_score",  # eval=imagenet256: higher is better
                     "clip_score_embedded", "prompt_accuracy", "prompt_accuracy/shape", "prompt_accuracy/color",
                     "prompt_accuracy/position", "class_accuracy", "latency_s", "throughput_img_s"]
PRIMARY = ["rfid", "rfd_embedded", "rfd_clip", "fid", "fd_embedded", "fd_clip"]  # sort key (ascending)
LOWER_IS_BETTER_PREFIXES = ("fid", "fd_", "rfid", "rfd_", "kid", "rkid", "latency")
THROUGHPUT_KEYS = ["throughput_img_s", "throughput", "images_per_s", "img_per_s"]
COUNT_COLUMNS = ["num_images", "num_failed", "num_reference"]
META_COLUMNS = ["task", "stage", "protocol", "label", "role", "seed", "run_id", "created", "config_hash", "latest",
                "git_commit", "trained_commit"]
ROLE_ORDER = {"ceiling": 0, "model": 1, "baseline": 1, "floor": 2}
BASELINE_ROLES = ("floor", "ceiling", "baseline")


def lower_is_better(metric: str) -> bool:
    return metric.split("/")[0].startswith(LOWER_IS_BETTER_PREFIXES)


# the same for nested keys: a trainer's own thread count is what the top-level ``threads`` is
RUN_ONLY_NESTED = ("tokenizer.train.threads", "ar.train.threads")


def _without_unset(d: Any, prefix: str = "") -> Any:
    """``d`` without None values and nested run-only keys: a key added later with a None default (hashed only
    when set, ``hartkit.utils.identity``) then groups a record written before it existed with one written after."""
    if not isinstance(d, dict):
        return d
    return {k: _without_unset(v, f"{prefix}{k}.") for k, v in d.items()
            if v is not None and f"{prefix}{k}" not in RUN_ONLY_NESTED}


def config_hash_of(config: dict[str, Any]) -> str:
    """Hash of the parts of a resolved config that change results (the seed excluded)."""
    kept = _without_unset({k: v for k, v in (config or {}).items() if k not in RUN_ONLY_KEYS})
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) or v is None


def record_row(path: Path, rec: ResultRecord) -> dict[str, Any]:
    row: dict[str, Any] = {
        "task": rec.protocol.task,
        "stage": rec.stage,
        "protocol": rec.protocol.key(),
        "label": rec.label,
        "role": rec.role,
        "seed": (rec.config or {}).get("seed"),
        "run_id": rec.run_id,
        "created": rec.created,
        "config_hash": config_hash_of(rec.config),
        "git_commit": rec.git_commit,
        "trained_commit": rec.trained_commit,
        "file": str(path),
        "_record": rec,
    }
    for k, v in (rec.model or {}).items():  # model facts: parameters, tokens, steps, latency, ...
        if _scalar(v) and k not in row:
            row[k] = v
    row.update(rec.metrics)  # a metric of the same name wins over a model fact
    for k, (lo, hi) in (rec.intervals or {}).items():
        row[f"{k}:lo"], row[f"{k}:hi"] = lo, hi
    return row


def records_frame(results_dir: str | Path) -> tuple[pd.DataFrame, list[tuple[Path, str]]]:
    """All records as one DataFrame (one row per record) and the malformed files with why."""
    good, bad = iter_records(results_dir)
    for path, why in bad:
        log.warning("skipped malformed record %s: %s", path, why)
    rows = [record_row(p, r) for p, r in good]
    df = pd.DataFrame(rows)
    if df.empty:
        return df, bad
    df = df.sort_values("created", ascending=False, kind="stable")
    seed_key = df["seed"].astype(str)
    df["latest"] = ~df.assign(_seed=seed_key).duplicated(
        subset=["task", "stage", "protocol", "label", "config_hash", "_seed"], keep="first")
    return df.reset_index(drop=True), bad


# ---------------------------------------------------------------------- aggregation


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def aggregate(rows: pd.DataFrame, metrics: list[str]) -> list[dict[str, Any]]:
    """One entry per (label, config hash): value, interval, std and seed count of each metric."""
    out = []
    for (label, _cfg), g in rows.groupby(["label", "config_hash"], sort=False):
        entry: dict[str, Any] = {"label": label, "role": g["role"].iloc[0], "n_seeds": len(g),
                                 "records": [r for r in g["_record"]], "values": {}, "ci": {}, "std": {}}
        for m in metrics:
            vals = [float(v) for v in g[m] if _finite(v)] if m in g else []
            if not vals:
                continue
            entry["values"][m] = float(np.mean(vals))
            if len(vals) > 1:
                entry["std"][m] = float(np.std(vals, ddof=1))
            lo = [float(v) for v in g.get(f"{m}:lo", pd.Series(dtype=float)) if _finite(v)]
            hi = [float(v) for v in g.get(f"{m}:hi", pd.Series(dtype=float)) if _finite(v)]
            if lo and hi:
                entry["ci"][m] = (min(lo), max(hi))  # union over seeds
        out.append(entry)
    return out


def discrete_entries(entries: list[dict], metrics: list[str]) -> list[dict]:
    """Hybrid tokenizers' discrete-only decode as rows of their own (``<label> (discrete only)``)."""
    extra = []
    for e in entries:
        rec = e["records"][0]
        keys = {m: f"{m}_discrete" for m in metrics if f"{m}_discrete" in rec.metrics}
        if not keys:
            continue
        vals, ci, std = {}, {}, {}
        for m, k in keys.items():
            vs = [r.metrics[k] for r in e["records"] if _finite(r.metrics.get(k))]
            if not vs:
                continue
            vals[m] = float(np.mean(vs))
            if len(vs) > 1:
                std[m] = float(np.std(vs, ddof=1))
            cis = [r.intervals[k] for r in e["records"] if k in (r.intervals or {})]
            if cis:
                ci[m] = (min(c[0] for c in cis), max(c[1] for c in cis))
        extra.append({"label": f"{e['label']} (discrete only)", "role": e["role"], "n_seeds": e["n_seeds"],
                      "records": e["records"], "values": vals, "ci": ci, "std": std})
    return extra


def below_floor(entry: dict, floors: list[dict]) -> tuple[list[str], list[str]]:
    """Metrics on which a trained row is worse than a floor row: (intervals separate or absent, within intervals)."""
    if entry["role"] != "model":
        return [], []
    worse, near = [], []
    for m, v in entry["values"].items():
        hits = [f for f in floors if f["values"].get(m) is not None
                and ((v > f["values"][m]) if lower_is_better(m) else (v < f["values"][m]))]
        if not hits:
            continue
        clear = any(m not in entry["ci"] or m not in f["ci"] or intervals_separate(entry["ci"][m], f["ci"][m])
                    for f in hits)
        (worse if clear else near).append(m)
    return worse, near


def significant_pairs(entries: list[dict], metric: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(better, worse) pairs whose intervals separate, and pairs that do not; each pair has a trained row."""
    sep, within = [], []
    rows = [e for e in entries if metric in e["values"]]
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if a["role"] != "model" and b["role"] != "model":
                continue
            if metric not in a["ci"] or metric not in b["ci"]:
                continue
            va, vb = a["values"][metric], b["values"][metric]
            better, worse = (a, b) if ((va < vb) if lower_is_better(metric) else (va > vb)) else (b, a)
            pair = (better["label"], worse["label"])
            (sep if intervals_separate(a["ci"][metric], b["ci"][metric]) else within).append(pair)
    return sep, within


# ---------------------------------------------------------------------- formatting


def fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 1000):
        return f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}"
    return str(v).replace("|", "\\|")


def cell(entry: dict, metric: str) -> str:
    v = entry["values"].get(metric)
    if v is None:
        return ""
    text = fmt(v)
    if metric in entry["std"] and (entry["role"] == "model" or entry["std"][metric] > 0):
        text += f" ± {fmt(entry['std'][metric])} ({entry['n_seeds']} seeds)"
    if metric in entry["ci"]:
        lo, hi = entry["ci"][metric]
        text += f" [{fmt(lo)}, {fmt(hi)}]"
    return text


def _row_label(entry: dict) -> str:
    role = entry["role"]
    label = fmt(entry["label"])
    return label if role == "model" else f"{label} *({role})*"


def markdown_table(entries: list[dict], metrics: list[str], floors: list[dict]) -> str:
    cols = ["row", *metrics, "flags"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for e in entries:
        worse, near = below_floor(e, floors)
        flag = "; ".join(([f"⚠ below floor: {', '.join(worse)}"] if worse else [])
                         + ([f"below floor within intervals: {', '.join(near)}"] if near else []))
        lines.append("| " + " | ".join([_row_label(e), *(cell(e, m) for m in metrics), flag]) + " |")
    return "\n".join(lines)


def protocol_slug(task: str, stage: str, protocol: str) -> str:
    return f"{task}-{stage}-{hashlib.sha256(protocol.encode()).hexdigest()[:8]}"


def short_title(task: str, first: ResultRecord) -> str:
    p = first.protocol
    what = "reconstruction" if task == "reconstruction" else "generation"
    return f"{p.dataset}/{p.split}, n={p.num_images}, {p.resolution} px: {what}"


def table_metrics(g: pd.DataFrame, task: str) -> list[str]:
    preferred = TOKENIZER_COLUMNS if task == "reconstruction" else GENERATOR_COLUMNS
    present = [c for c in preferred if c in g.columns and g[c].apply(_finite).any()]
    return present


def primary_metric(columns: list[str]) -> str | None:
    return next((c for c in PRIMARY if c in columns), None)


def groups(df: pd.DataFrame):
    """(task, stage, protocol, entries in display order, metrics) per protocol table."""
    if df.empty:
        return
    latest = df[df["latest"]]
    order = {"reconstruction": 0, "generation": 1}
    keys = sorted(latest.groupby(["task", "stage", "protocol"]).groups, key=lambda k: (order.get(k[0], 2), k))
    for task, stage, protocol in keys:
        g = latest[(latest.task == task) & (latest.stage == stage) & (latest.protocol == protocol)]
        metrics = table_metrics(g, task)
        entries = aggregate(g, metrics)
        entries += discrete_entries(entries, metrics)
        key = primary_metric(metrics)

        def sort_key(e, key=key):
            v = e["values"].get(key) if key else None
            v = (v if lower_is_better(key) else -v) if v is not None else math.inf
            return (ROLE_ORDER.get(e["role"], 1), v, e["label"])

        yield task, stage, protocol, sorted(entries, key=sort_key), metrics


# ---------------------------------------------------------------------- plots


def _save_figure(fig, path: Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))


ROLE_COLOURS = {"model": "#4C72B0", "baseline": "#8C8C8C", "floor": "#C44E52", "ceiling": "#55A868"}


def plot_protocol(entries: list[dict], metrics: list[str], title: str, path: Path) -> Path | None:
    """One figure per protocol: a dot per row with its 95% interval, one panel per headline metric.

    Dots and interval bars instead of bars from zero: the axis spans the data, so small differences
    stay visible and the bars say whether they are real.
    """
    panels = [m for m in metrics if m not in ("bits_per_image", "latency_s", "throughput_img_s", "codebook_usage")
              and any(m in e["values"] for e in entries)][:4]
    speed = next((k for k in THROUGHPUT_KEYS if any(k in e["values"] for e in entries)), None)
    quality = primary_metric(metrics)
    scatter = speed is not None and quality is not None
    if not panels:
        return None
    import matplotlib  # heavy, and choosing the Agg backend is process-wide: only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels) + int(scatter)
    fig, axes = plt.subplots(1, n, figsize=(3.3 * n + 1.5, 0.35 * len(entries) + 1.4), squeeze=False)
    labels = [e["label"] for e in entries]
    ys = np.arange(len(entries))[::-1]
    for ax, metric in zip(axes[0], panels):
        for y, e in zip(ys, entries):
            v = e["values"].get(metric)
            if v is None:
                continue
            colour = ROLE_COLOURS.get(e["role"], "#4C72B0")
            if metric in e["ci"]:
                lo, hi = e["ci"][metric]
                ax.errorbar([v], [y], xerr=[[v - lo], [hi - v]], fmt="o", color=colour, capsize=3, ms=4)
            else:
                ax.plot([v], [y], "o", color=colour, ms=4)
        ax.set_yticks(ys)
        ax.set_yticklabels(labels if ax is axes[0][0] else [""] * len(labels), fontsize=7)
        ax.set_title(f"{metric} ({'lower' if lower_is_better(metric) else 'higher'} is better)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.15)
    if scatter:
        ax = axes[0][-1]
        for e in entries:
            if speed in e["values"] and quality in e["values"]:
                ax.plot(e["values"][speed], e["values"][quality], "o", color=ROLE_COLOURS.get(e["role"], "#4C72B0"))
                ax.annotate(e["label"], (e["values"][speed], e["values"][quality]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(f"{speed} (higher is better)", fontsize=7)
        ax.set_ylabel(f"{quality} (lower is better)", fontsize=7)
        ax.set_title(f"{quality} vs speed", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    try:
        return _save_figure(fig, path)
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------- build


def _below_table(entries: list[dict], metrics: list[str], protocol: str) -> list[str]:
    lines = [f"<sub>Protocol: `{protocol}`</sub>", ""]
    noise = next((r.noise_floor for e in entries for r in e["records"] if r.noise_floor), None)
    if noise:
        vals = ", ".join(f"{k} {fmt(v)}" for k, v in noise.items() if _finite(v) and k != "num_images")
        lines += [f"- Noise floor (real vs real, {noise.get('sets', '?')}, n={noise.get('num_images', '?')}): {vals}. "
                  "Two real image sets of this size are this far apart."]
    else:
        lines += ["- Noise floor: not recorded by these records (older schema)."]
    sig_lines = []
    for m in metrics:
        sep, within = significant_pairs(entries, m)
        if sep or within:
            part = "; ".join(f"{a} > {b}" for a, b in sep) or "none"
            sig_lines.append(f"  - `{m}`: {part}" + (f" ({len(within)} more pairs: intervals overlap)" if within else ""))
    if sig_lines:
        lines += ["- Differences outside both 95% intervals (better > worse; pairs with a trained row):", *sig_lines]
    notes = sorted({n for e in entries for r in e["records"] for n in (r.notes or [])})
    lines += [f"- Note: {n}" for n in notes]
    prov = []
    for e in entries:
        if e["role"] != "model" or e["label"].endswith("(discrete only)"):
            continue
        r = e["records"][0]
        prov.append(f"{e['label']}: trained at {r.trained_commit or 'unknown commit (artifact does not say)'}, "
                    f"scored at {r.git_commit or '?'}")
    if prov:
        lines += ["- Provenance: " + "; ".join(prov)]
    return lines + [""]


def build_leaderboard(results_dir: str | Path = "results", plots: bool = True) -> dict[str, Any]:
    """Write leaderboard.md, leaderboard.csv and plots; return paths and the skipped files."""
    results_dir = Path(results_dir)
    df, bad = records_frame(results_dir)
    md = ["# hartkit leaderboard", "",
          f"Generated by `python -m hartkit.tools.leaderboard --results {results_dir}` from "
          f"{len(df)} records under `{results_dir / 'records'}`. One table per protocol (its full text below "
          "the table). Rows: trained models, and the baselines of the same protocol (*ceiling* first, *floor* "
          "last); ⚠ marks a trained row worse than a floor beyond both intervals. Cells: value [95% bootstrap interval over images]; "
          "several seeds of one config: mean ± std (k seeds) [union of the seeds' intervals]. `fid`/`kid` are "
          "Inception-v3 (clean-fid); `fd_*`/`kid_*` name their feature space. `leaderboard.csv` keeps every run "
          "(column `latest`), every metric, interval and per-category number.", ""]
    plot_paths: list[Path] = []
    titles = {"reconstruction": "Tokenizers (reconstruction)", "generation": "Generators"}
    current_task = None
    for task, stage, protocol, entries, metrics in groups(df):
        if task != current_task:
            md += [f"## {titles.get(task, task)}", ""]
            current_task = task
        title = short_title(task, entries[0]["records"][0])
        floors = [e for e in entries if e["role"] == "floor"]
        pid = hashlib.sha256(protocol.encode()).hexdigest()[:8]  # tells apart protocols with the same short title
        md += [f"### {title} (`{stage}`, protocol `{pid}`)", "", markdown_table(entries, metrics, floors), ""]
        md += _below_table(entries, metrics, protocol)
        grids = grid_links(results_dir, stage, entries)
        if grids:
            md += ["Grids: " + ", ".join(f"[{name}]({rel})" for name, rel in grids), ""]
        if plots:
            slug = protocol_slug(task, stage, protocol)
            path = plot_protocol(entries, metrics, title, results_dir / "plots" / f"{slug}.png")
            if path is not None:
                plot_paths.append(path)
                md += [f"![{title}](plots/{path.name})", ""]
    if df.empty:
        md += ["No records yet: run `python run.py` to create some.", ""]
    if bad:
        md += ["## Skipped records", "", "These files are not valid records and were left out:", ""]
        md += [f"- `{p.relative_to(results_dir) if p.is_relative_to(results_dir) else p}`: {why}" for p, why in bad]
        md.append("")
    md_path = atomic_write_text(results_dir / "leaderboard.md", "\n".join(md))
    removed = remove_stale_plots(results_dir / "plots", plot_paths) if plots else []
    frame = df.drop(columns=["_record"]) if "_record" in df else df
    csv_cols = [c for c in META_COLUMNS if c in frame.columns] + sorted(
        c for c in frame.columns if c not in META_COLUMNS and c != "file")
    csv_text = frame[csv_cols].to_csv(index=False) if not frame.empty else ",".join(META_COLUMNS) + "\n"
    csv_path = atomic_write_text(results_dir / "leaderboard.csv", csv_text)
    log.info("leaderboard: %d records (%d skipped) -> %s, %s, %d plots (%d stale removed)", len(df), len(bad),
             md_path, csv_path, len(plot_paths), len(removed))
    return {"markdown": md_path, "csv": csv_path, "plots": plot_paths, "skipped": bad, "records": len(df),
            "removed_plots": removed}


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_+." else "_" for c in str(text))


def grid_links(results_dir: Path, stage: str, entries: list[dict]) -> list[tuple[str, str]]:
    """Labelled image grids the evaluation stages wrote for this table's trained rows (``grids/<stage>-<label>-<data>.png``)."""
    out = []
    for e in entries:
        if e["role"] != "model" or e["label"].endswith("(discrete only)"):
            continue
        name = f"grids/{stage}-{_safe(e['label'])}-{_safe(e['records'][0].protocol.dataset)}.png"
        if (results_dir / name).is_file():
            out.append((e["label"], name))
    return out


def remove_stale_plots(plot_dir: Path, keep: list[Path]) -> list[Path]:
    """Delete PNGs under ``plot_dir`` that this build did not write (plots of protocols no record has now)."""
    if not plot_dir.is_dir():
        return []
    kept = {p.resolve() for p in keep}
    stale = [p for p in plot_dir.glob("*.png") if p.resolve() not in kept]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
