"""The embedded evaluator (tiny CLIP shipped with hartkit) and its zero-shot prompt accuracy."""

from hartkit.eval.embedded.model import (
    MODEL_NAME,
    SHA256_PATH,
    WEIGHTS_PATH,
    EmbeddedEvaluator,
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
    "EmbeddedWeightsError",
    "build_model",
    "get_embedded_evaluator",
    "get_tokenizer",
    "verify_weights",
]
