"""End-to-end effect of the kernels: HART-0.7B training step and sampling, ``kernels=triton`` vs ``kernels=torch``.

    python -m hartkit.tools.bench_kernels [--resolutions 512 1024] [--batch 8] [--sample-batch 16]
                                          [--out results/end_to_end.md] [--smoke]

The ``hart_0.7b`` preset is built on a fake hybrid tokenizer with HART's shapes (Cvae 32, V 4096, the 512 px
scales and, optionally, the unverified 1024 px ones). The text condition is HART's: 300 prefix tokens of
width 1536 from a frozen encoder, here random features in place of Qwen2-1.5B (no weights are loaded; the
frozen encoder's own cost is not part of either backend). Both backends run the same model and the same
inputs in one process, one after the other:

- training step: forward + backward + grad clipping + AdamW step on random token batches of batch ``--batch``
  (HART's final-scale token subsampling 0.2, diffusion ``batch_mul`` 4), bf16 autocast on CUDA;
- sampling: ``generate_tokens`` (KV cache, CFG 4.5, top-k 600, the residual diffusion head's 8 steps) for
  ``--sample-batch`` images; the tokenizer decoder is skipped (it does not depend on the backend).

Times are medians after warm-up calls (which also compile / autotune the Triton kernels), with
``torch.cuda.synchronize`` around each call; peak memory is ``torch.cuda.max_memory_allocated`` over the timed
calls (weights, gradients and optimizer state included). On a CPU only ``kernels=torch`` runs: the Triton
kernels need CUDA (``--smoke`` uses a tiny model to test the harness). A tool, not part of ``ar_models``:
it puts a concrete (fake) tokenizer under the generator.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from hartkit.ar_models.efficiency import HART_512, HART_1024
from hartkit.ar_models.model import ScaleAR, TokenBatch, TokenSpec, hart_expected_kept
from hartkit.ar_models.presets import load_preset
from hartkit.ar_models.sampling import generate_tokens
from hartkit.kernels import get_backend, set_backend
from hartkit.tokenizers.fake import FakeMultiScaleTokenizer
from hartkit.utils.env import resolve_device

log = logging.getLogger(__name__)

PATCH_NUMS = {512: HART_512, 1024: HART_1024}
SMOKE_PATCH_NUMS = (1, 2, 3, 4)
VOCAB, LATENT_CHANNELS = 4096, 32
CPU_NOTE = ("CPU run: only kernels=torch is measured; the Triton kernels need a CUDA GPU (run the same command "
            "there, or scripts/gpu_check.sh).")


class RandomTextFeatures(nn.Module):
    """Stands in for a frozen text encoder (HART: Qwen2-1.5B): fixed-seed random features of its output shape.

    ``trainable = False`` makes the conditioner hold it outside the model, as it holds the real frozen encoder,
    so the trained part (projection, pooling, prefix tokens in every block) is exactly HART's."""

    trainable = False

    def __init__(self, width: int, max_len: int, seed: int = 0):
        super().__init__()
        self.out_dim, self.max_len, self.seed = width, max_len, seed
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)  # gives the conditioner a device to read

    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.anchor.device
        g = torch.Generator(device=device).manual_seed(self.seed)
        feats = torch.randn(len(prompts), self.max_len, self.out_dim, generator=g, device=device)
        return feats, torch.ones(len(prompts), self.max_len, dtype=torch.bool, device=device)


def bench_config(smoke: bool):
    cfg = load_preset("hart_0.7b")
    if smoke:  # HART's structure (RMSNorm + SwiGLU, 2-D RoPE, text prefix, hybrid head) at toy size
        cfg = OmegaConf.merge(cfg, {"depth": 2, "width": 64, "heads": 2,
                                    "diffusion": {"width": 32, "depth": 1, "num_sample_steps": 2, "batch_mul": 2},
                                    "text_encoder": {"max_len": 6, "width": 16}, "sampling": {"top_k": 20}})
    return cfg


def build(cfg, patch_nums: tuple[int, ...], device: torch.device) -> tuple[ScaleAR, FakeMultiScaleTokenizer]:
    tok = FakeMultiScaleTokenizer("hybrid", patch_nums, VOCAB, LATENT_CHANNELS, downsample=16)
    spec = TokenSpec.from_tokenizer(tok)  # carries the codebook the loss embeds its sampled codes with
    encoder = RandomTextFeatures(cfg.text_encoder.width, cfg.text_encoder.max_len)
    with device:  # initialise on the device: 730 M parameters initialise in seconds on a GPU
        model = ScaleAR(cfg, spec, text_encoder=encoder)
    encoder.to(device)
    tok = tok.to(device)
    return model, tok


