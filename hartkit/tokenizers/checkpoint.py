"""Build a tokenizer from its config, save it as an artifact, load it back.

An artifact is a folder with ``model.safetensors`` (weights), ``config.yaml``
(the resolved ``tokenizer`` config subtree) and, for finished training runs,
a ``DONE`` marker written last.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from hartkit.engine import finish_artifact, is_finished
from hartkit.errors import CheckpointMismatchError, ConfigError
from hartkit.tokenizers.config import TokenizerConfig
from hartkit.tokenizers.quantizers import quantizer_schema
from hartkit.tokenizers.tokenizer import MultiScaleTokenizer

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"


def tokenizer_config(tok_cfg: Any) -> DictConfig:
    """Validate a tokenizer config (dict / DictConfig) against the schema."""
    schema = OmegaConf.structured(TokenizerConfig)
    cfg = tok_cfg if isinstance(tok_cfg, DictConfig) else OmegaConf.create(tok_cfg)
    q_schema = quantizer_schema(cfg.get("quantizer", None))  # None: VAR's codebook (the plain QuantizerConfig)
    if q_schema is not None:
        schema = OmegaConf.merge(schema, {"quantizer": OmegaConf.structured(q_schema)})
    return OmegaConf.merge(schema, cfg)


def build_tokenizer(tok_cfg: Any) -> MultiScaleTokenizer:
    """A freshly initialised tokenizer described by a ``tokenizer`` config subtree."""
    cfg = tokenizer_config(tok_cfg)
    if cfg.freeze_quantizer_path and not (cfg.init_from or cfg.checkpoint):
        raise ConfigError("tokenizer.freeze_quantizer_path=true freezes the encoder, quant_conv and quantizer, so it "
                         "needs trained weights to start from: set tokenizer.init_from=<a discrete tokenizer's "
                         "artifact folder or checkpoint> (HART's recipe, conf/tokenizer/hybrid_hart_recipe.yaml)")
    return MultiScaleTokenizer(
        kind=cfg.kind,
        autoencoder=OmegaConf.to_container(cfg.autoencoder, resolve=True),
        quantizer=OmegaConf.to_container(cfg.quantizer, resolve=True),
        kl_weight=cfg.kl_weight,
        residual_drop_p=cfg.residual_drop_p,
        name=cfg.name,
        freeze_quantizer_path=cfg.freeze_quantizer_path,
    )


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise CheckpointMismatchError listing missing / unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or shapes:
        def fmt(title: str, items: list[str]) -> str:
            if not items:
                return ""
            shown = "\n    ".join(items[:40])
            more = f"\n    ... and {len(items) - 40} more" if len(items) > 40 else ""
            return f"\n  {title} ({len(items)}):\n    {shown}{more}"

        raise CheckpointMismatchError(
            f"{source} does not match the tokenizer built from the config (nothing was loaded):"
            + fmt("missing keys", missing) + fmt("unexpected keys", unexpected) + fmt("shape mismatches", shapes)
            + "\n  Check that the tokenizer config (autoencoder / quantizer sizes, kind) matches the checkpoint.")


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True)


def save_tokenizer(model: MultiScaleTokenizer, tok_cfg: Any, folder: str | os.PathLike,
                   summary: dict | None = None) -> Path:
    """Write a finished artifact: model.safetensors + config.yaml, then DONE (rank 0; atomic)."""
    cfg = tokenizer_config(tok_cfg)
    finish_artifact(folder, model, OmegaConf.to_container(cfg, resolve=True), summary)
    return Path(folder)


def is_finished_artifact(folder: str | os.PathLike) -> bool:
    return is_finished(folder)


def load_tokenizer(path: str | os.PathLike, device: torch.device | str = "cpu") -> MultiScaleTokenizer:
    """Load a trained tokenizer from an artifact folder (or its model.safetensors) in eval mode."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    weights = path if path.is_file() else folder / WEIGHTS_FILE
    cfg_file = folder / CONFIG_FILE
    if not weights.is_file() or not cfg_file.is_file():
        raise FileNotFoundError(
            f"no tokenizer artifact at {path}: expected {WEIGHTS_FILE} and {CONFIG_FILE} there "
            f"(written by the `tokenizer` stage; run stages=[tokenizer,...] first)")
    cfg = tokenizer_config(OmegaConf.load(cfg_file))
    model = build_tokenizer(cfg)
    load_state_dict_checked(model, load_file(str(weights)), source=str(weights))
    return model.to(device).eval()
