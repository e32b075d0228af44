"""Stage `recon_eval`: how well the tokenizer reconstructs the test split.

Metric names in the record (one record per run):

- ``psnr``, ``ssim`` (and whatever else ``ReconstructionMetrics`` computes, e.g.
  rFID / rFD): the tokenizer's full decode path: discrete-only for ``discrete``,
  discrete + residual for ``hybrid``, the continuous latent for ``continuous``.
- ``<name>_discrete`` (hybrid only): the same metrics of the discrete-only path.
- ``codebook_usage``, ``perplexity``: over all scales; ``codebook_usage/scale_k``,
  ``perplexity/scale_k`` per scale, k counted from 0 (the 1x1 scale).
  Usage = fraction of the V codes hit at least once on the evaluated images;
  perplexity = exp(entropy) of the code histogram.
- ``tokens_per_image``: sum of pn_k**2; ``bits_per_image``: sum of pn_k**2 * log2(V)
  (None for continuous tokens: not applicable; for hybrid, the discrete part only).
"""

from __future__ import annotations

import dataclasses
import logging
import math

import torch
from torch.utils.data import DataLoader

from hartkit.records import Protocol, ResultRecord
from hartkit.tokenizers import is_finished_artifact, load_tokenizer
from hartkit.tokenizers.pretrained import load_pretrained_tokenizer, uses_pretrained
from hartkit.tokenizers.quantizer import usage_stats
from hartkit.utils import distributed as dist_utils

log = logging.getLogger(__name__)


def get_tokenizer(ctx):
    """The tokenizer of this run: handed over in memory, else the finished artifact on disk."""
    model = ctx.state.get("tokenizer")
    if model is not None:
        return model
    tok_cfg = ctx.cfg.tokenizer
    if uses_pretrained(tok_cfg):
        model = load_pretrained_tokenizer(tok_cfg, ctx.device)
    else:
        art = ctx.artifact_dir("tokenizer")
        if not is_finished_artifact(art):
            raise FileNotFoundError(
                f"no finished tokenizer artifact at {art} for this config; run stages=[tokenizer,recon_eval,...] first")
        model = load_tokenizer(art, ctx.device)
    ctx.state["tokenizer"] = model
    return model


def decode_paths(kind: str) -> list[tuple[str, bool]]:
    """(metric-name suffix, use_residual) per decode path; the unsuffixed path is the tokenizer's full decode."""
    if kind == "hybrid":
        return [("", True), ("_discrete", False)]
    return [("", True)]


def bits_per_image(patch_nums, vocab_size: int) -> float | None:
    if vocab_size <= 0:
        return None
    return float(sum(p * p for p in patch_nums) * math.log2(vocab_size))


@torch.no_grad()
def evaluate_reconstruction(model, loader, eval_cfg, device) -> tuple[dict[str, float | None], dict]:
    """Metrics over every batch of ``loader`` (dicts with ``image`` in [-1, 1]); returns (metrics, protocol fields)."""
    from hartkit.eval.reconstruction import ReconstructionMetrics

    model.eval()
    paths = decode_paths(model.kind)
    scorers = {suffix: ReconstructionMetrics(eval_cfg, device) for suffix, _ in paths}
    K = len(model.patch_nums)
    hits = torch.zeros(K, max(model.vocab_size, 1), dtype=torch.float64, device=device)
    count = 0
    for batch in loader:
        x = batch["image"].to(device)
        tokens = model.encode(x)
        for suffix, use_residual in paths:
            recon = model.decode(tokens, use_residual=use_residual)
            scorers[suffix].update((x.float() + 1) / 2, (recon.float() + 1) / 2)
        if tokens.indices is not None:
            for k, idx in enumerate(tokens.indices):
                hits[k] += torch.bincount(idx.flatten(), minlength=model.vocab_size).double()
        count += x.shape[0]
    dist_utils.all_reduce_sum(hits)
    if count == 0 and dist_utils.world_size() == 1:
        raise ValueError("the test split is empty: nothing to evaluate")
    metrics: dict[str, float | None] = {}
    for suffix, _ in paths:
        for name, value in scorers[suffix].compute().items():
            metrics[f"{name}{suffix}"] = value
    if model.vocab_size > 0:
        metrics.update(usage_stats(hits.cpu()))
    metrics["tokens_per_image"] = float(model.num_tokens)
    metrics["bits_per_image"] = bits_per_image(model.patch_nums, model.vocab_size)
    return metrics, scorers[""].protocol_fields()


