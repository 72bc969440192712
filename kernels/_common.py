"""Helpers shared by the kernel launchers: device and dtype checks, block-size arithmetic, the launch itself.

Imports only torch and the standard library, so it is safe to import without triton.
"""
import contextlib
import functools
import os
from dataclasses import dataclass
from typing import Any, Iterator

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


@dataclass
class Launch:
    """One kernel launch recorded by `capture_launches`: the @triton.jit function, its grid and arguments."""

    kernel: Any
    grid: tuple[int, ...]
    args: tuple
    kwargs: dict[str, Any]


_captured: list[Launch] | None = None  # the list capture_launches() yields; None when launches run
_captured_sm_count = 0


@contextlib.contextmanager
def capture_launches(sm_count: int = 132) -> Iterator[list[Launch]]:
    """Within it the launchers take the GPU's paths on any tensor, CPU ones included (GPU tiles, no
    interpreter upcasts, split sizes for `sm_count` SMs) and record each launch in the yielded list
    instead of running it: what an offline compile needs (fastgrok.bench.sm90). Not re-entrant."""
    global _captured, _captured_sm_count
    if _captured is not None:
        raise RuntimeError("capture_launches() is already active")
    _captured, _captured_sm_count = [], sm_count
    try:
        yield _captured
    finally:
        _captured = None


def launch(kernel: Any, grid: tuple[int, ...], *args: Any, **kwargs: Any) -> None:
    """`kernel[grid](*args, **kwargs)`; recorded instead within `capture_launches`."""
    if _captured is not None:
        _captured.append(Launch(kernel, tuple(grid), args, kwargs))
    else:
        kernel[grid](*args, **kwargs)


def interpreted() -> bool:
    """Whether launches run in the interpreter, so take its tiles and upcasts (never while captured)."""
    return _captured is None and interpreter_active()


def on_gpu(t: Tensor) -> bool:
    """Whether launches on `t` take the GPU's paths: a CUDA tensor, or any tensor while captured."""
    return t.is_cuda or _captured is not None


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of `device` (the captured count within `capture_launches`)."""
    return _captured_sm_count if _captured is not None else _device_sm_count(device)


@functools.lru_cache(maxsize=8)
def _device_sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def check_device(t: Tensor, name: str) -> None:
    """Raise ValueError unless `t` is a CUDA tensor, or a CPU tensor with the interpreter on (any
    tensor within `capture_launches`)."""
    if on_gpu(t):
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
