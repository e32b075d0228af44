"""Research probe: train one tokenizer recipe with the real trainer, report test PSNR per decode path.

Cheaper than a whole ``run.py ... stages=[tokenizer,recon_eval]`` (no FD features, no baselines), so
recipes can be compared quickly; the numbers that go into tables come from run.py records.

    python scripts/research/tokenizer_probe.py --name base tokenizer=continuous threads=1
    python scripts/research/tokenizer_probe.py --name lr4e-3 tokenizer=discrete tokenizer.train.lr=4e-3

Each run appends one JSON line to ``--log`` (default results/research/tokenizer_probe.jsonl).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def psnr_per_image(a01: torch.Tensor, b01: torch.Tensor) -> torch.Tensor:
    mse = (a01 - b01).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--eval-n", type=int, default=500)
    parser.add_argument("--log", default=str(ROOT / "results/research/tokenizer_probe.jsonl"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    import logging
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from hartkit.data import ImageTensorDataset, build_dataset, collate
    from hartkit.engine.rng import reseed
    from hartkit.pipeline import compose_run_config
    from hartkit.stages.tokenizer import init_from, resolve_init_from
    from hartkit.tokenizers import build_tokenizer
    from hartkit.tokenizers.trainer import train_tokenizer
    from hartkit.utils.env import git_commit

    cfg = compose_run_config(args.overrides)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    reseed(cfg.seed, "tokenizer", "init")
    model = build_tokenizer(cfg.tokenizer)
    if cfg.tokenizer.init_from:
        init_from(model, resolve_init_from(cfg))
        if cfg.tokenizer.freeze_quantizer_path:
            model.freeze_quantizer_path()
    train_set = ImageTensorDataset(build_dataset(cfg.data, "train"))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train_tokenizer(model, train_set, cfg.tokenizer, tmp, torch.device("cpu"), seed=cfg.seed,
                                 collate_fn=collate)
    train_s = time.perf_counter() - t0
    model = result.model.eval()
    test = ImageTensorDataset(build_dataset(cfg.data, "test"))
    n = min(args.eval_n, len(test))
    paths = [("full", True)] + ([("discrete_only", False)] if model.kind == "hybrid" else [])
    scores: dict[str, list[torch.Tensor]] = {name: [] for name, _ in paths}
    with torch.no_grad():
        for start in range(0, n, 100):
            img = torch.stack([test[i]["image"] for i in range(start, min(n, start + 100))])
            tokens = model.encode(img)
            for name, use_residual in paths:
                rec = model.decode(tokens, use_residual=use_residual)
                scores[name].append(psnr_per_image((img + 1) / 2, (rec.clamp(-1, 1) + 1) / 2))
    row = {"name": args.name, "overrides": args.overrides, "train_seconds": round(train_s, 1),
           "threads": torch.get_num_threads(), "eval_n": n, "commit": git_commit(), "host": platform.node(),
           "final": {k: v for k, v in result.summary.items() if k.startswith("final_")}}
    for name, values in scores.items():
        v = torch.cat(values)
        row[f"psnr_{name}"] = round(float(v.mean()), 3)
        row[f"psnr_{name}_se"] = round(float(v.std() / v.numel() ** 0.5), 3)
    print(json.dumps(row))
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    with open(args.log, "a") as fh:
        fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