def run(ctx) -> None:
    from hartkit.data import ImageTensorDataset, build_dataset, collate

    cfg = ctx.cfg
    model = get_tokenizer(ctx).to(ctx.device)
    model.check_image_size(cfg.data.resolution)
    test = build_dataset(cfg.data, "test")
    n = min(int(cfg.eval.num_images), len(test))
    # under torchrun each rank scores its share; the metrics (torchmetrics, FD sums, code hits) are summed over ranks
    test = test.select(range(dist_utils.rank(), n, dist_utils.world_size()))
    loader = DataLoader(ImageTensorDataset(test), batch_size=cfg.eval.batch_size, shuffle=False, collate_fn=collate)
    metrics, proto_fields = evaluate_reconstruction(model, loader, cfg.eval, ctx.device)

    known = {f.name for f in dataclasses.fields(Protocol)} - {"task", "dataset", "split", "num_images", "resolution"}
    extra = dict(proto_fields.pop("extra", {}) or {})
    extra.update({k: v for k, v in proto_fields.items() if k not in known})
    protocol = Protocol(task="reconstruction", dataset=cfg.data.name, split="test", num_images=n,
                        resolution=int(cfg.data.resolution),
                        **{"resize_filter": cfg.data.resize_filter, **{k: v for k, v in proto_fields.items() if k in known}},
                        extra=extra)
    C, h = model.latent_channels, model.latent_size
    model_info = {
        "kind": model.kind,
        "parameters": model.num_parameters(),
        "patch_nums": list(model.patch_nums),
        "vocab_size": model.vocab_size,
        "latent_shape": [C, h, h],
        "downsample": model.downsample,
        "tokens_per_image": model.num_tokens,
        "bits_per_image": metrics["bits_per_image"],
        # continuous numbers a decoder needs besides the discrete tokens
        "continuous_values_per_image": {"discrete": 0, "hybrid": C * h * h}.get(model.kind, C * model.num_tokens),
        "artifact": str(ctx.state.get("tokenizer_dir") or cfg.tokenizer.checkpoint),
    }
    record = ResultRecord(stage="recon_eval", label=cfg.tokenizer.name, protocol=protocol, metrics=metrics,
                          model=model_info)
    ctx.save_record(record)
    ctx.state["recon_metrics"] = metrics
    log.info("reconstruction of %s on %s/test (%d images, %d px):\n%s", cfg.tokenizer.name, cfg.data.name, n,
             cfg.data.resolution, format_table(metrics, model.kind))


def format_table(metrics: dict, kind: str) -> str:
    """A small text table: one row per decode path, then per-scale codebook statistics."""
    paths = [("discrete+residual" if kind == "hybrid" else kind, "")]
    if kind == "hybrid":
        paths.append(("discrete only", "_discrete"))
    names = sorted({k for k in metrics if "/" not in k and not k.endswith("_discrete")} -
                   {"codebook_usage", "perplexity", "tokens_per_image", "bits_per_image"})
    widths = [max(12, len(n) + 2) for n in names]
    lines = [f"{'path':<20}" + "".join(f"{n:>{w}}" for n, w in zip(names, widths))]
    for label, suffix in paths:
        lines.append(f"{label:<20}" + "".join(_fmt(metrics.get(n + suffix), w) for n, w in zip(names, widths)))
    bits = metrics.get("bits_per_image")
    lines.append(f"tokens/image {metrics['tokens_per_image']:.0f}, bits/image "
                 + ("n/a (continuous)" if bits is None else f"{bits:.0f}"))
    if "codebook_usage" in metrics:
        scales = sorted(int(k.rsplit("_", 1)[1]) for k in metrics if k.startswith("codebook_usage/scale_"))
        lines.append(f"codebook usage {metrics['codebook_usage']:.3f}, perplexity {metrics['perplexity']:.1f}; per scale:")
        lines.append("  usage      " + " ".join(f"{metrics[f'codebook_usage/scale_{k}']:.3f}" for k in scales))
        lines.append("  perplexity " + " ".join(f"{metrics[f'perplexity/scale_{k}']:.1f}" for k in scales))
    return "\n".join(lines)


def _fmt(value, width: int = 12) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.4f}"
