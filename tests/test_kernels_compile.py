"""The Triton kernels compile to a cubin for a Hopper GPU (sm_90), without any GPU.

The interpreter tests check the numbers but not what only the GPU compiler sees (types the
interpreter lets through, MLIR lowering, shared memory). Triton ships ptxas, so the whole
pipeline down to the cubin runs on a CPU machine.
"""

from __future__ import annotations

import pytest

triton = pytest.importorskip("triton", reason="Triton is not installed (it is on Linux; these tests need it)")

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

from hartkit.kernels import triton_attention, triton_nearest_code  # noqa: E402

pytestmark = pytest.mark.slow  # about 20 s of compiling on 2 cores (less with Triton's cache)
HOPPER = GPUTarget("cuda", 90, 32)
H200_SHARED_BYTES = 227 * 1024


def _compile(kernel, types: dict[str, str], constexprs: dict, **options):
    """Compile the kernel's Python function (interpreted or not in this process) for sm_90."""
    fn = JITFunction(kernel.fn)
    signature = {name: ("constexpr" if name in constexprs else types[name]) for name in fn.arg_names}
    compiled = triton.compile(ASTSource(fn, signature, constexprs), target=HOPPER, options=options)
    assert compiled.asm["cubin"], "no cubin produced"
    assert compiled.metadata.shared <= H200_SHARED_BYTES
    return compiled


def _types(arg_names, pointers: dict[str, str], floats=("qk_scale", "sm_scale")) -> dict[str, str]:
    return {n: pointers.get(n, "fp32" if n in floats else "i32") for n in arg_names}


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_nearest_code_kernel_compiles_for_sm90(dtype):
    names = JITFunction(triton_nearest_code._nearest_code_kernel.fn).arg_names
    types = _types(names, {"z_ptr": f"*{dtype}", "e_ptr": f"*{dtype}", "idx_ptr": "*i64", "codes_ptr": f"*{dtype}"})
    _compile(triton_nearest_code._nearest_code_kernel, types,
             {"COSINE": True, "RETURN_CODES": True, "C_PAD": 32, "BLOCK_N": 128, "BLOCK_V": 128},
             num_warps=8, num_stages=3)


@pytest.mark.parametrize("rope", [False, True], ids=["plain", "fused-rope"])
def test_attention_kernels_compile_for_sm90_in_bf16(rope):
    ptr = {n: "*bf16" for n in ("Q", "K", "V", "O", "DO", "DQ", "DK", "DV")}
    ptr.update(LSE="*fp32", DELTA="*fp32", KVLEN="*i32", QSTART="*i32", COS="*fp32", SIN="*fp32")
    for kernel, blocks in ((triton_attention._attn_fwd_kernel, (128, 64)),
                           (triton_attention._attn_bwd_dkdv_kernel, (64, 64)),
                           (triton_attention._attn_bwd_dq_kernel, (64, 64))):
        names = JITFunction(kernel.fn).arg_names
        _compile(kernel, _types(names, ptr),
                 {"ROPE": rope, "DOT_PREC": "tf32", "BLOCK_D": 64, "BLOCK_R": 32, "BLOCK_M": blocks[0],
                  "BLOCK_N": blocks[1]},
                 num_warps=4, num_stages=3)
