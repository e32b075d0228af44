"""cpu_amp: bf16 autocast on a CPU only where it is asked for, or (auto) where the CPU computes bf16 natively."""

import pytest
import torch

from hartkit.engine.precision import autocast_for, cpu_has_native_bf16, describe_precision, resolve_cpu_amp
from hartkit.errors import ConfigError


def _cpuinfo(tmp_path, flags: str) -> str:
    path = tmp_path / f"cpuinfo-{abs(hash(flags))}"
    path.write_text(f"processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 {flags}\n\n")
    return str(path)


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    assert cpu_has_native_bf16(_cpuinfo(tmp_path, "avx512f avx512_bf16"))
    assert cpu_has_native_bf16(_cpuinfo(tmp_path, "amx_tile amx_bf16"))
    assert not cpu_has_native_bf16(_cpuinfo(tmp_path, "avx512f avx512bw"))  # AVX512 alone emulates bf16
    assert not cpu_has_native_bf16(str(tmp_path / "missing"))


def test_cpu_amp_values():
    assert resolve_cpu_amp(True) is True and resolve_cpu_amp(False) is False
    assert resolve_cpu_amp("false") is False and resolve_cpu_amp("True") is True
    assert resolve_cpu_amp("auto") == cpu_has_native_bf16()
    with pytest.raises(ConfigError, match="cpu_amp"):
        resolve_cpu_amp("sometimes")


def test_autocast_turns_cpu_matmuls_bf16_only_when_asked():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    cpu = torch.device("cpu")
    with autocast_for(cpu, amp=True, cpu_amp=False):
        assert (a @ b).dtype == torch.float32  # amp alone is for GPUs
    with autocast_for(cpu, amp=False, cpu_amp=True):
        assert (a @ b).dtype == torch.bfloat16
    assert describe_precision(cpu, True, False) == "fp32"
    assert describe_precision(cpu, False, True) == "bf16 autocast (CPU)"
