"""Helpers shared by the kernel launchers: device and dtype checks, block-size arithmetic.

Imports only torch and the standard library, so it is safe to import without triton.
"""
import os

import torch
from torch import Tensor

#: Passed as `enable_fp_fusion` at every launch: Triton's default (fused multiply-adds) is set to change in
#: 3.10, which would change the kernels' rounding (RoPE above all) between Triton versions.
FP_FUSION = True

#: dtypes every kernel in this package accepts for its floating-point tensors.
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreter_active() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def check_device(t: Tensor, name: str) -> None:
    """Raise ValueError unless `t` is a CUDA tensor, or a CPU tensor with the interpreter on."""
    if t.is_cuda:
        return
    if t.device.type == "cpu" and interpreter_active():
        return
    raise ValueError(
        f"{name} is on device {t.device}; Triton kernels need a CUDA tensor, or a CPU tensor with "
        "TRITON_INTERPRET=1 set before triton is imported (Triton's interpreter)"
    )


def check_float_dtype(t: Tensor, name: str) -> None:
    """Raise TypeError unless `t` is fp32, fp16 or bf16."""
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} has dtype {t.dtype}; valid dtypes are float32, float16 and bfloat16")


def next_pow2(n: int) -> int:
    """Smallest power of two ≥ n (1 for n ≤ 1)."""
    return 1 << max(int(n) - 1, 0).bit_length()


def dot_precision(dtype: torch.dtype, input_precision: str | None) -> str:
    """`tl.dot` input_precision: exact ("ieee") for fp32 unless asked otherwise; the default for 16-bit."""
    if input_precision is None:
        return "ieee" if dtype == torch.float32 else "tf32"
    if input_precision not in ("ieee", "tf32", "tf32x3"):
        raise ValueError(f"input_precision={input_precision!r}; valid values are 'ieee', 'tf32', 'tf32x3' or None")
    return input_precision


def op_defined(qualname: str) -> bool:
    """True when the custom op `namespace::name` is already registered (e.g. the module was imported twice)."""
    namespace, name = qualname.split("::")
    return hasattr(getattr(torch.ops, namespace), name)
