"""One markdown row per record: the research tables whose rows are single runs (seed series, crossed configs).

    python scripts/research/record_rows.py results results/research/seed_cross results/research/gradient_seeds \
        --dataset 'synthscenes[backgrounds=gradient]' --checkpoint discrete-a7b807cdf1 \
        --metrics fd_embedded prompt_accuracy/main_position prompt_accuracy/main_color

Rows are sorted by (label, tokenizer checkpoint, seed); each value shows its 95% interval from the record. A
last line gives, per metric, the mean and standard deviation over the model rows (the seed-to-seed spread),
so that no number in such a table is typed by hand.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from hartkit.records import read_record


def _cell(record, key: str, digits: int) -> str:
    value = record.metrics.get(key)
    if value is None:
        return "–"
    low_high = (record.intervals or {}).get(key)
    text = f"{value:.{digits}f}"
    return text + (f" [{low_high[0]:.{digits}f}, {low_high[1]:.{digits}f}]" if low_high else "")


def _records(folder: str) -> list:
    root = Path(folder) / "records" if (Path(folder) / "records").is_dir() else Path(folder)
    return [read_record(p) for p in sorted(root.rglob("*.json"))]


def _checkpoint(record) -> str:
    return str(((record.config or {}).get("tokenizer") or {}).get("checkpoint"))


def rows(folders: list[str], metrics: list[str], digits: int = 3, dataset: str | None = None,
         checkpoint: str | None = None, stage: str = "gen_eval") -> list[str]:
    models = [r for f in folders for r in _records(f) if r.role == "model" and r.stage == stage
              and (dataset is None or r.protocol.dataset == dataset)
              and (checkpoint is None or checkpoint in _checkpoint(r))]

    def key(r):
        return (r.label, _checkpoint(r), (r.config or {}).get("seed", 0))

    out = ["| label | tokenizer checkpoint | seed | " + " | ".join(metrics) + " |",
           "|---|---|---:|" + "---:|" * len(metrics)]
    for r in sorted(models, key=key):
        label, checkpoint, seed = key(r)
        out.append(f"| {label} | {Path(checkpoint).name} | {seed} | "
                   + " | ".join(_cell(r, m, digits) for m in metrics) + " |")
    spread = []
    for m in metrics:
        values = [r.metrics[m] for r in models if r.metrics.get(m) is not None]
        if len(values) > 1:
            spread.append(f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}")
        else:
            spread.append("–")
    out.append(f"| mean ± std over {len(models)} runs | | | " + " | ".join(spread) + " |")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="results folders (holding records/) or folders of record files")
    parser.add_argument("--metrics", nargs="+", default=["fd_embedded", "prompt_accuracy/main_position"])
    parser.add_argument("--digits", type=int, default=3)
    parser.add_argument("--dataset", help="only records of this protocol dataset, e.g. 'synthscenes[backgrounds=gradient]'")
    parser.add_argument("--checkpoint", help="only records whose tokenizer.checkpoint contains this text")
    parser.add_argument("--stage", default="gen_eval", choices=["gen_eval", "recon_eval"])
    args = parser.parse_args(argv)
    print("\n".join(rows(args.folders, args.metrics, args.digits, args.dataset, args.checkpoint, args.stage)))


if __name__ == "__main__":
    main()
