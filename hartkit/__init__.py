"""hartkit: a tokenizer arena and benchmark for autoregressive image generation.

As a library (names load on first use, so ``import hartkit`` stays light)::

    from hartkit import load_tokenizer, load_generator, Tokenizer, Generator
    tok = load_tokenizer("artifacts/tokenizer/hybrid-<hash>")   # or a save_pretrained folder
    images = load_generator("artifacts/generator/hybrid-tiny-<hash>").sample(["a red star at the center"])

As a program: ``hartkit tokenizer=hybrid`` (= ``python -m hartkit`` = ``python run.py``).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Generator": "hartkit.library",
    "Tokenizer": "hartkit.library",
    "Tokens": "hartkit.tokenizers.tokens",
    "ValueRangeError": "hartkit.library",
    "build_dataset": "hartkit.data",
    "compose": "hartkit.configs",
    "load_generator": "hartkit.library",
    "load_tokenizer": "hartkit.library",
    "run_pipeline": "hartkit.pipeline",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hartkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
