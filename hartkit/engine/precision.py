"""Mixed precision for the training loops: bf16 autocast on GPUs, and on CPUs that compute bf16 natively.

On a CPU, bf16 autocast pays only where the hardware has bf16 dot products
(AVX512-BF16 or AMX); elsewhere oneDNN emulates them and a step gets slower.
``cpu_amp: auto`` therefore turns it on only when the CPU reports one of those
features. Measured on the development machine (AVX512-BF16, 2 threads): the
default tokenizer trains x1.5 faster and reaches the same test PSNR at equal
steps (``results/research_log.md``; ``python -m hartkit.tools.bench_train``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path

import torch

from hartkit.errors import ConfigError

log = logging.getLogger(__name__)

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=4)
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU flags list AVX512-BF16 or AMX-BF16 (False where they cannot be read, e.g. macOS)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return any(flag in flags for flag in NATIVE_BF16_FLAGS)
    return False


def resolve_cpu_amp(value) -> bool:
    """``cpu_amp`` config value (true / false / "auto"; None: off) -> whether to autocast to bf16 on a CPU."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if str(value).lower() == "auto":
        return cpu_has_native_bf16()
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise ConfigError(f"cpu_amp={value!r} is not one of true, false, auto")


def autocast_for(device: torch.device, amp: bool, cpu_amp) -> contextlib.AbstractContextManager:
    """The autocast context of one training forward: bf16 on CUDA when ``amp``, on CPU when ``cpu_amp`` resolves
    to true, else nothing."""
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and resolve_cpu_amp(cpu_amp):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def describe_precision(device: torch.device, amp: bool, cpu_amp) -> str:
    if device.type == "cuda":
        return "bf16 autocast" if amp else "fp32"
    if resolve_cpu_amp(cpu_amp):
        return "bf16 autocast (CPU)"
    return "fp32" + (" (cpu_amp=auto: this CPU has no native bf16)" if str(cpu_amp).lower() == "auto" else "")
