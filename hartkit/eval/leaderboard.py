"""Leaderboard: per-protocol tables and plots built from the result records.

    python -m hartkit.eval.leaderboard [--results results] [--no-plots]
    python run.py stages=[leaderboard]

Reads every record under ``<results>/records`` (``hartkit.records``), and
writes ``<results>/leaderboard.md``, ``<results>/leaderboard.csv`` and PNG plots
under ``<results>/plots/``. Rules:

- one table per (task, stage, protocol key): numbers measured under different
  protocols (dataset, split, image count, resolution, resize filter, feature
  extractor + weights hash, implementation) never share a column;
- a rerun of the same configuration replaces the older one: per (label,
  config hash) only the newest record is shown in the markdown tables; the CSV
  keeps every run with its run id and a ``latest`` flag, so history is not lost;
- a malformed record is reported by file name (log + a section of the
  markdown) and skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from hartkit.records import ResultRecord, iter_records
from hartkit.utils.io import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

# config keys that do not change what a run measures (left out of the config hash)
RUN_ONLY_KEYS = ("run_name", "paths", "logger", "stages", "resume", "retrain", "device", "threads", "kernels")

# preferred column order; lower is better for distances, higher for the rest
TOKENIZER_COLUMNS = ["rfid", "rfd_embedded", "rfd_clip", "rfd_dinov2", "psnr", "ssim", "codebook_usage", "perplexity",
                     "tokens_per_image", "bits_per_image", "parameters"]
GENERATOR_COLUMNS = ["fid", "fd_embedded", "fd_clip", "fd_dinov2", "clip_score", "clip_score_embedded",
                     "prompt_accuracy", "prompt_accuracy/shape", "prompt_accuracy/color", "parameters", "steps",
                     "latency_s", "throughput_img_s", "macs"]
PRIMARY = ["rfid", "rfd_embedded", "rfd_clip", "fid", "fd_embedded", "fd_clip"]  # sort key (ascending)
THROUGHPUT_KEYS = ["throughput_img_s", "throughput", "images_per_s", "img_per_s"]
COUNT_COLUMNS = ["num_images", "num_failed", "num_reference"]
META_COLUMNS = ["task", "stage", "protocol", "label", "run_id", "created", "config_hash", "latest", "git_commit"]


def config_hash_of(config: dict[str, Any]) -> str:
    """Hash of the parts of a resolved config that change results."""
    kept = {k: v for k, v in (config or {}).items() if k not in RUN_ONLY_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) or v is None


def record_row(path: Path, rec: ResultRecord) -> dict[str, Any]:
    row: dict[str, Any] = {
        "task": rec.protocol.task,
        "stage": rec.stage,
        "protocol": rec.protocol.key(),
        "label": rec.label,
        "run_id": rec.run_id,
        "created": rec.created,
        "config_hash": config_hash_of(rec.config),
        "git_commit": rec.git_commit,
        "file": str(path),
    }
    for k, v in (rec.model or {}).items():  # model facts: parameters, tokens, steps, latency, ...
        if _scalar(v):
            row[k] = v
    row.update(rec.metrics)  # a metric of the same name wins over a model fact
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
    df["latest"] = ~df.duplicated(subset=["task", "stage", "protocol", "label", "config_hash"], keep="first")
    return df.reset_index(drop=True), bad


def _is_summary_column(name: str, preferred: list[str]) -> bool:
    """Overall metrics go to the markdown; per-category ones (``fd_embedded/animals``) stay in the CSV."""
    return "/" not in name or name in preferred


def table_columns(group: pd.DataFrame, task: str) -> list[str]:
    preferred = TOKENIZER_COLUMNS if task == "reconstruction" else GENERATOR_COLUMNS
    present = [c for c in group.columns if c not in META_COLUMNS and c != "file" and group[c].notna().any()]
    ordered = [c for c in preferred if c in present]
    rest = sorted(c for c in present if c not in ordered and c not in COUNT_COLUMNS and _is_summary_column(c, preferred))
    counts = [c for c in COUNT_COLUMNS if c in present]
    return ["label", *ordered, *rest, *counts, "run_id"]


def primary_metric(columns: list[str]) -> str | None:
    return next((c for c in PRIMARY if c in columns), None)


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


def markdown_table(df: pd.DataFrame, columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(fmt(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def protocol_slug(task: str, stage: str, protocol: str) -> str:
    return f"{task}-{stage}-{hashlib.sha256(protocol.encode()).hexdigest()[:8]}"


def groups(df: pd.DataFrame):
    """(task, stage, protocol, latest rows sorted by the primary metric) per protocol table."""
    if df.empty:
        return
    latest = df[df["latest"]]
    order = {"reconstruction": 0, "generation": 1}
    keys = sorted(latest.groupby(["task", "stage", "protocol"]).groups, key=lambda k: (order.get(k[0], 2), k))
    for task, stage, protocol in keys:
        g = latest[(latest.task == task) & (latest.stage == stage) & (latest.protocol == protocol)]
        cols = table_columns(g, task)
        key = primary_metric(cols)
        g = g.sort_values([key, "label"] if key else ["label"], kind="stable")
        yield task, stage, protocol, g, cols


# ---------------------------------------------------------------------- plots


def _save_figure(fig, path: Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))


def plot_tokenizers(g: pd.DataFrame, cols: list[str], title: str, path: Path) -> Path | None:
    """Bar chart: the primary rFD/rFID and PSNR of each tokenizer under one protocol."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [c for c in (primary_metric(cols), "psnr", "ssim") if c and c in g and g[c].notna().any()]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1, 3.2), squeeze=False)
    for ax, metric in zip(axes[0], panels):
        sub = g[g[metric].notna()]
        ax.bar(sub["label"].astype(str), sub[metric].astype(float), color="#4C72B0")
        ax.set_title(metric + (" (lower is better)" if metric in PRIMARY else " (higher is better)"), fontsize=9)
        ax.tick_params(axis="x", rotation=30, labelsize=8)
    fig.suptitle(title, fontsize=8)
    try:
        return _save_figure(fig, path)
    finally:
        plt.close(fig)


