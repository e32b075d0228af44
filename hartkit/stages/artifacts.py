"""The resolver: what one stage leaves for the next (tokenizer, token cache, generator), in memory or on disk.

Stages take their models from here and never from each other (docs/design.md, "Dependency rules"): a model
handed over within one run sits in ``ctx.state`` (``tokenizer``, ``tokenizer_dir``, ``generator``,
``generator_dir``); otherwise the finished artifact named by the config hash (``ctx.artifact_dir``) is loaded,
or the released weights a config names (``tokenizer.checkpoint``, ``ar.checkpoint``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from hartkit.ar_models.model import ScaleAR, TokenSpec
from hartkit.ar_models.token_cache import encode_dataset, load_cache, save_cache
from hartkit.ar_models.var_official import load_var_generator
from hartkit.data import ImageTensorDataset, build_dataset, collate
from hartkit.engine import is_finished, load_artifact_weights
from hartkit.errors import ConfigError
from hartkit.tokenizers import is_finished_artifact, load_tokenizer
from hartkit.tokenizers.pretrained import load_pretrained_tokenizer, uses_pretrained
from hartkit.utils import distributed as dist_utils

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ tokenizer

def load_run_tokenizer(ctx):
    """The tokenizer of this run as it is: handed over in memory, else the finished artifact on disk (or the
    pretrained checkpoint the config names)."""
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


def get_tokenizer(ctx):
    """The tokenizer of this run, frozen on ``ctx.device`` in eval mode: what a generator trains and samples on."""
    tok = load_run_tokenizer(ctx).to(ctx.device)
    tok.eval().requires_grad_(False)
    return tok


# ------------------------------------------------------------------------------------------ token cache

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


# ------------------------------------------------------------------------------------------ generator

def build_generator(ar_cfg, tokenizer, num_categories: int | None = None) -> ScaleAR:
    if ar_cfg.condition == "class" and num_categories is not None and num_categories > ar_cfg.num_classes:
        raise ConfigError(f"the data has {num_categories} categories but ar.num_classes={ar_cfg.num_classes}; "
                         f"set ar.num_classes={num_categories}")
    return ScaleAR(ar_cfg, TokenSpec.from_tokenizer(tokenizer))


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
