"""Multi-scale image tokenizers: VAR discrete, continuous and HART hybrid, with one token interface."""

from hartkit.tokenizers.checkpoint import (
    CheckpointMismatchError,
    build_tokenizer,
    is_finished_artifact,
    load_tokenizer,
    save_tokenizer,
)
from hartkit.tokenizers.pretrained import load_pretrained_tokenizer, save_in_layout
from hartkit.tokenizers.protocol import ScaleTokenizer, teacher_forcing_input
from hartkit.tokenizers.tokenizer import ImageSizeError, MultiScaleTokenizer, TokenizerOutput
from hartkit.tokenizers.tokens import KINDS, Tokens

__all__ = [
    "KINDS",
    "CheckpointMismatchError",
    "ImageSizeError",
    "MultiScaleTokenizer",
    "ScaleTokenizer",
    "TokenizerOutput",
    "Tokens",
    "build_tokenizer",
    "is_finished_artifact",
    "load_pretrained_tokenizer",
    "save_in_layout",
    "load_tokenizer",
    "save_tokenizer",
    "teacher_forcing_input",
]
