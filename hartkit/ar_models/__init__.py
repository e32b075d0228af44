"""Scale-wise autoregressive generators on every tokenizer kind (VAR, HART, continuous next-scale).

    from hartkit.ar_models import ScaleAR, TokenSpec, generate_images
    model = ScaleAR(cfg.ar, TokenSpec.from_tokenizer(tokenizer))
    loss, metrics = model.loss(TokenBatch(...), generator=step_generator)  # subset rule: ar.train.final_scale_subset
    images = generate_images(model, tokenizer, prompts, cfg=3.0, top_k=0, top_p=0.0, generator=g)

See README.md in this folder for the architecture and the config keys. Names are
imported lazily, so ``hartkit.config`` (which needs only ``ar_models.config``)
stays light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ScaleAR": "hartkit.ar_models.model",
    "TokenBatch": "hartkit.ar_models.model",
    "TokenSpec": "hartkit.ar_models.model",
    "generate_images": "hartkit.ar_models.sampling",
    "generate_in_batches": "hartkit.ar_models.sampling",
    "generate_tokens": "hartkit.ar_models.sampling",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hartkit.ar_models' has no attribute {name!r}")
