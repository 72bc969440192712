"""Profile of one training step: the top kernels by time of a compiled step, so the next optimisation
targets are known; rows go to profile.csv.

A session is built as the trainer builds it (the paper's depth 4 on CUDA: n_embd 512, batch 1024,
bf16 autocast; the fused backend, compiled), warmed up (compilation, autotuning), then `steps` steps
run under `torch.profiler` (CPU and CUDA activities). Each GPU kernel's device time is summed over
those steps and divided by their number: one row per kernel of the top `top`, x = "#rank name", in
ms per step, % of the summed kernel time and calls per step, plus "#00 all kernels". On a CPU (the
toy rehearsal) the operators' self CPU time stands in for kernel time.
"""
from __future__ import annotations

import time
from typing import Any

import torch

from ..config import Config
from ..trainer import build, train_step
from .core import TOY, Recorder, Timing, row, sync
from .train import provider_label

GPU_CONFIGS = {"paper-d2": "paper", "paper-d4": "paper-d4", "paper-d6": "paper-d6"}
NAME_CHARS = 120  # kernel names are cut to this many characters in the rows


def config_for(name: str, device: torch.device, toy: bool, backend: str) -> Config:
    """The profiled config: a paper preset on CUDA, or the toy model (fused kernels under the interpreter)."""
    over = dict(backend=backend, compile="off", device=str(device))  # compiled by run(), as the trainer does
    if toy:
        return Config.preset("tiny", **TOY, **over)
    if name not in GPU_CONFIGS:
        raise ValueError(f"config {name!r} is not one of {', '.join(GPU_CONFIGS)}")
    return Config.preset(GPU_CONFIGS[name], **over)


def _kernel_table(prof: Any, device: torch.device) -> list[tuple[str, float, int]]:
    """(name, total µs, calls) per kernel (CUDA) or operator (CPU, self time), longest first."""
    from torch.autograd import DeviceType
    out = []
    for e in prof.key_averages():
        if device.type == "cuda":
            if getattr(e, "device_type", None) != DeviceType.CUDA:
                continue
            us = getattr(e, "self_device_time_total", None)
            if us is None:  # older torch
                us = e.self_cuda_time_total
        else:
            us = e.self_cpu_time_total
        if us > 0:
            out.append((e.key, float(us), int(e.count)))
    return sorted(out, key=lambda t: -t[1])


def run(device: torch.device, rec: Recorder, *, quick: bool = False, compile: str = "main", toy: bool = False,
        configs: tuple[str, ...] | None = None, backend: str = "fused", top: int = 15, steps: int = 5,
        compile_backend: str = "inductor") -> None:
    """Profile `steps` compiled steps of each config (default: paper-d4; toy: the toy model) after a warm-up;
    the model is compiled as the trainer compiles it (`torch.compile(model)`), with `compile_backend`."""
    from torch.profiler import ProfilerActivity, profile
    compiled = compile != "off"
    names = ("toy",) if toy else (configs or ("paper-d4",))
    if quick or toy:
        steps = min(steps, 2)
    for name in names:
        provider = backend + ("-compiled" if compiled else "")
        try:
            cfg = config_for(name, device, toy, backend)
            sess = build(cfg)
            provider = provider_label(provider, sess.ops.routed)  # "fused-compiled (embedding: reference)" on CUDA
            if compiled:
                torch._dynamo.reset()
                sess.fwd = torch.compile(sess.model, backend=compile_backend)
            t0 = time.perf_counter()
            for i in range(3):  # compile, autotune, allocator warm-up
                train_step(sess, i)
            sync(device)
            rec.log(f"profile {name} {provider}: warm-up {time.perf_counter() - t0:.1f} s")
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
            with profile(activities=activities) as prof:
                for i in range(3, 3 + steps):
                    train_step(sess, i)
                sync(device)
            table = _kernel_table(prof, device)
        except Exception as e:  # report and go on with the next config
            rec.note(f"profile: {name} {provider} failed: {type(e).__name__}: "
                     f"{str(e).splitlines()[0] if str(e) else ''}")
            continue
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        total = sum(us for _, us, _ in table)
        what = "kernels" if device.type == "cuda" else "operators (self CPU time)"
        rows = []

        def add(x: str, us: float, calls: float) -> None:
            ms = us / steps / 1e3
            for value, unit in ((ms, "ms"), (100 * us / total if total else 0.0, "% of kernel time"),
                                (calls / steps, "calls/step")):
                rows.append(row("profile", provider, name, "kernel", x, Timing(value, value, value), unit, device))

        add(f"#00 all {what}", total, sum(c for _, _, c in table))
        rec.log(f"profile {name} {provider}: {total / steps / 1e3:.3f} ms of {what} per step; top {top}:")
        for rank, (kname, us, calls) in enumerate(table[:top], 1):
            add(f"#{rank:02d} {kname[:NAME_CHARS]}", us, calls)
            rec.log(f"  {rank:2d}. {us / steps / 1e3:8.3f} ms  {100 * us / total if total else 0:5.1f} %  "
                    f"{calls / steps:5.1f}×  {kname[:NAME_CHARS]}")
        rec.add(rows, log=False)  # logged above, with the shares