def plot_quality_vs_throughput(g: pd.DataFrame, cols: list[str], title: str, path: Path) -> Path | None:
    """Scatter: primary FD/FID against throughput (images/s), one point per generator."""
    quality = primary_metric(cols)
    speed = next((c for c in THROUGHPUT_KEYS if c in g and g[c].notna().any()), None)
    if quality is None or speed is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = g[g[quality].notna() & g[speed].notna()]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.scatter(sub[speed].astype(float), sub[quality].astype(float), color="#DD8452")
    for _, row in sub.iterrows():
        ax.annotate(str(row["label"]), (float(row[speed]), float(row[quality])), fontsize=8,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"{speed} (higher is better)")
    ax.set_ylabel(f"{quality} (lower is better)")
    ax.set_title(title, fontsize=8)
    try:
        return _save_figure(fig, path)
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------- build


def build_leaderboard(results_dir: str | Path = "results", plots: bool = True) -> dict[str, Any]:
    """Write leaderboard.md, leaderboard.csv and plots; return paths and the skipped files."""
    results_dir = Path(results_dir)
    df, bad = records_frame(results_dir)
    md = ["# hartkit leaderboard", "",
          f"Generated by `python -m hartkit.eval.leaderboard --results {results_dir}` from "
          f"{len(df)} records under `{results_dir / 'records'}`. One table per protocol: numbers from "
          "different protocols never share a column. Per (label, config) only the newest run is shown; "
          "`leaderboard.csv` lists every run (column `latest`) and the per-category numbers. Distances "
          "(fid, fd_*, rfid, rfd_*) are lower-is-better; `fid` is always Inception-v3 (clean-fid).", ""]
    plot_paths: list[Path] = []
    titles = {"reconstruction": "Tokenizers (reconstruction)", "generation": "Generators"}
    current_task = None
    for task, stage, protocol, g, cols in groups(df):
        if task != current_task:
            md += [f"## {titles.get(task, task)}", ""]
            current_task = task
        md += [f"### `{stage}`: {protocol}", "", markdown_table(g, cols), ""]
        if plots:
            slug = protocol_slug(task, stage, protocol)
            plot_fn = plot_tokenizers if task == "reconstruction" else plot_quality_vs_throughput
            name = "tokenizers" if task == "reconstruction" else "quality_vs_throughput"
            path = plot_fn(g, cols, protocol, results_dir / "plots" / f"{name}-{slug}.png")
            if path is not None:
                plot_paths.append(path)
                md += [f"![{name}](plots/{path.name})", ""]
    if df.empty:
        md += ["No records yet: run `python run.py` to create some.", ""]
    if bad:
        md += ["## Skipped records", "", "These files are not valid records and were left out:", ""]
        md += [f"- `{p.relative_to(results_dir) if p.is_relative_to(results_dir) else p}`: {why}" for p, why in bad]
        md.append("")
    md_path = atomic_write_text(results_dir / "leaderboard.md", "\n".join(md))
    csv_cols = [c for c in META_COLUMNS if c in df.columns] + sorted(
        c for c in df.columns if c not in META_COLUMNS and c != "file")
    csv_text = df[csv_cols].to_csv(index=False) if not df.empty else ",".join(META_COLUMNS) + "\n"
    csv_path = atomic_write_text(results_dir / "leaderboard.csv", csv_text)
    log.info("leaderboard: %d records (%d skipped) -> %s, %s, %d plots", len(df), len(bad), md_path, csv_path,
             len(plot_paths))
    return {"markdown": md_path, "csv": csv_path, "plots": plot_paths, "skipped": bad, "records": len(df)}


def main(argv: list[str] | None = None) -> None:
    from hartkit.utils.logging import setup_logging

    parser = argparse.ArgumentParser(description="Build results/leaderboard.md and .csv (and plots) from the records.")
    parser.add_argument("--results", default="results", help="results folder holding records/ (default: results)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)
    setup_logging()
    out = build_leaderboard(args.results, plots=not args.no_plots)
    print(f"wrote {out['markdown']} and {out['csv']} ({out['records']} records, {len(out['skipped'])} skipped)")
    for path, why in out["skipped"]:
        print(f"skipped malformed record {path}: {why}")


if __name__ == "__main__":
    main()
