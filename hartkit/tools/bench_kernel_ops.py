"""Benchmark of the two hot paths at the papers' shapes; writes a markdown report.

    python -m hartkit.tools.bench_kernel_ops [quantize|attention|all] [--out results/kernels.md] [--smoke]

quantize:  nearest-code search at VAR's shapes (B x 16 x 16 and B x 64 x 64 latents, V 4096,
           C 32): the naive full N x V matrix (what VAR/HART/LlamaGen do, the baseline), the
           chunked PyTorch reference, and the fused Triton kernel.
attention: block-causal attention at VAR-256 (L 680, d16: width 1024, 16 heads) and HART-1024
           (300 text + 9451 image tokens, HART-0.7B: width 1536, 24 heads): SDPA with a dense
           mask (the reference, the baseline), textbook attention, FlexAttention (when it
           compiles), and the Triton kernel; forward and forward+backward.

Every number is a median over repeated calls; ratios are against the baseline measured in the
same run. Peak memory is what the call allocates on top of its inputs (its outputs included):
``torch.cuda.max_memory_allocated`` on a GPU, the profiler's allocation events on a CPU.
On a CPU the Triton rows are skipped (the interpreter's timings mean nothing); GPU numbers need
a GPU: run the same command there (scripts/gpu_check.sh does).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from hartkit.kernels.block_mask import key_tiles_visited
from hartkit.kernels.reference import (
    block_causal_attention_math,
    block_causal_attention_torch,
    nearest_code_naive,
    nearest_code_torch,
)

log = logging.getLogger(__name__)

VAR_256_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
HART_1024_PATCH_NUMS = (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64)
HART_TEXT_TOKENS = 300
GPU_NOTE = ("GPU numbers need a GPU: on a CUDA machine run `python -m hartkit.tools.bench_kernel_ops --out "
            "results/kernels.md` (or scripts/gpu_check.sh). The Triton rows are skipped on CPU: the "
            "interpreter runs kernels through numpy, its timings mean nothing.")


@dataclass
class Row:
    method: str
    ms: float | None = None
    peak_mib: float | None = None
    note: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class Table:
    title: str
    baseline: str
    rows: list[Row]
    extra_columns: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- measuring


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> float:
    """Median wall time of one call in milliseconds (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def peak_mib(fn: Callable[[], object], device: torch.device) -> float:
    """MiB allocated at the high-water mark of one call, above what was allocated before it."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del out
        return peak / 2**20
    # CPU: replay the profiler's allocation/free events of the call in time order.
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    del out
    current = peak = 0
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    for ev in sorted(events, key=lambda e: e.start_ns()):
        current += ev.nbytes()  # negative for a free
        peak = max(peak, current)
    return peak / 2**20


def measure(method: str, fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> Row:
    try:
        ms = time_ms(fn, device, warmup, iters)
        mem = peak_mib(fn, device)
    except torch.cuda.OutOfMemoryError:
        ms = None
    if ms is None:  # outside the except block, so the traceback no longer pins the tensors
        torch.cuda.empty_cache()
        return Row(method, note="out of memory")
    return Row(method, ms, mem)


# ----------------------------------------------------------------------------- quantize


@dataclass(frozen=True)
class QuantizeCase:
    side: int  # latent h = w
    batch: int
    vocab: int = 4096
    channels: int = 32

    @property
    def n(self) -> int:
        return self.batch * self.side * self.side


def quantize_cases(device: torch.device, smoke: bool) -> list[QuantizeCase]:
    if smoke:
        return [QuantizeCase(4, 2, vocab=64, channels=8), QuantizeCase(8, 2, vocab=64, channels=8)]
    if device.type == "cuda":
        return [QuantizeCase(16, 64), QuantizeCase(64, 16)]
    # CPU: batches that fit in memory and time (the naive 64x64 case already builds a 256 MiB matrix).
    return [QuantizeCase(16, 16), QuantizeCase(64, 4)]


def _quantize_methods(z: torch.Tensor, codebook: torch.Tensor,
                      with_triton: bool) -> list[tuple[str, Callable[[], object]]]:
    methods: list[tuple[str, Callable[[], object]]] = [
        ("naive full matrix (addmm + argmin)", lambda: nearest_code_naive(z, codebook)),
        ("PyTorch chunked (reference, chunk 4096)", lambda: nearest_code_torch(z, codebook, chunk=4096)),
        ("PyTorch chunked (chunk 1024)", lambda: nearest_code_torch(z, codebook, chunk=1024)),
    ]
    if with_triton:
        # optional and heavy: Triton (and its JIT) only on the Triton path
        from hartkit.kernels.triton_nearest_code import nearest_code_triton

        methods += [("Triton fused", lambda: nearest_code_triton(z, codebook)),
                    ("Triton fused + gather codes", lambda: nearest_code_triton(z, codebook, return_codes=True))]
    return methods


def bench_quantize(device: torch.device, smoke: bool, warmup: int, iters: int, with_triton: bool) -> list[Table]:
    tables = []
    gen = torch.Generator().manual_seed(0)
    for case in quantize_cases(device, smoke):
        z = torch.randn(case.n, case.channels, generator=gen).to(device)
        codebook = torch.randn(case.vocab, case.channels, generator=gen).to(device)
        want = nearest_code_naive(z, codebook)
        methods = _quantize_methods(z, codebook, with_triton)
        notes = [] if with_triton else ["Triton: skipped on CPU (needs a GPU)."]
        if case.n <= 4096:
            notes.append("N <= 4096: the default chunk holds all rows, so chunk 4096 computes exactly what naive does.")
        rows = []
        for name, fn in methods:
            row = measure(name, fn, device, warmup, iters)
            if row.ms is not None:
                out = fn()
                idx = out[0] if isinstance(out, tuple) else out
                row.extra["latents/s"] = f"{case.n / row.ms * 1e3:,.0f}"
                row.extra["images/s"] = f"{case.batch / row.ms * 1e3:,.1f}"
                row.extra["same idx as naive"] = f"{(idx == want).float().mean().item():.2%}"
            rows.append(row)
        title = (f"quantize: B={case.batch} x {case.side} x {case.side} latents (N={case.n:,}), "
                 f"V={case.vocab}, C={case.channels}, float32")
        tables.append(Table(title, rows[0].method, rows, ("latents/s", "images/s", "same idx as naive"), notes))
    return tables


# ----------------------------------------------------------------------------- attention


@dataclass(frozen=True)
class AttentionCase:
    name: str
    patch_nums: tuple[int, ...]
    text_tokens: int
    batch: int
    heads: int
    head_dim: int
    dtype: torch.dtype

    def scale_ids(self) -> torch.Tensor:
        # The text prefix (if any) is scale 0, then one id per image scale.
        sizes = ([self.text_tokens] if self.text_tokens else []) + [p * p for p in self.patch_nums]
        return torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))

    @property
    def length(self) -> int:
        return self.text_tokens + sum(p * p for p in self.patch_nums)


def attention_cases(device: torch.device, smoke: bool) -> tuple[list[AttentionCase], list[str]]:
    if smoke:
        return [AttentionCase("smoke", (1, 2, 3), 2, 1, 2, 16, torch.float32)], []
    if device.type == "cuda":
        return [AttentionCase("VAR-256 (d16)", VAR_256_PATCH_NUMS, 0, 16, 16, 64, torch.bfloat16),
                AttentionCase("HART-1024 (0.7B)", HART_1024_PATCH_NUMS, HART_TEXT_TOKENS, 2, 24, 64,
                              torch.bfloat16)], []
    return ([AttentionCase("VAR-256 (d16)", VAR_256_PATCH_NUMS, 0, 1, 16, 64, torch.float32)],
            ["HART-1024 (L=9751, 24 heads): skipped on CPU (dense scores of 9751^2 per head take minutes "
             "on a few cores); it runs on a GPU."])


def _flex_attention(sid: torch.Tensor, length: int, device: torch.device):
    """A compiled FlexAttention call with the scale mask as a block mask, or the reason it is unavailable."""
    try:  # optional: FlexAttention exists from torch 2.5 on
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError as err:
        return None, f"FlexAttention unavailable in torch {torch.__version__}: {err}"

    def mask_mod(b, h, q_idx, kv_idx):
        return sid[kv_idx] <= sid[q_idx]

    try:
        block_mask = create_block_mask(mask_mod, None, None, length, length, device=device.type)
        compiled = torch.compile(flex_attention, dynamic=False)
    except Exception as err:  # noqa: BLE001 - any failure means "not available here", reported as such
        return None, f"FlexAttention unavailable: {type(err).__name__}: {str(err).splitlines()[0][:160]}"
    return (lambda q, k, v: compiled(q, k, v, block_mask=block_mask)), ""


def _attention_impls(sid: torch.Tensor) -> list[tuple[str, Callable]]:
    return [("SDPA + dense mask (reference)", lambda q, k, v: block_causal_attention_torch(q, k, v, sid)),
            ("textbook (scores materialised)", lambda q, k, v: block_causal_attention_math(q, k, v, sid))]


def _rope_impl(sid: torch.Tensor, rope) -> tuple[str, Callable]:
    return ("PyTorch RoPE + SDPA + dense mask", lambda q, k, v: block_causal_attention_torch(q, k, v, sid, rope=rope))


def _triton_attention_impls(sid: torch.Tensor, rope) -> list[tuple[str, Callable]]:
    # optional and heavy: Triton (and its JIT) only on the Triton path
    from hartkit.kernels.triton_attention import block_causal_attention_triton

    return [("Triton block-causal flash", lambda q, k, v: block_causal_attention_triton(q, k, v, sid)),
            ("Triton + fused RoPE", lambda q, k, v: block_causal_attention_triton(q, k, v, sid, rope=rope))]


def _attention_call(fn: Callable, q, k, v, grad: torch.Tensor | None) -> Callable[[], object]:
    """Forward only (grad None; inference, no autograd graph) or forward + backward to q, k, v."""
    if grad is None:
        q0, k0, v0 = q.detach(), k.detach(), v.detach()  # FlexAttention on CPU refuses inputs that require grad

        def forward():
            with torch.no_grad():
                return fn(q0, k0, v0)

        return forward
    return lambda: torch.autograd.grad(fn(q, k, v), (q, k, v), grad)


def bench_attention(device: torch.device, smoke: bool, warmup: int, iters: int, flex: bool,
                    with_triton: bool) -> list[Table]:
    cases, skipped = attention_cases(device, smoke)
    tables = []
    gen = torch.Generator().manual_seed(0)
    for case in cases:
        sid = case.scale_ids().to(device)
        L = case.length
        shape = (case.batch, case.heads, L, case.head_dim)
        q, k, v = (torch.randn(shape, generator=gen).to(device=device, dtype=case.dtype).requires_grad_()
                   for _ in range(3))
        grad = torch.randn(shape, generator=gen).to(device=device, dtype=case.dtype)
        angles = torch.rand(L, case.head_dim // 2, generator=gen) * L
        rope = (angles.cos().to(device), angles.sin().to(device))
        impls = _attention_impls(sid)
        notes = []
        if flex and not smoke:
            flex_fn, why = _flex_attention(sid, L, device)
            if flex_fn is not None:
                impls.append(("FlexAttention (compiled, block mask)", flex_fn))
            else:
                notes.append(why)
        elif smoke:
            notes.append("FlexAttention: skipped in --smoke (compiling takes tens of seconds).")
        impls.append(_rope_impl(sid, rope))
        if with_triton:
            impls += _triton_attention_impls(sid, rope)
        else:
            notes.append("Triton: skipped on CPU (needs a GPU).")
        notes.append("The RoPE rows rotate q and k first (pairs of dims, float32); compare them with each other.")
        visited, total = key_tiles_visited(sid.cpu(), 128, 64)
        notes.append(f"mask: {L} tokens; at 128x64 tiles the Triton forward visits {visited} of {total} tiles "
                     f"({1 - visited / total:.0%} skipped as fully masked).")

        with torch.no_grad():
            exact = block_causal_attention_math(q.float(), k.float(), v.float(), sid)
        for pass_name in ("forward", "forward+backward"):
            rows = []
            for name, fn in impls:
                call = _attention_call(fn, q, k, v, None if pass_name == "forward" else grad)
                try:
                    row = measure(name, call, device, warmup, iters)
                except Exception as err:  # noqa: BLE001 - e.g. a backend that cannot compile here
                    row = Row(name, note=f"failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}")
                if pass_name == "forward" and row.ms is not None and "RoPE" not in name:
                    with torch.no_grad():
                        err = (fn(q.detach(), k.detach(), v.detach()).float() - exact).abs().max().item()
                    row.extra["max abs err vs fp32 textbook"] = f"{err:.1e}"
                rows.append(row)
            dtype = str(case.dtype).replace("torch.", "")
            title = (f"attention {pass_name}: {case.name}, B={case.batch}, heads={case.heads}, L={L}, "
                     f"head dim={case.head_dim}, {dtype}")
            extra = ("max abs err vs fp32 textbook",) if pass_name == "forward" else ()
            tables.append(Table(title, rows[0].method, rows, extra, notes if pass_name == "forward" else []))
    if skipped and tables:
        tables[-1].notes.extend(skipped)
    return tables


# ----------------------------------------------------------------------------- report


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"CPU: {cpu}, {torch.get_num_threads()} torch threads"


def _fmt_mib(mib: float | None) -> str:
    if mib is None:
        return "-"
    return f"{mib:.1f}" if mib >= 10 else f"{mib:.3f}"


def render_table(table: Table) -> str:
    base = next((r for r in table.rows if r.method == table.baseline), None)
    head = ["method", "ms", f"speedup vs {table.baseline.split(' (')[0]}", "peak MiB", "memory vs baseline",
            *table.extra_columns, "note"]
    lines = [f"### {table.title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.rows:
        speed = (f"{base.ms / r.ms:.2f}x" if base and base.ms and r.ms else "")
        mem_ratio = (f"{r.peak_mib / base.peak_mib:.2f}x" if base and base.peak_mib and r.peak_mib is not None
                     else "")
        cells = [r.method, f"{r.ms:.3f}" if r.ms is not None else "-", speed,
                 _fmt_mib(r.peak_mib), mem_ratio,
                 *(r.extra.get(c, "") for c in table.extra_columns), r.note]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + [f"- {n}" for n in table.notes] + ([""] if table.notes else [])
    return "\n".join(lines)


def render_report(tables: list[Table], device: torch.device, command: str, smoke: bool, warmup: int,
                  iters: int) -> str:
    try:
        import triton  # optional: only its version is reported

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    kind = "GPU" if device.type == "cuda" else "CPU"
    lines = [f"# Kernel benchmark ({kind} run{', smoke shapes' if smoke else ''})", "",
             f"- command: `{command}`", f"- device: {device_name(device)}", f"- date: {now}",
             f"- torch {torch.__version__}, triton {triton_version}, python {platform.python_version()}",
             f"- timing: median of {iters} calls after {warmup} warm-up calls; speedup = baseline ms / ms; "
             "peak MiB = allocated above the inputs during one call (outputs included); both ratios "
             "against the first row of each table, measured in the same run."]
    if device.type != "cuda":
        with contextlib.suppress(OSError, AttributeError):
            lines.append("- CPU load average (1/5/15 min) when the report was written: "
                         + " / ".join(f"{x:.1f}" for x in os.getloadavg())
                         + f" on {os.cpu_count()} cores; on a shared machine the times are noisy.")
        lines += [f"- **This is a CPU run.** {GPU_NOTE}",
                  "- CPU batch sizes are reduced to fit a small machine (quantize: B=16 at 16x16 and B=4 at "
                  "64x64; attention: B=1); the GPU run uses B=64 / B=16 and B=16 (VAR-256) / B=2 (HART-1024)."]
    lines.append("")
    lines += [render_table(t) for t in tables]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m hartkit.tools.bench_kernel_ops", description=__doc__.split("\n\n")[0])
    parser.add_argument("which", nargs="?", default="all", choices=("quantize", "attention", "all"))
    parser.add_argument("--out", default="results/kernels.md", help="markdown report path ('-' = print only)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, 1 repetition (tests)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--iters", type=int, default=None, help="timed calls per measurement")
    parser.add_argument("--no-flex", action="store_true", help="skip FlexAttention (its compile is slow on CPU)")
    args = parser.parse_args(argv)

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            parser.error("--device cuda but no CUDA device is visible")
    interpreted = os.environ.get("TRITON_INTERPRET", "0") == "1"
    if interpreted and not (args.smoke and device.type == "cpu"):
        parser.error("unset TRITON_INTERPRET: the benchmark times compiled kernels, not the interpreter "
                     "(only --smoke --device cpu runs under it, to test the harness)")
    # Triton rows: compiled on CUDA; in a --smoke run under the interpreter only to exercise the harness.
    with_triton = device.type == "cuda" or interpreted
    iters = args.iters or (1 if args.smoke else 20 if device.type == "cuda" else 5)
    warmup = 1 if args.smoke else 3 if device.type == "cuda" else 1
    if device.type != "cuda":
        print(GPU_NOTE, flush=True)
        os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the CPU memory profiler otherwise logs GPU probe errors

    tables: list[Table] = []
    if args.which in ("quantize", "all"):
        tables += bench_quantize(device, args.smoke, warmup, iters, with_triton)
    if args.which in ("attention", "all"):
        tables += bench_attention(device, args.smoke, warmup, iters, not args.no_flex, with_triton)

    command = "python -m hartkit.tools.bench_kernel_ops " + " ".join(argv)
    report = render_report(tables, device, command.strip(), args.smoke, warmup, iters)
    if interpreted:
        report = report.replace("\n\n", "\n- Triton rows ran in TRITON_INTERPRET (numpy): their timings mean nothing.\n\n", 1)
    print(report)
    if args.out != "-":
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(report)
        tmp.replace(out)  # atomic: a reader never sees half a report
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    raise SystemExit(main())
