"""Benchmark of the evaluation suite on this machine.

    python -m hartkit.tools.bench_eval [--images 512] [--protocol-images 1000] [--threads 2] [--set key=value ...]

Prints (1) feature-extraction throughput (images/s) of every extractor that
can be built here (the others are listed with the reason, e.g. missing local
weights), plus CLIP score and prompt accuracy, and (2) the wall time of the
whole embedded protocol per 1000 images: rendering/loading the reference set,
its statistics, scoring 1000 "generated" images (FD + CLIP score + prompt
accuracy, per category) and computing the numbers. A tool: the metrics it times are ``hartkit.eval``'s.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from omegaconf import OmegaConf

from hartkit.data.config import DataConfig
from hartkit.eval.clip_score import build_clip_scorer
from hartkit.eval.config import EvalConfig
from hartkit.eval.embedded import get_embedded_evaluator
from hartkit.eval.embedded.prompt_accuracy import PromptAccuracy
from hartkit.eval.features import EXTRACTORS, build_feature_extractor
from hartkit.eval.generation import GenerationMetrics
from hartkit.eval.protocols import evaluation_set
from hartkit.utils.io import atomic_write_json
from hartkit.utils.logging import setup_logging


def _throughput(fn, images: torch.Tensor, batch_size: int) -> float:
    fn(images[:2])  # warm-up (lazy init, allocator)
    t0 = time.perf_counter()
    for s in range(0, len(images), batch_size):
        fn(images[s : s + batch_size])
    return len(images) / (time.perf_counter() - t0)


def bench_extractors(cfg, images: torch.Tensor, batch_size: int, device: str) -> list[dict]:
    rows = []
    for name in EXTRACTORS:
        try:
            extractor = build_feature_extractor(name, cfg, device)
        except Exception as exc:  # unavailable here (no local weights): report, do not fail the benchmark
            rows.append({"what": name, "images_per_s": None, "note": str(exc).split(";")[0][:120]})
            continue
        rows.append({"what": name, "images_per_s": _throughput(extractor, images, batch_size),
                     "note": f"{extractor.model_name}; {extractor.resize}"})
    prompts = ["a large red star at the top left, on a brick wall"] * len(images)
    for name in ("clip_score_embedded", "clip_score"):
        try:
            scorer = build_clip_scorer(name, cfg, device)
        except Exception as exc:
            rows.append({"what": name, "images_per_s": None, "note": str(exc).split(";")[0][:120]})
            continue
        rows.append({"what": name, "images_per_s": _throughput(lambda x, s=scorer: s.cosines(x, prompts[: len(x)]),
                                                               images, batch_size),
                     "note": f"{scorer.model_name}; image + text towers"})

    acc = PromptAccuracy(get_embedded_evaluator(None, device))
    rows.append({"what": "prompt_accuracy", "images_per_s": _throughput(
        lambda x: acc.update(x, prompts[: len(x)]), images, batch_size), "note": "embedded-clip, 17 counterfactual prompts per image"})
    return rows


def bench_protocol(n: int, cfg, device: str) -> dict:
    """Seconds of the whole embedded protocol for n prompts (reference set built fresh, no cache)."""
    cfg = OmegaConf.merge(cfg, {"num_images": n, "stats_cache": tempfile.mkdtemp(prefix="hartkit-bench-")})
    t0 = time.perf_counter()
    es = evaluation_set(DataConfig(), cfg)
    t_data = time.perf_counter()
    metrics = GenerationMetrics(cfg, device)
    metrics.reference_from_cache_or(es.cache_key, es.reference_batches)
    t_ref = time.perf_counter()
    bs = int(cfg.batch_size)
    # stand-in for generated samples: the real images in reverse order (right size, mismatched prompts)
    generated = torch.cat([b for b, _ in es.reference_batches()]).flip(0)
    t_load = time.perf_counter()
    for s in range(0, n, bs):
        metrics.update(generated[s : s + bs], es.prompts[s : s + bs], es.categories[s : s + bs])
    out = metrics.compute()
    t_end = time.perf_counter()
    total = (t_data - t0) + (t_ref - t_data) + (t_end - t_load)
    return {"images": n, "render_data_s": t_data - t0, "reference_stats_s": t_ref - t_data,
            "score_generated_s": t_end - t_load, "total_s": total, "total_s_per_1000": total * 1000 / n,
            "metrics": len(out)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hartkit.tools.bench_eval", description="Throughput of hartkit's evaluation suite on this machine.")
    p.add_argument("--images", type=int, default=512, help="images per extractor throughput measurement")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--protocol-images", type=int, default=1000, help="images of the whole-protocol timing (0: skip)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", nargs="*", default=[], help="eval config overrides, e.g. inception_weights=/models")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = OmegaConf.merge(OmegaConf.structured(EvalConfig), OmegaConf.from_dotlist(args.set),
                          {"batch_size": args.batch_size})
    images = torch.rand(args.images, 3, args.resolution, args.resolution, generator=torch.Generator().manual_seed(0))
    print(f"# hartkit eval bench: {args.images} images at {args.resolution} px, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, device {args.device}\n")
    rows = bench_extractors(cfg, images, args.batch_size, args.device)
    print("| extractor / metric | images/s | note |\n|---|---|---|")
    for r in rows:
        ips = "unavailable" if r["images_per_s"] is None else f"{r['images_per_s']:.0f}"
        print(f"| {r['what']} | {ips} | {r['note']} |")
    result = {"extractors": rows, "threads": torch.get_num_threads(), "images": args.images,
              "resolution": args.resolution}
    if args.protocol_images:
        proto = bench_protocol(args.protocol_images, cfg, args.device)
        result["protocol"] = proto
        print(f"\nembedded protocol, {proto['images']} images: render data {proto['render_data_s']:.1f}s, reference "
              f"stats {proto['reference_stats_s']:.1f}s, score generated {proto['score_generated_s']:.1f}s -> "
              f"{proto['total_s_per_1000']:.1f}s per 1000 images")
    if args.json:
        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
