"""Load (and write back) the public VAR and HART tokenizer checkpoints.

VAR (``vae_ch160v4096z32.pth``): hartkit's module names are VAR's, so the
state dict maps one to one (324 keys, docs/reference.md, section 1). HART: the same
keys prefixed ``vae.``, plus a PatchGAN discriminator under ``disc.`` that a
tokenizer does not need.

Third-party ``.pth`` / ``.bin`` files are pickles, which can run code when
loaded: they are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from hartkit.errors import ConfigError
from hartkit.tokenizers.checkpoint import build_tokenizer, load_state_dict_checked, tokenizer_config
from hartkit.tokenizers.tokenizer import MultiScaleTokenizer
from hartkit.utils.io import atomic_save_safetensors, atomic_write, read_state_dict

log = logging.getLogger(__name__)

FORMATS = ("var", "hart", "hartkit")
HART_PREFIX = "vae."
HART_IGNORED_PREFIXES = ("disc.",)
# a usage statistic, not a weight: its first dimension is the number of scales the checkpoint was trained with
HIT_BUFFER = "quantize.ema_vocab_hit_SV"
_DIR_CANDIDATES = ("model.safetensors", "pytorch_model.bin", "vae_ch160v4096z32.pth", "tokenizer.pth", "model.pth")


def resolve_checkpoint_file(path: str | os.PathLike | None, fmt: str) -> Path:
    where = {
        "var": "download vae_ch160v4096z32.pth from the VAR release (FoundationVision/var on Hugging Face)",
        "hart": "download the tokenizer of the HART release (mit-han-lab/hart-0.7b-1024px, folder tokenizer/)",
    }.get(fmt, "point it to a hartkit tokenizer artifact")
    if path is None or str(path) in ("", "???"):
        raise FileNotFoundError(f"no tokenizer checkpoint given: {where} and pass tokenizer.checkpoint=/path/to/file")
    p = Path(path).expanduser()
    if p.is_dir():
        for name in _DIR_CANDIDATES:
            if (p / name).is_file():
                return p / name
        raise FileNotFoundError(f"no checkpoint file in folder {p} (looked for {', '.join(_DIR_CANDIDATES)}); "
                                f"{where} and pass tokenizer.checkpoint=/path/to/file")
    if not p.is_file():
        raise FileNotFoundError(f"tokenizer checkpoint {p} does not exist: {where}, put it there "
                                f"or pass tokenizer.checkpoint=/path/to/file")
    return p


def from_var_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return dict(state)


def from_hart_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip ``vae.``, drop the discriminator; any other key is kept so the check reports it as unexpected."""
    out = {}
    for key, value in state.items():
        if key.startswith(HART_IGNORED_PREFIXES):
            continue
        out[key[len(HART_PREFIX):] if key.startswith(HART_PREFIX) else key] = value
    return out


def to_layout(model: MultiScaleTokenizer, fmt: str) -> dict[str, torch.Tensor]:
    """The model's weights in the VAR or HART key layout."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if fmt == "var" or fmt == "hartkit":
        return state
    if fmt == "hart":
        return {HART_PREFIX + k: v for k, v in state.items()}
    raise ConfigError(f"checkpoint_format={fmt!r} is unknown; choose one of {FORMATS}")


def save_in_layout(model: MultiScaleTokenizer, path: str | os.PathLike, fmt: str) -> Path:
    """Write the weights in VAR's or HART's layout (.safetensors, or a .pth state dict)."""
    path = Path(path)
    state = to_layout(model, fmt)
    if path.suffix == ".safetensors":
        return atomic_save_safetensors(path, state)
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def convert_state_dict(state: dict[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    if fmt in ("var", "hartkit"):
        return from_var_layout(state)
    if fmt == "hart":
        return from_hart_layout(state)
    raise ConfigError(f"tokenizer.checkpoint_format={fmt!r} is unknown; choose one of {FORMATS}")


def load_into(model: MultiScaleTokenizer, state: dict[str, torch.Tensor], fmt: str, source: str) -> MultiScaleTokenizer:
    state = convert_state_dict(state, fmt)
    expected = model.state_dict()
    if HIT_BUFFER in state and HIT_BUFFER in expected and state[HIT_BUFFER].shape != expected[HIT_BUFFER].shape:
        log.warning("%s: %s has shape %s (another scale schedule); usage statistics start from zero",
                    source, HIT_BUFFER, tuple(state[HIT_BUFFER].shape))
        state[HIT_BUFFER] = torch.zeros_like(expected[HIT_BUFFER])
    load_state_dict_checked(model, state, source=source)
    return model


def load_pretrained_tokenizer(tok_cfg: Any, device: torch.device | str = "cpu") -> MultiScaleTokenizer:
    """Build the tokenizer of ``tok_cfg`` and fill it from ``tok_cfg.checkpoint`` (format ``checkpoint_format``)."""
    cfg = tokenizer_config(tok_cfg)
    path = resolve_checkpoint_file(cfg.checkpoint, cfg.checkpoint_format)
    model = build_tokenizer(cfg)
    load_into(model, read_state_dict(path), cfg.checkpoint_format, source=str(path))
    log.info("loaded %s tokenizer weights from %s", cfg.checkpoint_format, path)
    return model.to(device).eval()


def uses_pretrained(tok_cfg) -> bool:
    """True when the config asks for pretrained weights: ``checkpoint`` set, or a var / hart ``checkpoint_format``
    (then a missing ``checkpoint`` is an error that says where to put the file)."""
    get = tok_cfg.get if hasattr(tok_cfg, "get") else lambda k, d=None: getattr(tok_cfg, k, d)
    return bool(get("checkpoint", None)) or get("checkpoint_format", "hartkit") in ("var", "hart")
