"""Hot-path kernels: Triton on CUDA, pure PyTorch references everywhere.

This package imports nothing else of hartkit. ``set_backend`` is called once by
the pipeline from the ``kernels=auto|triton|torch`` config key.
"""

from hartkit.kernels.dispatch import get_backend, set_backend
from hartkit.kernels.ops import block_causal_attention, nearest_code

__all__ = ["block_causal_attention", "get_backend", "nearest_code", "set_backend"]
