"""hartkit: a tokenizer arena and benchmark for autoregressive image generation."""

__version__ = "0.1.0"
