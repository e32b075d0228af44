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

With ``eval.baselines`` (default) the stage also scores, on the same test
images, the mean-colour floor and the thumbnails matched to this tokenizer's
budget (``hartkit.eval.baselines``), and a ceiling row: other real test images
against these ones (the real-vs-real noise floor of rFD / rKID). Each is a
record of its own (``role`` floor / baseline / ceiling), so the leaderboard
shows them beside the trained rows. Every record carries 95% bootstrap
intervals over images (``eval.bootstrap`` resamples; ``eval.bootstrap_fd`` for
Fréchet distances), the noise floor, and the commit at which the artifact was
trained (``git_commit`` in the artifact's ``DONE`` summary, when written).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from hartkit.data import ImageTensorDataset, build_dataset, collate
from hartkit.data.photos import TEST_PHOTOS
from hartkit.eval.baselines import reconstruction_baselines
from hartkit.eval.embedded import get_embedded_evaluator
from hartkit.eval.embedded.prompt_accuracy import PromptAccuracy
from hartkit.eval.frechet import FrechetStats, compute_fd
from hartkit.eval.generation import kid_name
from hartkit.eval.intervals import KID, bootstrap_mean
from hartkit.eval.protocols import dataset_variant
from hartkit.eval.reconstruction import ReconstructionMetrics, _get, recon_metric_name
from hartkit.eval.tables import format_comparison, format_table
from hartkit.records import Protocol, ResultRecord
from hartkit.stages.artifacts import load_run_tokenizer
from hartkit.stages.eval_common import baseline_config, save_baseline_record, trained_commit
from hartkit.tokenizers.pretrained import uses_pretrained
from hartkit.tokenizers.quantizer import usage_stats
from hartkit.tokenizers.quantizers import tokenizer_label
from hartkit.utils import distributed as dist_utils
from hartkit.utils.grids import save_labelled_rows

log = logging.getLogger(__name__)


def decode_paths(kind: str) -> list[tuple[str, bool]]:
    """(metric-name suffix, use_residual) per decode path; the unsuffixed path is the tokenizer's full decode."""
    if kind == "hybrid":
        return [("", True), ("_discrete", False)]
    return [("", True)]


def bits_per_image(patch_nums, vocab_size: int) -> float | None:
    if vocab_size <= 0:
        return None
    return float(sum(p * p for p in patch_nums) * math.log2(vocab_size))


@dataclasses.dataclass
class ReconResult:
    metrics: dict  # the tokenizer's numbers (all decode paths, codebook statistics)
    protocol_fields: dict
    intervals: dict  # metric -> [low, high]
    baselines: dict  # baseline name -> (ReconBaseline, metrics, intervals)
    noise_floor: dict
    grid_rows: list  # (row name, images in [0, 1]) of the first batch


def _resamples(eval_cfg) -> tuple[int, int]:
    return int(_get(eval_cfg, "bootstrap", 1000) or 0), int(_get(eval_cfg, "bootstrap_fd", 200) or 0)


@torch.no_grad()
def score_reconstruction(model, loader, eval_cfg, device, baselines=(), heldout=None,
                         heldout_note: str = "", grid_images: int = 8) -> ReconResult:
    """The tokenizer, its baselines (same images) and the real-vs-real noise floor, with intervals.

    ``heldout``: other real images of the same protocol (B x 3 x H x W in [0, 1]) for the noise floor;
    None: the scored images split in two halves.
    """
    model.eval()
    paths = decode_paths(model.kind)
    scorers = {suffix: ReconstructionMetrics(eval_cfg, device) for suffix, _ in paths}
    base_scorers = {b.name: ReconstructionMetrics(eval_cfg, device) for b in baselines}
    # prompt accuracy of the reconstructions: the most a generator of these tokens can score (its ceiling)
    judges = _prompt_judges(eval_cfg, [suffix for suffix, _ in paths] + [b.name for b in baselines], device)
    K = len(model.patch_nums)
    hits = torch.zeros(K, max(model.vocab_size, 1), dtype=torch.float64, device=device)
    count = 0
    grid_rows: list = []
    path_names = {"": f"{model.kind} decode" if model.kind != "hybrid" else "hybrid: discrete+residual",
                  "_discrete": "hybrid: discrete only"}
    for batch in loader:
        x = batch["image"].to(device)
        x01 = ((x.float() + 1) / 2).clamp(0, 1)
        feats = scorers[""].features_of(x01)
        tokens = model.encode(x)
        rows = [("original", x01[:grid_images])]
        for suffix, use_residual in paths:
            recon = ((model.decode(tokens, use_residual=use_residual).float() + 1) / 2).clamp(0, 1)
            scorers[suffix].update(x01, recon, feats)
            if judges:
                judges[suffix].update(recon, list(batch["prompt"]))
            rows.append((path_names[suffix], recon[:grid_images]))
        for b in baselines:
            recon = b(x01)
            base_scorers[b.name].update(x01, recon, feats)
            if judges:
                judges[b.name].update(recon, list(batch["prompt"]))
            rows.append((b.name.removeprefix("baseline: "), recon[:grid_images]))
        if not grid_rows:
            grid_rows = [(name, imgs.cpu()) for name, imgs in rows]
        if tokens.indices is not None:
            for k, idx in enumerate(tokens.indices):
                hits[k] += torch.bincount(idx.flatten(), minlength=model.vocab_size).double()
        count += x.shape[0]
    dist_utils.all_reduce_sum(hits)
    if count == 0 and dist_utils.world_size() == 1:
        raise ValueError("the test split is empty: nothing to evaluate")
    n_boot, n_boot_fd = _resamples(eval_cfg)
    metrics: dict[str, float | None] = {}
    intervals: dict[str, list[float]] = {}
    for suffix, _ in paths:
        for name, value in scorers[suffix].compute().items():
            metrics[f"{name}{suffix}"] = value
        if n_boot:
            for name, ci in scorers[suffix].intervals(n_boot, n_boot_fd).items():
                intervals[f"{name}{suffix}"] = ci
        if judges:
            for name, (value, ci) in _prompt_scores(judges[suffix], n_boot).items():
                metrics[f"{name}{suffix}"] = value
                if ci is not None:
                    intervals[f"{name}{suffix}"] = ci
    if model.vocab_size > 0:
        metrics.update(usage_stats(hits.cpu()))
    metrics["tokens_per_image"] = float(model.num_tokens)
    metrics["bits_per_image"] = bits_per_image(model.patch_nums, model.vocab_size)
    base_results = {}
    for b in baselines:
        sc = base_scorers[b.name]
        m, ci = sc.compute(), sc.intervals(n_boot, n_boot_fd) if n_boot else {}
        if judges:
            for name, (value, interval) in _prompt_scores(judges[b.name], n_boot).items():
                m[name] = value
                if interval is not None:
                    ci[name] = interval
        base_results[b.name] = (b, m, ci)
    # noise floor: other real images of the protocol against the scored ones (features only)
    noise: dict = {}
    gathered = scorers[""]._gathered()
    for name in scorers[""].extractors:
        orig = gathered[f"orig/{name}"].numpy()
        if heldout is not None and len(heldout) >= 2:
            other = torch.cat([scorers[""].features_of(heldout[i:i + 256].to(device))[name]
                               for i in range(0, len(heldout), 256)]).numpy()
            ref, desc = orig, heldout_note or f"{len(other)} other test images vs the {len(orig)} scored"
        else:
            half = len(orig) // 2
            ref, other = orig[:half], orig[half:2 * half]
            desc = f"scored images split in halves ({half} vs {half}): n/2, not n"
        if len(ref) < 2 or len(other) < 2:
            continue
        noise[recon_metric_name(name)] = compute_fd(FrechetStats.from_features(other), FrechetStats.from_features(ref))
        noise["r" + kid_name(name)] = KID(ref)(other)
        noise.update(num_images=int(len(other)), sets=desc)
    return ReconResult(metrics, scorers[""].protocol_fields(), intervals, base_results, noise, grid_rows)


# of the prompt metrics, the ones a reconstruction record keeps (the generation ceilings that matter most)
RECON_PROMPT_METRICS = ("prompt_accuracy", "prompt_accuracy/shape", "prompt_accuracy/color",
                        "prompt_accuracy/position", "prompt_accuracy/size", "class_accuracy")


def _prompt_judges(eval_cfg, names: list[str], device) -> dict | None:
    """One PromptAccuracy per decode path / baseline when the protocol scores prompts, else None."""
    if not _get(eval_cfg, "prompt_accuracy", False) or dist_utils.is_dist():
        return None  # per-image prompt scores are not gathered over ranks here

    evaluator = get_embedded_evaluator(_get(eval_cfg, "embedded_weights"), device)
    return {name: PromptAccuracy(evaluator) for name in names}


def _prompt_scores(judge, n_boot: int) -> dict[str, tuple[float, list[float] | None]]:
    """{metric: (mean, 95% interval or None)} for RECON_PROMPT_METRICS; empty when no prompt followed the grammar."""
    if judge.count == 0:
        return {}
    per = judge.per_image()
    out = {}
    for name in RECON_PROMPT_METRICS:
        values = per[name]
        out[name] = (float(values.mean()), list(bootstrap_mean(values, n_boot)) if n_boot else None)
    return out


@torch.no_grad()
def evaluate_reconstruction(model, loader, eval_cfg, device) -> tuple[dict[str, float | None], dict]:
    """Metrics over every batch of ``loader`` (dicts with ``image`` in [-1, 1]); returns (metrics, protocol fields)."""
    result = score_reconstruction(model, loader, eval_cfg, device)
    return result.metrics, result.protocol_fields


def heldout_images(data_cfg, n: int, scored: int):
    """Real test images the scored set does not contain (up to ``scored`` of them), as [0, 1] tensors + how drawn.

    Generated datasets (synthscenes, photos) are a pure function of (seed, split, index): the held-out
    images are test images ``scored .. 2*scored-1``; other datasets use what the test split has beyond
    the first ``n``. None when there is nothing left.
    """
    data = OmegaConf.to_container(data_cfg, resolve=True) if not isinstance(data_cfg, dict) else dict(data_cfg)
    if data.get("name") in ("synthscenes", "photos"):
        data["test_size"] = 2 * scored
    ds = build_dataset(data, "test")
    start = n if data.get("name") not in ("synthscenes", "photos") else scored
    stop = min(len(ds), start + scored)
    if stop - start < 2:
        return None, ""
    rows = ds.select(range(start, stop))
    arr = np.stack([np.asarray(im.convert("RGB")) for im in rows["image"]])
    images = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0
    return images, f"test images [{start}, {stop}) vs the scored [0, {scored})"


def run(ctx) -> None:
    cfg = ctx.cfg
    label = tokenizer_label(cfg.tokenizer)  # name, plus the quantizer type when it is not VAR's
    model = load_run_tokenizer(ctx).to(ctx.device)
    model.check_image_size(cfg.data.resolution)
    test = build_dataset(cfg.data, "test")
    n = min(int(cfg.eval.num_images), len(test))
    scored = test.select(range(n))
    # under torchrun each rank scores its share; the metrics (torchmetrics, FD sums, code hits) are summed over ranks
    mine = scored.select(range(dist_utils.rank(), n, dist_utils.world_size()))
    loader = DataLoader(ImageTensorDataset(mine), batch_size=cfg.eval.batch_size, shuffle=False, collate_fn=collate)
    C, h = model.latent_channels, model.latent_size
    use_baselines = bool(cfg.eval.get("baselines", True))
    baselines = reconstruction_baselines(model.kind, model.patch_nums, model.vocab_size, (C, h, h),
                                         int(cfg.data.resolution), label=label) if use_baselines else []
    heldout, note = heldout_images(cfg.data, n, n) if use_baselines else (None, "")
    res = score_reconstruction(model, loader, cfg.eval, ctx.device, baselines, heldout, note)
    metrics = res.metrics

    protocol = recon_protocol(cfg, n, res.protocol_fields)
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
    art = ctx.state.get("tokenizer_dir")
    if art is None and not uses_pretrained(cfg.tokenizer):
        art = ctx.artifact_dir("tokenizer")
    record = ResultRecord(stage="recon_eval", label=label, protocol=protocol, metrics=metrics,
                          model=model_info, intervals=res.intervals, noise_floor=res.noise_floor,
                          trained_commit=trained_commit(art))
    ctx.save_record(record)
    rows = [(label, "model", metrics, res.intervals)]
    if use_baselines:
        base_cfg = baseline_config(cfg)
        for name, (b, m, ci) in res.baselines.items():
            save_baseline_record(ctx, ResultRecord(stage="recon_eval", label=name, protocol=protocol, metrics=m,
                                                   model=b.info(), config=base_cfg, intervals=ci, role=b.role,
                                                   noise_floor=res.noise_floor))
            rows.append((name, b.role, m, ci))
        if res.noise_floor:
            ceiling = {k: v for k, v in res.noise_floor.items() if isinstance(v, float)}
            save_baseline_record(ctx, ResultRecord(
                stage="recon_eval", label="ceiling: other real images", protocol=protocol, metrics=ceiling,
                model={"kind": "baseline", "sets": res.noise_floor.get("sets")}, config=base_cfg, role="ceiling",
                noise_floor=res.noise_floor,
                notes=["real-vs-real distances (the noise floor); a perfect reconstruction has rFD 0, PSNR inf, SSIM 1"]))
    if dist_utils.is_main() and res.grid_rows:
        grid = Path(ctx.results_dir) / "grids" / f"recon_eval-{_safe(label)}-{_safe(dataset_variant(dict(cfg.data)))}.png"
        save_labelled_rows(res.grid_rows, grid, title=f"{label} on {cfg.data.name}/test: reconstructions")
        log.info("reconstruction grid: %s", grid)
        ctx.logger.log_image("recon_eval/reconstructions", str(grid), caption=", ".join(r[0] for r in res.grid_rows))
    ctx.state["recon_metrics"] = metrics
    log.info("reconstruction of %s on %s/test (%d images, %d px):\n%s\n%s", label, cfg.data.name, n,
             cfg.data.resolution, format_table(metrics, model.kind), format_comparison(rows, res.noise_floor))


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_+." else "_" for c in str(text))


def recon_protocol(cfg, n: int, proto_fields: dict) -> Protocol:
    known = {f.name for f in dataclasses.fields(Protocol)} - {"task", "dataset", "split", "num_images", "resolution"}
    proto_fields = dict(proto_fields)
    extra = dict(proto_fields.pop("extra", {}) or {})
    extra.update({k: v for k, v in proto_fields.items() if k not in known})
    if cfg.data.name == "photos":
        extra["source"] = (f"crops of only {len(TEST_PHOTOS)} test photographs ({', '.join(TEST_PHOTOS)}): "
                           "images are not independent")
    return Protocol(task="reconstruction", dataset=dataset_variant(dict(cfg.data)), split="test", num_images=n,
                    resolution=int(cfg.data.resolution),
                    **{"resize_filter": cfg.data.resize_filter, **{k: v for k, v in proto_fields.items() if k in known}},
                    extra=extra)
