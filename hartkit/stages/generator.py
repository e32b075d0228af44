"""Stage `generator`: train (or reuse) the AR generator on the stage's tokenizer.

1. The tokenizer: handed over in memory (``ctx.state["tokenizer"]``) or loaded from
   its finished artifact / pretrained checkpoint.
2. The train split is encoded once and cached on disk under
   ``<paths.artifacts>/token_cache/<name of the tokenizer artifact folder>/``
   (a sweep over generator settings reuses it).
3. A finished generator artifact with the same config hash is reused unless
   ``retrain=true``; otherwise the generator trains (``resume=true`` continues
   from its last checkpoint) and is saved as model.safetensors + config.yaml + DONE.

Hands over ``ctx.state["generator"]`` (eval mode) and ``ctx.state["generator_dir"]``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from omegaconf import OmegaConf

from hartkit.ar_models.grid import save_sample_grid
from hartkit.ar_models.model import ScaleAR, TokenSpec
from hartkit.ar_models.sampling import generate_images
from hartkit.ar_models.token_cache import encode_dataset, load_cache, save_cache
from hartkit.ar_models.trainer import train_generator
from hartkit.ar_models.var_official import load_var_generator
from hartkit.data import ImageTensorDataset, build_dataset, collate
from hartkit.engine import finish_artifact, is_finished, load_artifact_weights, mark_unfinished
from hartkit.engine.rng import reseed
from hartkit.errors import ConfigError
from hartkit.utils import distributed as dist_utils
from hartkit.utils.env import git_commit

log = logging.getLogger(__name__)


def get_tokenizer(ctx):
    # inside: the recon_eval stage module loads torchmetrics (seconds), which training a generator never needs
    from hartkit.stages.recon_eval import get_tokenizer as _get

    tok = _get(ctx).to(ctx.device)
    tok.eval().requires_grad_(False)
    return tok


def token_cache_dir(ctx) -> Path:
    """Keyed by the tokenizer artifact's name (its config hash covers data, tokenizer and seed)."""
    return Path(ctx.cfg.paths.artifacts) / "token_cache" / ctx.artifact_dir("tokenizer").name


def get_token_cache(ctx, tokenizer) -> dict:
    """The encoded train split: loaded from disk, or encoded once and written (rank 0)."""
    folder = token_cache_dir(ctx)
    # rank 0 decides for every rank: a rank that looked later could find the cache rank 0 has just written,
    # skip the encoding and its barrier, and leave the ranks one collective apart (a hang at the next one)
    cache = load_cache(folder)
    if dist_utils.broadcast_object(cache is not None and not ctx.cfg.retrain):
        cache = cache if cache is not None else load_cache(folder)
        log.info("token cache: %s (%d images)", folder, len(cache["prompts"]))
        return cache

    train = ImageTensorDataset(build_dataset(ctx.cfg.data, "train"))
    encoded = encode_dataset(tokenizer, train, 64, ctx.device, collate, desc="encode train split")
    if dist_utils.is_main():
        save_cache(folder, encoded, {"tokenizer": ctx.cfg.tokenizer.name, "kind": tokenizer.kind,
                                     "patch_nums": list(tokenizer.patch_nums)})
        log.info("token cache: encoded %d images -> %s", len(encoded["prompts"]), folder)
    dist_utils.barrier()
    return encoded


def build_generator(ar_cfg, tokenizer, num_categories: int | None = None) -> ScaleAR:
    if ar_cfg.condition == "class" and num_categories is not None and num_categories > ar_cfg.num_classes:
        raise ConfigError(f"the data has {num_categories} categories but ar.num_classes={ar_cfg.num_classes}; "
                         f"set ar.num_classes={num_categories}")
    return ScaleAR(ar_cfg, TokenSpec.from_tokenizer(tokenizer))


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
        path = save_sample_grid(imgs, prompts, folder / "samples" / f"step_{step:06d}.png")
        ctx.logger.log_image("generator/samples", str(path), caption=" | ".join(prompts[:4]), step=step)
        log.info("sample grid: %s", path)
        return path

    return grid_fn


def load_generator(ctx, tokenizer, art: Path) -> ScaleAR:
    model = build_generator(ctx.cfg.ar, tokenizer)
    load_artifact_weights(art, model)
    return model.to(ctx.device).eval()


def get_generator(ctx, tokenizer) -> ScaleAR:
    """The generator of this run: handed over in memory, else the finished artifact on disk."""
    model = ctx.state.get("generator")
    if model is not None:
        return model
    art = ctx.artifact_dir("generator")
    if ctx.cfg.ar.get("checkpoint"):  # official weights (ar=var_d* ar.checkpoint=...): nothing to train
        return pretrained_generator(ctx, tokenizer)
    if not is_finished(art):
        raise FileNotFoundError(f"no finished generator artifact at {art} for this config; "
                                "run stages=[tokenizer,generator,gen_eval] (or add generator to stages) first")
    model = load_generator(ctx, tokenizer, art)
    ctx.state["generator"], ctx.state["generator_dir"] = model, art
    return model


def pretrained_generator(ctx, tokenizer) -> ScaleAR:
    """``ar.checkpoint``: VAR's official generator weights, loaded instead of trained (hartkit.ar_models.var_official)."""
    model = load_var_generator(ctx.cfg.ar, tokenizer, ctx.device)
    ctx.state["generator"], ctx.state["generator_dir"] = model, ctx.artifact_dir("generator")
    return model


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
