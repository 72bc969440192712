"""Benchmark helpers: timing (GPU events or wall clock), long-format result rows, start-up cost.

Rows (STYLE "Benchmarks"): benchmark, provider, mode, x_name, x, p50, p20, p80, unit, device,
torch, triton, git_sha, timestamp — appended to bench_results/<benchmark>.csv, never overwritten.
"""
from __future__ import annotations

import csv
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from .config import Config
from .data import SPLITS, generate_batch, split_source
from .envinfo import device_name, git_sha, resolve_device, triton_version
from .tasks import make_tasks

FIELDS = ("benchmark", "provider", "mode", "x_name", "x", "p50", "p20", "p80", "unit", "device", "torch", "triton",
          "git_sha", "timestamp")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def quantiles(samples: list[float]) -> tuple[float, float, float]:
    """(median, 20th, 80th percentile)."""
    if len(samples) == 1:
        return samples[0], samples[0], samples[0]
    q = statistics.quantiles(samples, n=10, method="inclusive")
    return statistics.median(samples), q[1], q[7]


def time_windows(fn: Callable[[int], Any], device: torch.device, *, warmup: int, windows: int, per_window: int,
                 start: int = 0) -> list[float]:
    """Seconds per call of fn(i), measured over `windows` windows of `per_window` calls after `warmup` calls."""
    i = start
    for _ in range(warmup):
        fn(i)
        i += 1
    _sync(device)
    out = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(per_window):
            fn(i)
            i += 1
        _sync(device)
        out.append((time.perf_counter() - t0) / per_window)
    return out


def time_startup(cfg: Config, device: torch.device | str = "cpu", repeats: int = 3) -> list[float]:
    """Seconds from a config to tasks, split, the five batch sources and one batch of each (median-able)."""
    device = torch.device(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tasks = make_tasks(cfg.task)
        srcs = [split_source(cfg, tasks, "train", device, training=True)]
        srcs += [split_source(cfg, tasks, s, device) for s in SPLITS]
        for src in srcs:
            generate_batch(src, 0)
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def row(benchmark: str, provider: str, mode: str, x_name: str, x: Any, samples: list[float], unit: str,
        device: torch.device, scale: float = 1.0) -> dict[str, Any]:
    p50, p20, p80 = quantiles([s * scale for s in samples])
    return {"benchmark": benchmark, "provider": provider, "mode": mode, "x_name": x_name, "x": x,
            "p50": f"{p50:.6g}", "p20": f"{p20:.6g}", "p80": f"{p80:.6g}", "unit": unit,
            "device": device_name(device), "torch": torch.__version__, "triton": triton_version(),
            "git_sha": git_sha(), "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def append_rows(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Append rows to a long-format CSV (header written once); never rewrites what is there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in FIELDS})
    return path


def resolve(device: str = "auto") -> torch.device:
    return resolve_device(device)
