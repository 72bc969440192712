"""Ceilings: what the device itself delivers, the figures MFU and GB/s are judged against.

- `copy`: device-to-device copy bandwidth (`dst.copy_(src)` of one large buffer), GB/s counting
  the bytes read and written; the memory-bound kernels' GB/s compare with it.
- `matmul`: bf16 (fp32 on CPU) matrix products at the model's GEMM shapes, M = B·T tokens
  (1024·95 = 97280 at the paper's batch), K = n_embd 512 → N = 512 (attention output),
  1536 (fused qkv), 2048 (MLP up), and K = 2048 → N = 512 (MLP down); TFLOP/s = 2·M·K·N / time.

Rows go to ceilings.csv; the device, driver and versions are logged first. Timing: do_bench on CUDA,
wall-clock windows elsewhere (fastgrok.bench.core.measure).
"""
from __future__ import annotations

import functools
import platform
import shutil
import subprocess
from typing import Any

import torch

from .core import Recorder, measure, row

PAPER_TOKENS = 1024 * 95                         # M: batch 1024 × 95 positions
GEMMS = ((512, 512), (512, 1536), (512, 2048), (2048, 512))  # (K, N)
COPY_BYTES = {"cuda": 1 << 30, "cpu": 1 << 26}   # one buffer: 1 GiB on the GPU (well past the L2), 64 MiB on CPU
TOY_SIZES = dict(tokens=8 * 95, copy_bytes=1 << 20, gemms=((32, 32), (32, 96)))


def driver_version() -> str:
    """The NVIDIA driver version (nvidia-smi), or 'unknown'."""
    if shutil.which("nvidia-smi") is None:
        return "unknown"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def describe(device: torch.device) -> dict[str, Any]:
    """Device, driver, CUDA, torch, Triton and Python versions, as one dict."""
    from ..envinfo import device_name, triton_version
    info: dict[str, Any] = {"device": device_name(device), "torch": torch.__version__, "triton": triton_version(),
                            "python": platform.python_version()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(driver=driver_version(), cuda=torch.version.cuda, capability=f"{p.major}.{p.minor}",
                    sms=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1))
    return info


def run(device: torch.device, rec: Recorder, *, quick: bool = False, compile: str = "main", toy: bool = False) -> None:
    """Log the device; measure copy bandwidth and GEMM throughput at the model's shapes."""
    info = describe(device)
    rec.log("ceilings: " + " | ".join(f"{k} {v}" for k, v in info.items()))
    tokens = TOY_SIZES["tokens"] if toy else PAPER_TOKENS
    nbytes = TOY_SIZES["copy_bytes"] if toy else COPY_BYTES["cuda" if device.type == "cuda" else "cpu"]
    gemms = TOY_SIZES["gemms"] if toy else GEMMS
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
        dst = torch.empty_like(src)
        t = measure(functools.partial(dst.copy_, src), device, quick=quick or toy)
        label = f"{nbytes / 2**20:g} MiB"
        rec.add([row("copy", "torch", "device-to-device", "bytes", label, t, "ms", device, scale=1e3),
                 row("copy", "torch", "device-to-device", "bytes", label, t.rate(2 * nbytes / 1e9), "GB/s", device)])
        del src, dst
    except Exception as e:  # one failing measurement must not end the run
        rec.note(f"ceilings: copy failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    gen = torch.Generator(device="cpu").manual_seed(0)
    for K, N in gemms:
        label = f"M{tokens} K{K} N{N}"
        try:
            a = torch.randn(tokens, K, generator=gen).to(device, dtype)  # (M, K) activations
            b = torch.randn(K, N, generator=gen).to(device, dtype)       # (K, N) weight
            t = measure(lambda: a @ b, device, quick=quick or toy)
            rec.add([row("matmul", str(dtype).removeprefix("torch."), "forward", "shape", label, t, "ms", device,
                         scale=1e3),
                     row("matmul", str(dtype).removeprefix("torch."), "forward", "shape", label,
                         t.rate(2.0 * tokens * K * N / 1e12), "TFLOP/s", device)])
        except Exception as e:
            rec.note(f"ceilings: matmul {label} failed: {type(e).__name__}: "
                     f"{str(e).splitlines()[0] if str(e) else ''}")
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
