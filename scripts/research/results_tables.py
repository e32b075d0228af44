"""Print the tables of results/README.md from the committed records (so no number in them is typed by hand).

    python scripts/research/results_tables.py            # reads results/records

Rows are grouped by label, as the leaderboard groups one config's seeds (``hartkit.eval.leaderboard``): a row
of k > 1 seeds shows ``mean ± std (k)`` and the union of its seeds' 95% intervals, and ``seeds`` lists the
seeds. The leaderboard keys a row by config hash as well; here records of one label whose configs differ in
more than the seed are still one row, and the keys that differ are printed under the table, so that a reader
sees what was pooled (records of earlier commits lack config keys added since, at their defaults).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hartkit.eval.leaderboard import (
    RUN_ONLY_KEYS,
    RUN_ONLY_NESTED,
    aggregate,
    discrete_entries,
    records_frame,
)
from hartkit.utils.experiment_logger import flatten_config

ROOT = Path(__file__).resolve().parents[2]

RECON = [("psnr", "PSNR", 2), ("rfd_embedded", "rFD", 1), ("ssim", "SSIM", 3), ("prompt_accuracy", "prompt acc.", 3),
         ("prompt_accuracy/shape", "/shape", 3), ("class_accuracy", "class acc.", 3)]
GEN = [("fd_embedded", "FD", 1), ("clip_score_embedded", "CLIP score", 1), ("prompt_accuracy", "prompt acc.", 3),
       ("prompt_accuracy/shape", "/shape", 3), ("prompt_accuracy/color", "/color", 3),
       ("prompt_accuracy/position", "/position", 3), ("class_accuracy", "class acc.", 3)]
ORDER = {"ceiling": 0, "model": 1, "baseline": 1, "floor": 2}


def _cell(entry: dict, key: str, digits: int) -> str:
    value = entry["values"].get(key)
    if value is None:
        return "–"
    text = f"{value:.{digits}f}"
    if key in entry["std"]:
        text += f" ± {entry['std'][key]:.{digits}f}"
    ci = entry["ci"].get(key)
    if ci and all(c == c for c in ci):  # no NaN
        text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return text


# what a stage's numbers depend on; eval.baselines only adds baseline records
STAGE_SECTIONS = {"recon_eval": ("data.", "tokenizer.", "eval."), "gen_eval": ("data.", "tokenizer.", "ar.", "eval.")}
NOT_MEASURED = ("eval.baselines",)


def _pooled_differences(records, stage: str) -> list[str]:
    """Config keys that a stage depends on whose values differ among the records pooled into one row. A key
    absent from some records (added to the config after they were written, at a default that keeps the old
    behaviour) is not a difference, nor is None against absent."""
    flat = [flatten_config({k: v for k, v in (r.config or {}).items() if k not in RUN_ONLY_KEYS}) for r in records]
    keys = set.intersection(*(set(f) for f in flat)) - set(RUN_ONLY_NESTED) - set(NOT_MEASURED)
    keys = sorted(k for k in keys if k.startswith(STAGE_SECTIONS[stage]))
    return [k for k in keys if len({json.dumps(f[k], default=str) for f in flat}) > 1]


def table(rows, stage: str, columns) -> list[str]:
    """Markdown lines of one stage's table from the latest records of one protocol dataset."""
    rows = rows[rows["stage"] == stage].copy()
    rows["config_hash"] = ""  # one row per label (see the module docstring)
    metrics = [c[0] for c in columns]
    entries = aggregate(rows, metrics)
    entries += discrete_entries(entries, metrics)
    primary = columns[0][0]
    entries.sort(key=lambda e: (ORDER.get(e["role"], 1), -(e["values"].get(primary) or 0) if stage == "recon_eval"
                                else (e["values"].get(primary) or 0)))
    out = ["| row | seeds | " + " | ".join(c[1] for c in columns) + " |", "|---|---|" + "---|" * len(columns)]
    notes = []
    for e in entries:
        seeds = sorted({(r.config or {}).get("seed") for r in e["records"]}, key=str)
        seed_text = ", ".join(str(s) for s in seeds) if e["role"] == "model" else "–"
        out.append(f"| {e['label']} | {seed_text} | " + " | ".join(_cell(e, k, d) for k, _, d in columns) + " |")
        diff = _pooled_differences(e["records"], stage) if len(e["records"]) > 1 and e["role"] == "model" else []
        if diff and not e["label"].endswith("(discrete only)"):
            notes.append(f"- `{e['label']}` pools records whose configs differ in: {', '.join(diff)}")
    return out + ([""] + notes if notes else [])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", default=str(ROOT / "results"), help="folder holding records/")
    args = parser.parse_args(argv)
    df, _bad = records_frame(args.results)
    df["dataset"] = [r.protocol.dataset for r in df["_record"]]
    # per (label, seed) the newest record (records_frame sorts newest first)
    df = df.drop_duplicates(subset=["stage", "dataset", "label", "seed"], keep="first")
    for dataset in sorted(df["dataset"].unique(), key=lambda d: (len(d), d)):
        mine = df[df["dataset"] == dataset]
        for stage, title, columns in (("recon_eval", "Reconstruction", RECON), ("gen_eval", "Generation", GEN)):
            if (mine["stage"] == stage).any():
                print(f"### {title} ({dataset})\n")
                print("\n".join(table(mine, stage, columns)) + "\n")


if __name__ == "__main__":
    main()
