"""Training throughput of the default tokenizer and generator, against plain eager fp32 in the same run.

    python -m hartkit.tools.bench_train                    # all variants, default config
    python -m hartkit.tools.bench_train --steps 30 --out results/bench_train.md
    python -m hartkit.tools.bench_train tokenizer=discrete ar.depth=6   # any run.py overrides

For each variant one fresh model (same seed) runs ``--warmup`` untimed steps
(torch.compile's compilation happens there) and ``--steps`` timed training
steps (forward, loss, backward, clip, optimizer) on batches that are already
tensors; images/s are printed next to the ratio to the baseline, which is the
same model in eager fp32 with torch's default thread count, NCHW tensors and
torch's default AdamW, measured in the same process. The achieved FLOP/s
(``torch.utils.flop_counter`` over one step) are put against the machine's
measured fp32 matmul peak at the same thread count. The data pipeline is timed
separately: per-step decoding of the dataset's PIL images vs batches sliced
from one preloaded tensor.

``--trainer-steps N`` adds what a run actually pays: N steps of the real
training loop (``hartkit.engine.loop.train`` through the tokenizer and
generator tasks, the default precision, data, seeding, metrics and one
checkpoint included) on the real training split, at one thread and at torch's
default thread count, in the order A B A B so that drift of the machine shows.
The model step alone does not decide the thread count: at batch 8 the loop's
small per-step operations scale differently from the convolutions.

The benchmark runs under the OpenMP wait policy a run uses (``hartkit.cli``
sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it): with two
threads, how long a sleeping thread takes to wake for each small operation is
part of what a step costs. ``OMP_WAIT_POLICY=ACTIVE python -m
hartkit.tools.bench_train ...`` measures the spinning policy instead.

Timings mean something only on an otherwise idle machine: the script prints the
load average before and after, and says so when the machine was busy.
"""

from __future__ import annotations

import argparse
import contextlib
import os

# the policy of the hartkit command (hartkit/cli.py), before torch is imported: measure what a run pays
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from hartkit.ar_models.model import ScaleAR, TokenSpec
from hartkit.ar_models.token_cache import encode_dataset, to_token_batch
from hartkit.ar_models.trainer import GeneratorTask
from hartkit.configs import compose
from hartkit.data import ImageTensorDataset, build_dataset, collate
from hartkit.engine import StepBatches
from hartkit.engine.loop import train
from hartkit.engine.rng import seed_all
from hartkit.tokenizers import build_tokenizer
from hartkit.tokenizers.losses import reconstruction_loss
from hartkit.tokenizers.trainer import TokenizerTask
from hartkit.utils.io import atomic_write_text


@dataclass
class Variant:
    name: str
    threads: int | None = None  # None: torch's default
    channels_last: bool = False
    bf16: bool = False
    compile: bool = False
    fused_adamw: bool = False


VARIANTS = [
    Variant("eager fp32 (baseline)"),
    Variant("threads=1", threads=1),
    Variant("channels_last", channels_last=True),
    Variant("bf16 autocast", bf16=True),
    Variant("fused AdamW", fused_adamw=True),
    Variant("torch.compile", compile=True),
]


