"""Plug-in quantizers for the multi-scale walk: a registry keyed by ``tokenizer.quantizer.type``.

The discrete and hybrid tokenizers build their ``quantize`` module through
:func:`build_quantizer`. A quantizer config without a ``type`` key (every
config that existed before this registry: ``tokenizer/quantizer=small|var``)
is VAR's nearest-neighbour codebook (``hartkit.tokenizers.quantizer.
MultiScaleQuantizer``), built with exactly the arguments it always had, so its
outputs, its state-dict keys and the config hashes of existing artifacts do
not change. Every other quantizer is one module in this package plus one YAML
file in ``conf/tokenizer/quantizer/``:

- the module defines a config dataclass that subclasses ``QuantizerConfig``
  with ``type: str = "<name>"`` and its own keys, and a quantizer class
  decorated with ``@register_quantizer("<name>")`` whose ``config_class`` is
  that dataclass (``fsq.py``, ``lfq.py``, ``bsq.py``; ``base.py`` holds the
  walk they share);
- the YAML starts with ``defaults: [/tokenizer/quantizer/schema/<name>@_here_,
  _self_]``, so Hydra validates its keys against the dataclass.

Modules of this package are imported on first use (no list to edit).

The protocol a quantizer speaks (what ``MultiScaleTokenizer``, its trainer and
the generators call): ``forward(f) -> WalkOutput`` (training walk: ``f_hat``,
per-scale ``indices``, ``vq_loss``, usage ``stats``), ``encode_walk(f) ->
(indices, f_hat, rest_before_last)``, ``encode_indices``, ``indices_to_f_hat``,
``embed_scale(idx_Bl, k)``, ``upsample_scale(h, k, hw)``, ``embedding(idx)``
(the last scale's per-token contribution of a code, ``code_embedding``), and
the attributes ``vocab_size``, ``channels``, ``patch_nums``,
``phi_on_last_scale``, ``_hit_updates``, ``reinit_dead_codes``.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import torch.nn as nn

from hartkit.errors import ConfigError

DEFAULT_TYPE = "var"  # a quantizer config without `type`: VAR's codebook
SCHEMA_GROUP = "tokenizer/quantizer/schema"  # where the config dataclasses are stored for Hydra


@dataclass(frozen=True)
class QuantizerEntry:
    name: str
    builder: Callable[..., nn.Module]  # builder(cfg: dict, channels, patch_nums, phi_on_last_scale) -> module
    schema: Optional[type] = None  # QuantizerConfig subclass (None: the plain QuantizerConfig)


QUANTIZERS: dict[str, QuantizerEntry] = {}
_builtins_loaded = False


def register_quantizer(name: str, schema: Optional[type] = None):
    """Decorator: register a quantizer class (built with its ``from_config``) or a builder function.

    ``schema`` defaults to the class's ``config_class``; its ``type`` field must default to ``name``.
    """

    def deco(obj):
        builder = obj.from_config if isinstance(obj, type) else obj
        cfg_cls = schema if schema is not None else getattr(obj, "config_class", None)
        if cfg_cls is not None:
            default = {f.name: f.default for f in dataclasses.fields(cfg_cls)}.get("type")
            if default != name:
                raise ValueError(f"{cfg_cls.__name__}.type must default to {name!r}, got {default!r}")
        QUANTIZERS[name] = QuantizerEntry(name, builder, cfg_cls)
        return obj

    return deco


def _load_builtins() -> None:
    """Import every module of this package once (each registers itself)."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def available() -> list[str]:
    _load_builtins()
    return sorted(QUANTIZERS)


def get_quantizer(name: str) -> QuantizerEntry:
    _load_builtins()
    if name not in QUANTIZERS:
        raise ConfigError(f"tokenizer.quantizer.type={name!r} is unknown; choose one of {available()} "
                          f"(tokenizer/quantizer=<name> picks a quantizer with its sizes)")
    return QUANTIZERS[name]


def quantizer_type(q: Any) -> str:
    """``type`` of a quantizer config (dict or DictConfig); VAR's codebook when it has none."""
    value = q.get("type", None) if q is not None else None
    return DEFAULT_TYPE if value is None else str(value)


def quantizer_schema(q: Any) -> Optional[type]:
    """The config dataclass of a quantizer config's type (None: the plain ``QuantizerConfig``)."""
    return get_quantizer(quantizer_type(q)).schema


def build_quantizer(q: dict, channels: int, patch_nums, phi_on_last_scale: bool) -> nn.Module:
    """The ``quantize`` module of a discrete or hybrid tokenizer from its quantizer config (a plain dict)."""
    return get_quantizer(quantizer_type(q)).builder(q, channels, tuple(int(p) for p in patch_nums),
                                                    bool(phi_on_last_scale))


def store_schemas(cs) -> None:
    """Put each quantizer's config dataclass into Hydra's ConfigStore (group ``tokenizer/quantizer/schema``)."""
    _load_builtins()
    for entry in QUANTIZERS.values():
        if entry.schema is not None:
            cs.store(group=SCHEMA_GROUP, name=entry.name, node=entry.schema)


def tokenizer_label(tok_cfg: Any) -> str:
    """The row label of a tokenizer: its name, plus the quantizer type when it is not VAR's
    (``discrete-fsq``), so the quantizers of one kind are distinct rows of the comparison."""
    name = str(tok_cfg.get("name"))
    qtype = quantizer_type(tok_cfg.get("quantizer", None))
    return name if qtype == DEFAULT_TYPE or qtype in name else f"{name}-{qtype}"


@register_quantizer(DEFAULT_TYPE)
def _build_var(q: dict, channels: int, patch_nums: tuple[int, ...], phi_on_last_scale: bool) -> nn.Module:
    """VAR's multi-scale residual VQ: the arguments MultiScaleTokenizer always passed."""
    from hartkit.tokenizers.quantizer import MultiScaleQuantizer

    return MultiScaleQuantizer(
        vocab_size=int(q["vocab_size"]), channels=channels, patch_nums=patch_nums, num_phi=q.get("num_phi", 4),
        phi_ratio=q.get("phi_ratio", 0.5), using_znorm=q.get("using_znorm", False), beta=q.get("beta", 0.25),
        phi_on_last_scale=phi_on_last_scale, chunk_size=q.get("chunk_size", 4096))


__all__ = ["QUANTIZERS", "QuantizerEntry", "available", "build_quantizer", "get_quantizer", "quantizer_schema",
           "quantizer_type", "register_quantizer", "store_schemas", "tokenizer_label"]
