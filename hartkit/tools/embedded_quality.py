"""Benchmark of the embedded evaluator itself on real synthscenes renders; the command-line part of
``hartkit.eval.embedded.quality`` (what it measures: that module's docstring):

    python -m hartkit.tools.embedded_quality                 # shipped weights, test split, print the numbers
    python -m hartkit.tools.embedded_quality --write         # ... and record them in quality.json ("test")
    (or: hartkit-embedded-quality ...)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from hartkit.eval.embedded import quality as lib
from hartkit.eval.embedded.model import PACKAGE_DIR, SHA256_PATH
from hartkit.utils.io import atomic_write_json


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m hartkit.tools.embedded_quality", description=lib.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None, help="weights file (default: the shipped, sha256-checked one)")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--size", type=int, default=1000, help="scenes (retrieval candidates; FD uses two halves)")
    p.add_argument("--fd-n", type=int, default=500)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--write", action="store_true", help="record the numbers in quality.json next to the weights")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    evaluator = lib.EmbeddedEvaluator(args.weights)
    images, prompts = lib.load_split(args.split, args.size, args.resolution, args.seed, args.cache_dir)
    result = lib.measure_quality(evaluator, images, prompts, fd_n=args.fd_n)
    result["floors_prompt_accuracy"] = lib.baseline_prompt_accuracy(evaluator, images, prompts)
    result = {
        "command": " ".join(["python -m hartkit.tools.embedded_quality", *(argv if argv is not None else sys.argv[1:])]),
        "sha256": evaluator.weights_hash,
        "split": (f"synthscenes {args.split} split" + (", scenes from VAL_OFFSET" if args.split == "val" else "")
                  + f", {len(prompts)} scenes at {args.resolution} px, seed {args.seed}"),
        "prompt_accuracy_protocol": lib.PromptAccuracy.protocol,
        **result,
    }
    print(json.dumps(result, indent=2))
    if args.write:
        folder = Path(args.weights).parent if args.weights else PACKAGE_DIR
        path = folder / "quality.json"
        report = json.loads(path.read_text()) if path.exists() else {}
        if args.weights is None and report.get("sha256") not in (None, evaluator.weights_hash):
            raise SystemExit(f"{path} describes other weights ({report['sha256'][:16]}...), not "
                             f"{SHA256_PATH.name}'s {evaluator.weights_hash[:16]}...")
        report[args.split] = result
        atomic_write_json(path, report)
    return result



if __name__ == "__main__":
    main()
