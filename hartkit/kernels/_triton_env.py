"""Shared facts about how Triton runs here: compiled on CUDA, or its numpy interpreter on CPU (tests)."""

from __future__ import annotations

import os

import torch


def interpreting() -> bool:
    """True when ``TRITON_INTERPRET=1`` (kernels run on CPU tensors through numpy; for tests only)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def check_device(interpreted: bool, *tensors: torch.Tensor) -> None:
    """Kernels built for the GPU need CUDA tensors; kernels built under the interpreter need CPU ones."""
    want = "cpu" if interpreted else "cuda"
    for t in tensors:
        if t.device.type != want:
            hint = ("the kernels were imported under TRITON_INTERPRET=1; import them without it for CUDA"
                    if want == "cpu"
                    else "use kernels=torch/auto on CPU, or TRITON_INTERPRET=1 to run Triton's (slow) interpreter")
            raise RuntimeError(f"the Triton kernel got a {t.device.type} tensor but needs {want}: {hint}")
