"""Stage `gen_eval`: generate one image per held-out prompt and score them; report efficiency.

Prompts: the first ``eval.num_images`` of the data's test split (embedded
protocol: synthscenes test prompts; ``data=mjhq30k eval=mjhq30k``: MJHQ-30K
prompts). Reference set: the real images of the same prompts. Metrics come
from ``hartkit.eval.generation.GenerationMetrics`` (fd_* / fid, clip scores,
prompt accuracy, per category).

Efficiency (also in the record's metrics; the record stores the hardware):
- ``params_ar``, ``params_diffusion_head``, ``params_text_encoder`` (trained +
  frozen), ``params_tokenizer_decoder``;
- ``macs_per_image`` (+ ``macs_ar``, ``macs_diffusion``, ``macs_decoder``): counted
  with ``torch.utils.flop_counter.FlopCounterMode``, MACs = FLOPs / 2, with the
  run's CFG setting (CFG doubles the transformer batch);
- ``ar_steps``, ``diffusion_steps`` (``steps``: their sum; ``parameters``: AR + diffusion head;
  ``macs`` = ``macs_per_image``: the leaderboard's generic columns);
- ``latency_s`` (batch 1) and ``throughput_img_s`` at the largest batch
  <= ``ar.sampling.throughput_max_batch`` that fits (``throughput_batch``);
  hybrid also ``latency_discrete_only_s`` and ``residual_overhead_pct`` (cost of
  the residual diffusion head, HART: +7..15%).

Uncertainty and baselines (``eval.baselines``, default on; ``hartkit.eval.baselines``):
every record carries 95% bootstrap intervals over the generated images
(``intervals``) and the protocol's real-vs-real noise floor (``noise_floor``:
held-out real images of the same protocol against the reference); on the same
prompts the stage also writes a floor (``baseline: mean colour``), a ceiling
(``baseline: real images``) and the prompt metrics' chance level with real
images (``baseline: real images, shuffled prompts``) as records of their own.
``trained_commit`` is the ``git_commit`` of the generator artifact's DONE
summary (None when the artifact does not record it).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hartkit.ar_models import sampling  # called as sampling.generate_images: patchable on its module
from hartkit.ar_models.efficiency import generation_efficiency
from hartkit.ar_models.hart_generator import HARTGenerator
from hartkit.errors import ConfigError
from hartkit.eval.baselines import CEILING, FLOOR, mean_colour
from hartkit.eval.generation import GenerationMetrics
from hartkit.eval.protocols import dataset_variant, evaluation_set, heldout_set
from hartkit.eval.tables import format_generation_rows
from hartkit.records import ResultRecord
from hartkit.stages import artifacts  # called as artifacts.get_generator: patchable on its module
from hartkit.stages.eval_common import baseline_config, save_baseline_record, trained_commit
from hartkit.tokenizers.quantizers import tokenizer_label
from hartkit.utils import distributed as dist_utils
from hartkit.utils.grids import save_captioned_samples

log = logging.getLogger(__name__)


def sampling_kwargs(cfg) -> dict:
    s = cfg.ar.sampling
    return {"cfg": float(s.cfg), "top_k": int(s.top_k), "top_p": float(s.top_p), "diffusion_steps": s.diffusion_steps,
            "diffusion_cfg": cfg.ar.diffusion.cfg, "temperature": float(s.get("temperature", 1.0)),
            "diffusion_temperature": float(s.get("diffusion_temperature", 1.0))}


def generate(model, tokenizer, cond, **kw) -> torch.Tensor:
    """Images in [-1, 1]: ``sampling.generate_images``, or HART's released generator's own sampler
    (``ar=hart_0.7b ar.checkpoint=...``: hartkit.ar_models.hart_generator.HARTGenerator)."""
    if isinstance(model, HARTGenerator):
        return model.generate_images(tokenizer, cond, **kw)
    return sampling.generate_images(model, tokenizer, cond, **kw)


def efficiency_report(ctx, model, tokenizer, prompts: list[str], cat_ids: torch.Tensor) -> dict:
    """The record's efficiency numbers (hartkit.ar_models.efficiency.generation_efficiency) under this run's sampling."""
    s = ctx.cfg.ar.sampling
    conds = cat_ids if ctx.cfg.ar.condition == "class" else prompts
    if isinstance(model, HARTGenerator):
        return model.efficiency(tokenizer, prompts, sampling_kwargs(ctx.cfg), ctx.device,
                                measure=bool(s.measure_efficiency),
                                max_batch=min(int(s.throughput_max_batch), len(prompts)))
    return generation_efficiency(model, tokenizer, conds, sampling_kwargs(ctx.cfg), ctx.device,
                                 measure=bool(s.measure_efficiency),
                                 max_batch=min(int(s.throughput_max_batch), len(prompts)))


def _resize_to(images: torch.Tensor, resolution: int) -> torch.Tensor:
    if images.shape[-1] == resolution:
        return images
    return torch.nn.functional.interpolate(images, size=(resolution, resolution), mode="bicubic", antialias=True,
                                           align_corners=False).clamp(0, 1)


@torch.no_grad()
def run(ctx) -> None:
    cfg = ctx.cfg
    tokenizer = artifacts.get_tokenizer(ctx)
    model = artifacts.get_generator(ctx, tokenizer).eval()
    es = evaluation_set(cfg.data, cfg.eval)  # prompts + reference images of the protocol
    n = es.num_images
    if n < 2:
        raise ValueError(f"gen_eval needs at least 2 prompts, the {cfg.data.name} test split has {n}")
    prompts, categories = es.prompts, es.categories
    cat_ids = torch.tensor(es.category_ids(), dtype=torch.long)
    if cfg.ar.condition == "class" and int(cat_ids.max()) >= int(cfg.ar.num_classes):
        raise ConfigError(f"the protocol's class ids reach {int(cat_ids.max())} but ar.num_classes={cfg.ar.num_classes} "
                          f"(id {cfg.ar.num_classes} is the null class); use a generator trained on these classes")
    if es.resolution != int(cfg.data.resolution):
        log.info("generated images (%d px) are resized to the protocol's %d px (bicubic, antialias)",
                 cfg.data.resolution, es.resolution)

    metrics = es.make_metrics(cfg.eval, ctx.device)  # GenerationMetrics, or the protocol's own (imagenet256)
    es.load_reference(metrics)

    kw = sampling_kwargs(cfg)
    bs = int(cfg.ar.sampling.batch_size)
    # batch b holds prompts [b*bs, (b+1)*bs) and is seeded by b: the images do not depend on how many
    # processes share the work (rank r takes batches r, r+N, ...)
    batches = list(range(0, n, bs))
    mine = batches[dist_utils.rank():: dist_utils.world_size()]
    grid_imgs = None
    for start in tqdm(mine, desc="gen_eval sampling", disable=not dist_utils.is_main()):
        idx = list(range(start, min(start + bs, n)))
        cond = cat_ids[idx] if cfg.ar.condition == "class" else [prompts[j] for j in idx]
        g = torch.Generator(device=ctx.device).manual_seed(int(cfg.ar.sampling.seed) * 1_000_003 + start // bs)
        imgs = generate(model, tokenizer, cond, generator=g, **kw)
        where = {"indices": idx} if getattr(metrics, "needs_indices", False) else {}  # IS splits: sample order
        metrics.update(_resize_to(((imgs + 1) / 2).float(), es.resolution), [prompts[j] for j in idx],
                       [categories[j] for j in idx], **where)
        if grid_imgs is None:
            grid_imgs = (imgs[:16].cpu(), [prompts[j] for j in idx[:16]])
    scores = metrics.compute()
    protocol = es.protocol("generation", metrics)
    n_boot = int(cfg.eval.get("bootstrap", 1000) or 0)
    n_boot_fd = int(cfg.eval.get("bootstrap_fd", 200) or 0)
    intervals = metrics.intervals(n_boot, n_boot_fd) if n_boot else {}
    baseline_records, noise = [], {}
    if dist_utils.is_main():
        held = heldout_set(es) if cfg.eval.get("baselines", True) else None
        noise = metrics.noise_floor(held[0], held[2]) if held is not None else metrics.noise_floor_halves()
        if cfg.eval.get("baselines", True):
            baseline_records = generation_baselines(cfg, ctx.device, es, metrics, held, n_boot, n_boot_fd)

    eff = efficiency_report(ctx, model, tokenizer, prompts[:64], cat_ids[:64]) if dist_utils.is_main() else {}
    all_metrics = {**scores, **eff}
    gen_dir = ctx.state.get("generator_dir") or ctx.artifact_dir("generator")
    model_info = {
        "kind": model.kind,
        "tokenizer": cfg.tokenizer.name,
        "generator": cfg.ar.name,
        "tokens_per_image": model.spec.num_tokens,
        "patch_nums": list(model.spec.patch_nums),
        "sampling": {**kw, "seed": int(cfg.ar.sampling.seed)},
        "train_steps": int(cfg.ar.train.steps),
        "artifact": str(gen_dir),
        "macs_note": "MACs = FLOPs / 2 from torch.utils.flop_counter.FlopCounterMode (matmul/conv/attention only)",
    }
    if cfg.ar.get("checkpoint"):  # released weights (ar.checkpoint), not trained here
        model_info.update(checkpoint=str(cfg.ar.checkpoint), train_steps=0)
    if dist_utils.is_main() and grid_imgs is not None:
        path = save_captioned_samples(grid_imgs[0], grid_imgs[1], Path(gen_dir) / "gen_eval_samples.png",
                                      value_range=(-1, 1))
        ctx.logger.log_image("gen_eval/samples", str(path), caption=" | ".join(grid_imgs[1][:4]))
        model_info["sample_grid"] = str(path)
    if dist_utils.is_main() and grid_imgs is not None:
        label = f"{tokenizer_label(cfg.tokenizer)}+{cfg.ar.name}"
        safe = "".join(c if c.isalnum() or c in "-_+." else "_" for c in f"{label}-{dataset_variant(dict(cfg.data))}")
        save_captioned_samples(grid_imgs[0][:8], grid_imgs[1][:8], Path(ctx.results_dir) / "grids" / f"gen_eval-{safe}.png",
                               title=f"{label}: samples for the first test prompts", value_range=(-1, 1))

    record = ResultRecord(stage="gen_eval", label=f"{tokenizer_label(cfg.tokenizer)}+{cfg.ar.name}", protocol=protocol,
                          metrics=all_metrics, model=model_info, intervals=intervals, noise_floor=noise,
                          notes=list(metrics.notes), trained_commit=trained_commit(gen_dir))
    ctx.save_record(record)
    base_cfg = baseline_config(cfg)
    for label, role, m, ci, info, notes in baseline_records:
        save_baseline_record(ctx, ResultRecord(stage="gen_eval", label=label, protocol=protocol, metrics=m,
                                               model=info, config=base_cfg, intervals=ci, role=role,
                                               noise_floor=noise, notes=notes))
    ctx.state["gen_metrics"] = all_metrics
    if dist_utils.is_main():
        log.info("generation %s with its baselines (95%% bootstrap intervals):\n%s", record.label,
                 format_generation_rows([(record.label, "model", all_metrics, intervals)]
                                        + [(b[0], b[1], b[2], b[3]) for b in baseline_records], noise))
    keys = [k for k in ("fd_embedded", "fid", "clip_score_embedded", "clip_score", "prompt_accuracy", "latency_s",
                        "throughput_img_s", "residual_overhead_pct", "macs_per_image") if k in all_metrics]
    log.info("generation %s+%s on %s/test (%d prompts): %s", cfg.tokenizer.name, cfg.ar.name, cfg.data.name, n,
             ", ".join(f"{k}={all_metrics[k]:.4g}" for k in keys))


PROMPT_METRICS = ("clip_score", "prompt_accuracy", "class_accuracy")


def _score(cfg, device, reference_from, images_uint8, prompts, categories, n_boot, n_boot_fd, keep):
    """Score one baseline image set against the protocol's reference on this rank alone; keep the chosen keys."""
    m = GenerationMetrics(cfg.eval, device, distributed=False)
    m.copy_reference_from(reference_from)
    for s in range(0, len(images_uint8), 128):
        m.update(images_uint8[s:s + 128], None if prompts is None else prompts[s:s + 128],
                 categories[s:s + 128])
    values = m.compute()
    ci = m.intervals(n_boot, n_boot_fd) if n_boot else {}
    pick = lambda d: {k: v for k, v in d.items() if keep(k)}  # noqa: E731
    return pick(values), pick(ci), list(m.notes)


