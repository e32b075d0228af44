"""Train the embedded evaluator (the model shipped in hartkit/eval/embedded/); the command-line part of
``hartkit.eval.train_embedded``, whose ``train(args)`` does the work:

    python -m hartkit.tools.train_embedded            # the shipped weights (the defaults below)
    python -m hartkit.tools.train_embedded --steps 50 --out /tmp/emb   # a quick smoke run
    (or: hartkit-train-embedded ...)
"""

from __future__ import annotations

import argparse

from hartkit.eval import train_embedded as lib
from hartkit.eval.embedded.model import CONFIG_PATH, PACKAGE_DIR
from hartkit.utils.logging import setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hartkit.tools.train_embedded", description=lib.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--train-size", type=int, default=30000, help="synthscenes train scenes (indices 0..N-1)")
    p.add_argument("--photos", type=int, default=2000, help="captioned photo crops added to training (0: none)")
    p.add_argument("--val-size", type=int, default=1000, help="validation scenes (train split from VAL_OFFSET)")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--negatives", type=int, default=2, help="hard negative captions per sample (0: none)")
    p.add_argument("--cell-weight", type=float, default=2.0, help="weight of the per-cell layout cross-entropy")
    p.add_argument("--shape-weight", type=float, default=2.0,
                   help="weight of the shape-or-empty term within the per-cell loss (colour and size: 1)")
    p.add_argument("--layout-weight", type=float, default=1.0,
                   help="weight of the auxiliary layout read-out from both embeddings (0: none)")
    p.add_argument("--layout-scale", type=float, default=8.0,
                   help="the read-out sees the unit-norm embedding times this")
    p.add_argument("--blur-prob", type=float, default=0.0,
                   help="fraction of training images blurred (area down to 24..48 px, bicubic up)")
    p.add_argument("--model-config", default=str(CONFIG_PATH),
                   help="model json (default: the shipped one; others only to try architectures)")
    p.add_argument("--cache-dir", default=None, help="keep rendered scenes here as tensors (None: render again)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(PACKAGE_DIR), help="folder for weights.safetensors/.sha256 + quality.json")
    return p


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    lib.train(build_parser().parse_args(argv))



if __name__ == "__main__":
    main()
