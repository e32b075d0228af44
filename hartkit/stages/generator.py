"""Stage `generator`: train (or reuse) the AR generator on the stage's tokenizer.

1. The tokenizer: handed over in memory (``ctx.state["tokenizer"]``) or loaded from
   its finished artifact / pretrained checkpoint.
2. The train split is encoded once and cached on disk under
   ``<paths.artifacts>/token_cache/<name of the tokenizer artifact folder>/``
   (a sweep over generator settings reuses it).
3. A finished generator artifact with the same config hash is reused unless
   ``retrain=true``; otherwise the generator trains (``resume=true`` continues
   from its last checkpoint) and is saved as model.safetensors + config.yaml + DONE.

Hands over ``ctx.state["generator"]`` (eval mode) and ``ctx.state["generator_dir"]``. Loading the tokenizer,
the token cache and a finished or released generator is the resolver's (``hartkit.stages.artifacts``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from omegaconf import OmegaConf

from hartkit.ar_models.model import ScaleAR
from hartkit.ar_models.sampling import generate_images
from hartkit.ar_models.trainer import train_generator
from hartkit.data import build_dataset
from hartkit.engine import finish_artifact, is_finished, mark_unfinished
from hartkit.engine.rng import reseed
from hartkit.stages.artifacts import (  # the resolver: models and the token cache, in memory or on disk
    build_generator,
    get_token_cache,
    get_tokenizer,
    load_generator,
    pretrained_generator,
)
from hartkit.utils import distributed as dist_utils
from hartkit.utils.env import git_commit
from hartkit.utils.grids import save_captioned_samples

log = logging.getLogger(__name__)


def grid_prompts(ctx, n: int) -> tuple[list[str], torch.Tensor]:
    """The first ``n`` prompts (and category ids) of the held-out split: what the sample grid shows."""
    test = build_dataset(ctx.cfg.data, "test")
    n = min(n, len(test))
    rows = test.select(range(n))
    return list(rows["prompt"]), torch.tensor(rows["category_id"], dtype=torch.long)


def make_grid_fn(ctx, tokenizer):
    cfg = ctx.cfg
    prompts, cat_ids = grid_prompts(ctx, int(cfg.ar.train.grid_size))
    s = cfg.ar.sampling

    def grid_fn(model: ScaleAR, step: int, folder: Path) -> Path | None:
        if not dist_utils.is_main() or not prompts:
            return None
        cond = cat_ids if cfg.ar.condition == "class" else prompts
        g = torch.Generator(device=ctx.device).manual_seed(int(s.seed))
        imgs = generate_images(model, tokenizer, cond, cfg=float(s.cfg), top_k=int(s.top_k), top_p=float(s.top_p),
                               generator=g)
        path = save_captioned_samples(imgs, prompts, folder / "samples" / f"step_{step:06d}.png", value_range=(-1, 1))
        ctx.logger.log_image("generator/samples", str(path), caption=" | ".join(prompts[:4]), step=step)
        log.info("sample grid: %s", path)
        return path

    return grid_fn


def run(ctx) -> None:
    cfg = ctx.cfg
    tokenizer = get_tokenizer(ctx)
    art = ctx.artifact_dir("generator")
    if cfg.ar.get("checkpoint"):
        pretrained_generator(ctx, tokenizer)
        log.info("generator %s: official weights from ar.checkpoint=%s (not trained here)", cfg.ar.name,
                 cfg.ar.checkpoint)
        return
    if is_finished(art) and not cfg.retrain:
        ctx.state["generator"], ctx.state["generator_dir"] = load_generator(ctx, tokenizer, art), art
        log.info("generator %s: reusing the finished artifact %s (retrain=true trains again)", cfg.ar.name, art)
        return

    cache = get_token_cache(ctx, tokenizer)
    num_categories = int(cache["tensors"]["category_id"].max()) + 1
    # the initial weights depend on the seed alone, not on what this process did before (a tokenizer trained
    # here or built and loaded from disk, a token cache encoded or read): a resumed run starts from the same ones
    reseed(cfg.seed, "generator", "init")
    model = build_generator(cfg.ar, tokenizer, num_categories)
    mark_unfinished(art)  # retraining: the old weights no longer count as finished
    groups = model.parameter_groups()
    log.info("generator %s on %s (%s): %.2f M parameters (AR %.2f M, diffusion head %.2f M, text encoder %.2f M), "
             "%d tokens per image, training %d steps -> %s", cfg.ar.name, cfg.tokenizer.name, model.kind,
             groups["total_trained"] / 1e6, groups["ar"] / 1e6, groups["diffusion_head"] / 1e6,
             groups["text_encoder_trained"] / 1e6, model.spec.num_tokens, cfg.ar.train.steps, art)

    commit = git_commit()  # the code this process runs (read now: the checkout may change while it trains)
    result = train_generator(model, cache, cfg.ar, art, ctx.device, seed=cfg.seed, resume=cfg.resume,
                             logger=ctx.logger, grid_fn=make_grid_fn(ctx, tokenizer))
    config = {"ar": OmegaConf.to_container(cfg.ar, resolve=True),
              "token_spec": {"kind": model.spec.kind, "patch_nums": list(model.spec.patch_nums),
                             "vocab_size": model.spec.vocab_size, "latent_channels": model.spec.latent_channels},
              "tokenizer": cfg.tokenizer.name}
    if ctx.state.get("tokenizer_dir"):  # relative, so the artifacts folder can move: hartkit.load_generator finds it
        config["tokenizer_dir"] = os.path.relpath(ctx.state["tokenizer_dir"], art)
    finish_artifact(art, result.model, config, {**result.summary, "git_commit": commit})
    ctx.state["generator"], ctx.state["generator_dir"] = result.model, art
    log.info("generator %s: finished %d steps -> %s%s", cfg.ar.name, result.step, art,
             f" (samples: {result.grid_path})" if result.grid_path else "")