def random_batch(spec: TokenSpec, B: int, device: torch.device, seed: int = 0) -> TokenBatch:
    """Teacher-forcing inputs and targets with the token cache's shapes (values do not matter for timing)."""
    g = torch.Generator(device=device).manual_seed(seed)
    L, n_last, C = spec.num_tokens, spec.patch_nums[-1] ** 2, spec.latent_channels
    rnd = lambda *shape: torch.randn(*shape, generator=g, device=device)
    return TokenBatch(cond=[f"prompt {i}" for i in range(B)], x_in=rnd(B, L - spec.patch_nums[0] ** 2, C),
                      idx=torch.randint(0, spec.vocab_size, (B, L), generator=g, device=device),
                      residual=rnd(B, n_last, C), code_emb=rnd(B, n_last, C), rest_before_last=rnd(B, n_last, C))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    seconds: float | None = None  # median of one call
    peak_gib: float | None = None
    note: str = ""


def measure(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> Timing:
    """Median seconds of ``fn()`` after ``warmup`` calls; peak allocated GiB over the timed calls (CUDA)."""
    try:
        for _ in range(warmup):
            fn()
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(iters):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    except torch.OutOfMemoryError:
        times = None
    if times is None:  # outside the except block, so the traceback no longer pins the tensors
        torch.cuda.empty_cache()
        return Timing(note="out of memory")
    return Timing(statistics.median(times), peak)


@dataclass
class Result:
    resolution: int
    tokens: int
    backend: str
    batch: int
    sample_batch: int
    train: Timing
    sample: Timing


def bench_backend(model: ScaleAR, tok, cfg, backend: str, device: torch.device, batch: int, sample_batch: int,
                  amp: bool, warmup: int, iters: int, sample_iters: int) -> tuple[Timing, Timing]:
    set_backend(backend)
    spec = model.spec
    tb = random_batch(spec, batch, device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95),
                            weight_decay=0.05)
    gen = torch.Generator(device=device).manual_seed(0)
    keep = float(cfg.train.final_scale_keep)
    if model.subset_rule == "hart":  # HART's random mask rate makes every step's work differ: time its mean instead
        n_last = spec.patch_nums[-1] ** 2
        model.subset_rule = "fraction"
        keep = hart_expected_kept(n_last, model.subset_min_keep) / n_last

    def train_step() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, _ = model.loss(tb, final_scale_keep=keep, generator=gen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        opt.step()

    prompts = [f"prompt {i}" for i in range(sample_batch)]

    def sample() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            generate_tokens(model, tok, prompts, cfg=float(cfg.sampling.cfg), top_k=int(cfg.sampling.top_k),
                            generator=torch.Generator(device=device).manual_seed(0))

    train = measure(train_step, device, warmup, iters)
    opt.state.clear()  # the AdamW moments must not count in the sampling peak
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    samp = measure(sample, device, max(1, warmup - 1), sample_iters)
    return train, samp


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def render_table(results: list[Result]) -> str:
    lines = ["| px | image tokens | kernels | batch (train / sampling) | train step (s) | train img/s | train peak GiB | sampling (s) "
             "| sampling img/s | sampling peak GiB | note |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        t, s = r.train, r.sample
        lines.append(f"| {r.resolution} | {r.tokens} | {r.backend} | {r.batch} / {r.sample_batch} "
                     f"| {_fmt(t.seconds, '.3f')} | {_fmt(r.batch / t.seconds if t.seconds else None, '.2f')} | {_fmt(t.peak_gib, '.2f')} "
                     f"| {_fmt(s.seconds, '.3f')} | {_fmt(r.sample_batch / s.seconds if s.seconds else None, '.2f')} "
                     f"| {_fmt(s.peak_gib, '.2f')} | {'; '.join(x for x in (t.note, s.note) if x)} |")
    by_px: dict[int, dict[str, Result]] = {}
    for r in results:
        by_px.setdefault(r.resolution, {})[r.backend] = r
    ratio_lines = []
    for px, d in by_px.items():
        if "triton" in d and "torch" in d:
            tr, to = d["triton"], d["torch"]
            ratio_lines.append(
                f"| {px} | {_ratio(to.train.seconds, tr.train.seconds)} | {_ratio(tr.train.peak_gib, to.train.peak_gib)} "
                f"| {_ratio(to.sample.seconds, tr.sample.seconds)} | {_ratio(tr.sample.peak_gib, to.sample.peak_gib)} |")
    if ratio_lines:
        lines += ["", "Ratios triton / torch from the same run (speed: torch time / triton time, > 1 = Triton "
                  "faster; memory: triton peak / torch peak, < 1 = Triton leaner):", "",
                  "| px | train speed | train peak memory | sampling speed | sampling peak memory |",
                  "|---|---|---|---|---|", *ratio_lines]
    return "\n".join(lines)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU ({platform.machine()}), {torch.get_num_threads()} torch threads"


def render_report(results: list[Result], command: str, device: torch.device, args, amp: bool, warmup: int,
                  iters: int, sample_iters: int, params: int) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = "tiny smoke model" if args.smoke else "HART-0.7B preset"
    lines = [f"## End to end: {title}, kernels=triton vs kernels=torch", "",
             f"- command: `{command}`", f"- device: {device_name(device)}", f"- date: {now}",
             f"- torch {torch.__version__}, python {platform.python_version()}; bf16 autocast: {'on' if amp else 'off'}",
             f"- model: {params / 1e6:.1f} M trained parameters (hybrid, V {VOCAB}, Cvae {LATENT_CHANNELS}, "
             f"{'6' if args.smoke else '300'} random text prefix tokens in place of the frozen text encoder)",
             f"- training step: batch {args.batch} (a quarter at 1024 px), forward + backward + grad clip + AdamW, median of {iters} after "
             f"{warmup} warm-up; sampling: batch {args.sample_batch} (a quarter at 1024 px), KV cache + CFG + residual diffusion head, "
             f"tokenizer decoder skipped, median of {sample_iters}; peak = max_memory_allocated over the timed calls.",
             "- Triton is used by the training forward/backward (block-causal attention with the scale mask); "
             "the KV-cache sampling path attends without a mask (SDPA on both backends), so sampling should "
             "match and its ratio shows the noise; nearest_code is a tokenizer kernel and does not appear here."]
    if device.type != "cuda":
        lines.append(f"- **{CPU_NOTE}**")
    lines += ["", render_table(results), ""]
    return "\n".join(lines)


def write_report(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # atomic: a reader never sees half a report


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m hartkit.tools.bench_kernels",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[512], choices=sorted(PATCH_NUMS))
    parser.add_argument("--batch", type=int, default=8, help="training batch at 512 px (a quarter at 1024 px)")
    parser.add_argument("--sample-batch", type=int, default=16, help="images sampled per call at 512 px (a quarter at 1024 px)")
    parser.add_argument("--backends", nargs="+", default=None, choices=("torch", "triton"),
                        help="default: torch and triton on CUDA, torch on CPU")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast (default: on CUDA only)")
    parser.add_argument("--iters", type=int, default=None, help="timed training steps per backend")
    parser.add_argument("--smoke", action="store_true", help="tiny model and scales, 1 timed call (tests, CPU)")
    parser.add_argument("--out", default="-", help="markdown report path ('-' = print only)")
    args = parser.parse_args(argv)

    try:
        device = resolve_device(args.device)
    except RuntimeError as exc:
        parser.error(str(exc))
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    backends = args.backends or (["torch", "triton"] if device.type == "cuda" else ["torch"])
    if "triton" in backends and device.type != "cuda":
        parser.error("--backends triton needs a CUDA device: the Triton kernels do not run compiled on a CPU")
    amp = device.type == "cuda" if args.amp is None else args.amp
    iters = args.iters or (1 if args.smoke else 10 if device.type == "cuda" else 2)
    warmup = 1 if args.smoke else 3 if device.type == "cuda" else 1
    sample_iters = 1 if args.smoke else 3
    if device.type != "cuda":
        print(CPU_NOTE, flush=True)

    cfg = bench_config(args.smoke)
    command = "python -m hartkit.tools.bench_kernels " + " ".join(argv)
    previous = get_backend()
    results: list[Result] = []
    params = 0
    report = ""
    try:
        for px in ([0] if args.smoke else args.resolutions):
            patch_nums = SMOKE_PATCH_NUMS if args.smoke else PATCH_NUMS[px]
            torch.manual_seed(0)
            model, tok = build(cfg, patch_nums, device)
            params = model.parameter_groups()["total_trained"]
            # 1024 px has ~3.7x the tokens of 512 px: a quarter of the batch keeps the step's work comparable
            div = 4 if px == 1024 else 1
            batch, sample_batch = max(1, args.batch // div), max(1, args.sample_batch // div)
            for backend in backends:
                try:
                    train, samp = bench_backend(model, tok, cfg, backend, device, batch, sample_batch,
                                                amp, warmup, iters, sample_iters)
                except RuntimeError as e:  # e.g. Triton does not import: keep the other backend's row
                    log.exception("kernels=%s failed at %s px", backend, px)
                    train, samp = Timing(note=f"failed: {str(e).splitlines()[0][:120]}"), Timing()
                results.append(Result(px or patch_nums[-1] * 16, model.spec.num_tokens, backend, batch, sample_batch,
                                      train, samp))
                print(f"{px or 'smoke'} px kernels={backend}: train {train.seconds} s, sampling {samp.seconds} s",
                      flush=True)
            del model, tok
            if device.type == "cuda":
                torch.cuda.empty_cache()
            report = render_report(results, command.strip(), device, args, amp, warmup, iters, sample_iters, params)
            if args.out != "-":  # after each resolution, so a timeout keeps what was measured
                write_report(Path(args.out), report)
    finally:
        set_backend(previous)
    print(report)
    if args.out != "-":
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    raise SystemExit(main())
