"""Steps per second of a small tokenizer training: 1 process vs torchrun with N processes, same global batch.

    python scripts/bench_ddp.py                      # 1 process (1 and 2 threads) vs 2 processes (1 thread each)
    python scripts/bench_ddp.py --steps 60 --batch-size 32 --nproc 2

Each configuration runs ``run.py stages=[tokenizer]`` in a fresh folder and reads
the training loop's own wall time from the finished artifact (``DONE`` summary),
so interpreter start-up and data generation are not counted. Prints a markdown
table and the machine's load average before and after (other processes on the
machine slow every row).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def overrides(args, work: Path, threads: int) -> list[str]:
    return [
        "stages=[tokenizer]", f"tokenizer={args.tokenizer}", f"data.resolution={args.resolution}",
        f"data.train_size={max(4 * args.batch_size, 64)}", "data.test_size=8",
        f"tokenizer.train.steps={args.steps}", f"tokenizer.train.batch_size={args.batch_size}",
        f"tokenizer.train.checkpoint_every={args.steps}", "tokenizer.train.warmup_steps=1",
        f"tokenizer.train.log_every={args.steps}", "tokenizer.train.grid_images=2",
        # rank-local usage counts would make the DDP run differ from the single-process one
        "tokenizer.quantizer.dead_code_reinit=false",
        f"threads={threads}", f"paths.results={work / 'results'}", f"paths.artifacts={work / 'artifacts'}",
        f"hydra.run.dir={work / 'hydra'}",
    ]


def run_one(args, nproc: int, threads: int, root: Path) -> dict:
    work = root / f"p{nproc}_t{threads}"
    work.mkdir(parents=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    if nproc == 1:
        cmd = [sys.executable, str(ROOT / "run.py")]
    else:
        torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
        cmd = [torchrun, "--standalone", f"--nproc_per_node={nproc}", str(ROOT / "run.py")]
    out = subprocess.run([*cmd, *overrides(args, work, threads)], cwd=work, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-4000:]}")
    [done] = glob.glob(str(work / "artifacts" / "tokenizer" / "*" / "DONE"))
    summary = json.loads(Path(done).read_text())
    wall = float(summary["wall_seconds_this_run"])
    return {"nproc": nproc, "threads": threads, "steps": int(summary["steps"]), "wall": wall,
            "steps_per_s": summary["steps"] / wall, "images_per_s": summary["steps"] * args.batch_size / wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", default="discrete")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch (split over the processes)")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the run folders (printed)")
    args = parser.parse_args(argv)
    if args.batch_size % args.nproc:
        parser.error(f"--batch-size {args.batch_size} must be divisible by --nproc {args.nproc}")

    root = Path(tempfile.mkdtemp(prefix="hartkit-bench-ddp-"))
    load_before = os.getloadavg()
    configs = [(1, 1), (1, args.nproc), (args.nproc, 1)]
    rows = [run_one(args, nproc, threads, root) for nproc, threads in configs]
    load_after = os.getloadavg()
    base = rows[0]["steps_per_s"]

    print(f"tokenizer={args.tokenizer}, {args.resolution} px, global batch {args.batch_size}, {args.steps} steps, "
          f"{os.cpu_count()} CPUs, torch gloo; load average before {load_before[0]:.2f}, after {load_after[0]:.2f}\n")
    print("| processes | threads/process | batch/process | steps/s | images/s | vs 1 process x 1 thread |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['nproc']} | {r['threads']} | {args.batch_size // r['nproc']} | {r['steps_per_s']:.2f} | "
              f"{r['images_per_s']:.1f} | {r['steps_per_s'] / base:.2f}x |")
    if args.keep:
        print(f"\nrun folders: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