def matmul_peak_flops(threads: int, n: int = 1024, repeats: int = 20) -> float:
    """Measured fp32 matmul FLOP/s (the best of ``repeats``) at this thread count."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def _optimizer(model: torch.nn.Module, fused: bool) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), fused=True if fused else None)


def _time_steps(step: Callable[[], None], warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def _count_flops(step: Callable[[], None]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def tokenizer_step(cfg, variant: Variant, images: torch.Tensor) -> tuple[Callable[[], None], Callable[[], None]]:
    """(one training step of the configured tokenizer, the same step without compile for FLOP counting)."""
    tcfg = cfg.tokenizer.train
    model = build_tokenizer(cfg.tokenizer).train()
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    opt = _optimizer(model, variant.fused_adamw)
    forward = torch.compile(model) if variant.compile else model

    def make(fwd):
        def step() -> None:
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if variant.bf16 else contextlib.nullcontext()
            with ctx:
                out = fwd(images)
                loss = reconstruction_loss(out.recon.float(), images, tcfg.l1_weight, tcfg.l2_weight) + out.aux_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
            opt.step()
        return step

    return make(forward), make(model)


def generator_step(cfg, variant: Variant, images: torch.Tensor, prompts: list[str]):
    tokenizer = build_tokenizer(cfg.tokenizer).eval()
    items = [{"image": img, "prompt": p, "category": "x", "category_id": 0, "index": i}
             for i, (img, p) in enumerate(zip(images, prompts))]
    cache = encode_dataset(tokenizer, items, len(items), "cpu", collate, desc="encode")
    model = ScaleAR(cfg.ar, TokenSpec.from_tokenizer(tokenizer)).train()
    tb = to_token_batch(cache["tensors"], prompts, "cpu")
    opt = _optimizer(model, variant.fused_adamw)
    loss_fn = torch.compile(model.loss) if variant.compile else model.loss

    def make(fn):
        def step() -> None:
            gen = torch.Generator().manual_seed(0)
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if variant.bf16 else contextlib.nullcontext()
            with ctx:
                loss, _ = fn(tb, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.ar.train.grad_clip)
            opt.step()
        return step

    return make(loss_fn), make(model.loss)


def data_pipeline(cfg, batches: int) -> dict[str, float]:
    """Images/s of StepBatches over the dataset (PIL decode per item) vs slicing one preloaded tensor."""
    bs = int(cfg.tokenizer.train.batch_size)
    train = ImageTensorDataset(build_dataset(cfg.data, "train"))
    loader = StepBatches(train, bs, seed=0, collate_fn=collate)
    next(loader)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(loader)
    pil = batches * bs / (time.perf_counter() - t0)
    tensor = torch.stack([train[i]["image"] for i in range(min(len(train), 4 * bs))])
    t0 = time.perf_counter()
    for s in range(batches):
        idx = torch.randint(0, tensor.shape[0], (bs,), generator=torch.Generator().manual_seed(s))
        tensor[idx].contiguous()
    preloaded = batches * bs / (time.perf_counter() - t0)
    return {"PIL decode per step": pil, "preloaded tensor": preloaded}


def trainer_steps_per_s(cfg, part: str, threads: int, steps: int, train_set, cache: dict | None) -> float:
    """Steps/s of ``steps`` steps of the real training loop for ``part`` (tokenizer or generator), run with
    ``<part>.train.threads=threads`` (the option a user sets)."""
    seed_all(0)
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as out:
        if part == "tokenizer":
            task = TokenizerTask(build_tokenizer(cfg.tokenizer), train_set, cfg.tokenizer, Path(out), device, collate,
                                 preview_images=train_set[0]["image"][None])
            train_cfg = cfg.tokenizer.train
        else:
            task = GeneratorTask(ScaleAR(cfg.ar, TokenSpec.from_tokenizer(build_tokenizer(cfg.tokenizer))), cache,
                                 cfg.ar, Path(out), device)
            train_cfg = cfg.ar.train
        t0 = time.perf_counter()
        train(task, OmegaConf.merge(train_cfg, {"threads": threads}), out, device, seed=0, stop_after=steps)
        return steps / (time.perf_counter() - t0)


def trainer_rows(cfg, steps: int, default_threads: int) -> list[tuple[str, int, float]]:
    """(part, threads, steps/s) of the real loop, threads 1 and the default alternating A B A B."""
    train_set = ImageTensorDataset(build_dataset(cfg.data, "train"))
    cache = encode_dataset(build_tokenizer(cfg.tokenizer), train_set, 64, "cpu", collate, desc="encode train split")
    rows = []
    for part in ("tokenizer", "generator"):
        for threads in (1, default_threads) * 2:
            rate = trainer_steps_per_s(cfg, part, threads, steps, train_set, cache)
            rows.append((part, threads, rate))
            print(f"{part:9s} real loop threads={threads} {rate:6.2f} steps/s", flush=True)
    torch.set_num_threads(default_threads)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="run.py overrides (the default config otherwise)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--variants", default="all", help="comma-separated variant names, or all")
    parser.add_argument("--out", default=None, help="also write the table (markdown) here")
    parser.add_argument("--trainer-steps", type=int, default=0,
                        help="also time this many steps of the real training loop at 1 and default threads")
    args = parser.parse_args(argv)

    cfg = compose(list(args.overrides), return_hydra_config=True)
    load_before = os.getloadavg()
    default_threads = torch.get_num_threads()
    res = int(cfg.data.resolution)
    bs_tok, bs_ar = int(cfg.tokenizer.train.batch_size), int(cfg.ar.train.batch_size)
    variants = VARIANTS if args.variants == "all" else [v for v in VARIANTS if v.name in args.variants.split(",")]
    g = torch.Generator().manual_seed(0)
    images_tok = torch.rand(bs_tok, 3, res, res, generator=g) * 2 - 1
    images_ar = torch.rand(bs_ar, 3, res, res, generator=g) * 2 - 1
    prompts = ["a large red circle at the center, on a brick wall"] * bs_ar
    peaks = {t: matmul_peak_flops(t) for t in sorted({default_threads, 1})}

    rows = []
    for part, bs in (("tokenizer", bs_tok), ("generator", bs_ar)):
        base = None
        for v in variants:
            threads = v.threads or default_threads
            torch.set_num_threads(threads)
            seed_all(0)
            try:
                if part == "tokenizer":
                    step, plain = tokenizer_step(cfg, v, images_tok)
                else:
                    step, plain = generator_step(cfg, v, images_ar, prompts)
                sec = _time_steps(step, args.warmup, args.steps)
                flops = _count_flops(plain)
            except Exception as exc:  # a variant this machine cannot run (e.g. no bf16 kernels): say so, go on
                rows.append((part, v.name, threads, None, None, None, f"failed: {type(exc).__name__}: {exc}"[:120]))
                continue
            ips = bs / sec
            base = base or ips
            rows.append((part, v.name, threads, ips, ips / base, flops / sec / peaks[threads], ""))
            print(f"{part:9s} {v.name:24s} threads={threads} {ips:8.2f} img/s  x{ips / base:.2f}", flush=True)
    torch.set_num_threads(default_threads)
    data = data_pipeline(cfg, batches=10)
    loop_rows = trainer_rows(cfg, args.trainer_steps, default_threads) if args.trainer_steps > 0 else []
    load_after = os.getloadavg()

    lines = [f"Training throughput, `python -m hartkit.tools.bench_train {' '.join(args.overrides)}` "
             f"(--steps {args.steps} --warmup {args.warmup} --variants '{args.variants}' "
             f"--trainer-steps {args.trainer_steps}); torch {torch.__version__}, "
             f"{os.cpu_count()} CPUs, torch default threads {default_threads}, "
             f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; tokenizer batch {bs_tok}, "
             f"generator batch {bs_ar}, {res} px.",
             "fp32 matmul peak (1024^3, best of 20): " + ", ".join(
                 f"{p / 1e9:.1f} GFLOP/s at {t} thread(s)" for t, p in peaks.items()) + ".",
             f"Load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f} (after includes this "
             "benchmark's own threads)"
             + (": the machine was busy before it started, the timings are not reliable" if load_before[0] > 0.5
                else "") + ".", "",
             "| part | variant | threads | images/s | vs baseline | FLOP/s vs matmul peak | note |",
             "|---|---|---:|---:|---:|---:|---|"]
    for part, name, threads, ips, ratio, frac, note in rows:
        fmt = lambda x, f: "-" if x is None else f.format(x)
        lines.append(f"| {part} | {name} | {threads} | {fmt(ips, '{:.1f}')} | {fmt(ratio, 'x{:.2f}')} | "
                     f"{fmt(frac, '{:.1%}')} | {note} |")
    lines += ["", "| data pipeline | images/s |", "|---|---:|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in data.items()]
    if loop_rows:
        bs = {"tokenizer": bs_tok, "generator": bs_ar}
        lines += ["", f"The real training loop, {args.trainer_steps} steps per run, runs in the order listed:", "",
                  "| part | threads | steps/s | images/s |", "|---|---:|---:|---:|"]
        lines += [f"| {part} | {threads} | {rate:.2f} | {rate * bs[part]:.1f} |" for part, threads, rate in loop_rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
