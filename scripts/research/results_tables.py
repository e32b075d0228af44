"""Print the tables of results/README.md from the committed records (so no number in them is typed by hand).

    python scripts/research/results_tables.py            # reads results/records
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

RECON = [("psnr", "PSNR", 2), ("rfd_embedded", "rFD", 1), ("ssim", "SSIM", 3), ("prompt_accuracy", "prompt acc.", 3),
         ("prompt_accuracy/shape", "/shape", 3), ("class_accuracy", "class acc.", 3)]
GEN = [("fd_embedded", "FD", 1), ("clip_score_embedded", "CLIP score", 1), ("prompt_accuracy", "prompt acc.", 3),
       ("prompt_accuracy/shape", "/shape", 3), ("prompt_accuracy/color", "/color", 3),
       ("prompt_accuracy/position", "/position", 3), ("class_accuracy", "class acc.", 3)]
ORDER = {"ceiling": 0, "model": 1, "baseline": 1, "floor": 2}


def _cell(rec: dict, key: str, digits: int) -> str:
    value = rec["metrics"].get(key)
    if value is None:
        return "–"
    ci = (rec.get("intervals") or {}).get(key)
    text = f"{value:.{digits}f}"
    if ci and all(c == c for c in ci):  # no NaN
        text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return text


def _rows(stage: str, records: list[dict], columns) -> list[str]:
    seen, rows = set(), []
    for rec in records:
        if rec["stage"] != stage or rec["label"] in seen:
            continue
        seen.add(rec["label"])
        role = rec.get("role", "model")
        rows.append((role, rec["label"], rec))
        if stage == "recon_eval" and any(k.endswith("_discrete") for k in rec["metrics"]):
            disc = {"metrics": {k: rec["metrics"].get(f"{k}_discrete") for k, _, _ in columns},
                    "intervals": {k: (rec.get("intervals") or {}).get(f"{k}_discrete") for k, _, _ in columns}}
            rows.append((role, rec["label"] + ", discrete only", disc))
    primary = columns[0][0]
    rows.sort(key=lambda r: (ORDER.get(r[0], 1), -(r[2]["metrics"].get(primary) or 0) if stage == "recon_eval"
                             else (r[2]["metrics"].get(primary) or 0)))
    out = ["| row | " + " | ".join(c[1] for c in columns) + " |", "|---|" + "---|" * len(columns)]
    for _role, label, rec in rows:
        out.append(f"| {label} | " + " | ".join(_cell(rec, k, d) for k, _, d in columns) + " |")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", default=str(ROOT / "results" / "records"))
    args = parser.parse_args(argv)
    records = [json.loads(p.read_text()) for p in sorted(Path(args.records).rglob("*.json"))]
    records.sort(key=lambda r: r.get("created", ""), reverse=True)  # newest record of a label wins
    datasets = sorted({(r.get("protocol") or {}).get("dataset", "?") for r in records}, key=lambda d: (len(d), d))
    for dataset in datasets:  # one pair of tables per protocol dataset (e.g. synthscenes[backgrounds=gradient])
        mine = [r for r in records if (r.get("protocol") or {}).get("dataset", "?") == dataset]
        for stage, title, columns in (("recon_eval", "Reconstruction", RECON), ("gen_eval", "Generation", GEN)):
            if any(r["stage"] == stage for r in mine):
                print(f"### {title} ({dataset})\n")
                print("\n".join(_rows(stage, mine, columns)) + "\n")


if __name__ == "__main__":
    main()
