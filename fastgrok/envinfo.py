"""Versions, device and commit: recorded with every run and every benchmark row."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

# Dense bf16 peak FLOP/s by GPU name fragment, for MFU (no sparsity).
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "4090": 165e12}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device(name)


def check_device(device: torch.device | str) -> torch.device:
    """A torch.device that exists here, or a ValueError naming it (CUDA without CUDA, a bad index)."""
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a string or torch.device, got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"device={device!r} is not a device ({e}); use 'cpu' or 'cuda[:N]'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r} but CUDA is not available here; use 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={str(device)!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type not in ("cpu", "meta"):
        raise ValueError(f"device={str(device)!r} is not supported; use 'cpu' or 'cuda[:N]'")
    return dev


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def triton_version() -> str:
    try:
        import importlib.metadata as md
        return md.version("triton")
    except Exception:
        return "none"


def git_sha(short: bool = True) -> str:
    here = Path(__file__).resolve().parent.parent
    try:
        args = ["git", "rev-parse", "--short", "HEAD"] if short else ["git", "rev-parse", "HEAD"]
        out = subprocess.run(args, cwd=here, capture_output=True, text=True, timeout=5)
        sha = out.stdout.strip() if out.returncode == 0 else "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty and sha != "unknown" else "")
    except Exception:
        return "unknown"


def environment(device: torch.device) -> dict[str, Any]:
    from . import __version__
    return {
        "fastgrok": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton_version(),
        "device": device_name(device),
        "git_sha": git_sha(),
        "platform": platform.platform(),
    }
