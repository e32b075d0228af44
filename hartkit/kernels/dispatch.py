"""Which implementation the hot paths use: `auto` (Triton on CUDA if it imports), `triton` or `torch`."""

from __future__ import annotations

import logging

import torch

from hartkit.kernels._triton_env import interpreting

log = logging.getLogger(__name__)

_BACKEND = "auto"
_CHOICES = ("auto", "triton", "torch")


def set_backend(name: str) -> None:
    global _BACKEND
    if name not in _CHOICES:
        raise ValueError(f"kernels={name!r} is unknown; choose one of {_CHOICES}")
    _BACKEND = name
    example = "cuda" if torch.cuda.is_available() else "cpu"
    log.info("kernels=%s: %s tensors use the %s implementation", name, example, resolve(torch.device(example)))


def get_backend() -> str:
    return _BACKEND


def triton_available() -> bool:
    try:
        import triton  # noqa: F401  (optional: is it installed and importable?)
    except Exception:
        return False
    return True


def resolve(device: torch.device, backend: str | None = None) -> str:
    """'triton' or 'torch' for tensors on ``device``."""
    backend = backend or _BACKEND
    if backend == "torch":
        return "torch"
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("kernels=triton was requested but Triton does not import; "
                               "install triton (Linux + CUDA) or use kernels=torch / kernels=auto")
        if device.type != "cuda" and not interpreting():
            raise RuntimeError(f"kernels=triton needs CUDA tensors, got {device.type}; use kernels=auto or "
                               "kernels=torch here (TRITON_INTERPRET=1 runs Triton's slow interpreter, for tests)")
        return "triton"
    return "triton" if device.type == "cuda" and triton_available() else "torch"