def _is_prompt_metric(key: str) -> bool:
    return key.startswith(PROMPT_METRICS)


def _is_image_metric(key: str) -> bool:
    return key.startswith(("fd_", "fid", "kid")) or key in ("num_images", "num_reference", "num_failed")


@torch.no_grad()
def generation_baselines(cfg, device, es, metrics, held, n_boot: int, n_boot_fd: int) -> list:
    """(label, role, metrics, intervals, model info, notes) of the floor, the ceiling and the shuffled-prompt rows."""
    ref = torch.cat([b for b, _ in es.reference_batches()])
    prompts, cats = list(es.prompts), list(es.categories)
    n = len(ref)
    out = []
    # floor: flat images in the mean colour of held-out real images (else of the reference, shifted by one)
    src = held[0] if held is not None else torch.roll(ref, 1, dims=0)
    flat = (mean_colour(src[:n].float() / 255.0) * 255).round().to(torch.uint8)
    m, ci, notes = _score(cfg, device, metrics, flat, prompts[: len(flat)], cats[: len(flat)], n_boot, n_boot_fd,
                          lambda k: True)
    out.append(("baseline: mean colour", FLOOR, m, ci,
                {"kind": "baseline", "images": "mean colour of " + ("held-out real images" if held else
                                                                     "the reference, shifted by one")}, notes))
    # ceiling: held-out real images for the distances, the reference images with their own prompts for the rest
    real_m, real_ci, notes = _score(cfg, device, metrics, ref, prompts, cats, n_boot, 0, _is_prompt_metric)
    if held is not None:
        m, ci, notes2 = _score(cfg, device, metrics, held[0], None, cats[: len(held[0])], n_boot, n_boot_fd,
                               _is_image_metric)
        real_m.update(m)
        real_ci.update(ci)
        notes += notes2
    out.append(("baseline: real images", CEILING, real_m, real_ci,
                {"kind": "baseline", "images": (held[2] + " (distances); " if held else "")
                 + "reference images with their own prompts (prompt metrics)"}, notes))
    # chance level of the prompt metrics with realistic images: a fixed permutation of the prompts
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    m, ci, notes = _score(cfg, device, metrics, ref, [prompts[i] for i in perm], cats, n_boot, 0, _is_prompt_metric)
    out.append(("baseline: real images, shuffled prompts", FLOOR, m, ci,
                {"kind": "baseline", "images": "reference images paired with a fixed permutation of the prompts"},
                notes))
    return out
