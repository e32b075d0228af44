"""The embedded evaluator (small image-text model + per-cell scene reader shipped with hartkit)."""

from hartkit.eval.embedded.model import (
    MODEL_NAME,
    SHA256_PATH,
    WEIGHTS_PATH,
    EmbeddedEvaluator,
    EmbeddedModel,
    EmbeddedWeightsError,
    build_model,
    get_embedded_evaluator,
    get_tokenizer,
    verify_weights,
)

__all__ = [
    "MODEL_NAME",
    "SHA256_PATH",
    "WEIGHTS_PATH",
    "EmbeddedEvaluator",
    "EmbeddedModel",
    "EmbeddedWeightsError",
    "build_model",
    "get_embedded_evaluator",
    "get_tokenizer",
    "verify_weights",
]
