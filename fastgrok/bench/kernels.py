"""Kernel benchmarks: every registry op (attention, embedding, batchgen) in every provider, at the
paper's shapes and across a sweep; rows go to kernels.csv.

Providers: "reference" (the registry's reference op, eager), "reference-compiled" (the same under
torch.compile, static shapes), "fused" (the Triton kernel; CUDA only — the CPU interpreter's
timings mean nothing). Modes: forward (inputs require grad, as in training), backward (gradients
of a retained graph), full (both). Units: ms; GB/s from the bytes moved (attention at T ≈ 96 is
memory-bound): for the fused kernel its own traffic model (`traffic` beside the attention
kernel: DRAM bytes per launch), for the references the ideal (q, k, v read and out
written forward, those plus dout read and dq, dk, dv written backward); TFLOP/s for attention too (causal: 2·B·H·T²·D forward, 2.5× that backward).
dtypes are what training feeds each op: bf16 attention on CUDA (autocast), fp32 otherwise.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..backends import get_op, kernel, kernels_run_on
from ..config import Config
from ..data import split_source
from ..tasks import make_tasks
from .core import Recorder, Timing, measure, row

OPS = ("attention", "embedding", "batchgen")
PROVIDERS = ("reference", "reference-compiled", "fused")
MODES = {"attention": ("forward", "backward", "full"), "embedding": ("forward", "backward", "full"),
         "batchgen": ("forward",)}
THETA = 10000.0
STEP = 7  # batchgen: any fixed step (the work does not depend on it)

# The paper's shapes: B=1024 sequences of T=95 tokens, 4 heads of 128, vocab 29, width 512, 32 shots.
PAPER = {
    "attention": dict(B=1024, H=4, T=95, D=128),
    "embedding": dict(B=1024, T=95, V=29, C=512),
    "batchgen": dict(B=1024, S=32, n_id=512, p=29, sampling="iid"),
}
# Sweeps: (x_name, shape key, values) per op; the other dims stay at the base shape.
SWEEPS = {
    "attention": (("T", "T", (32, 64, 95, 128, 256)), ("batch", "B", None), ("head_dim", "D", (32, 64, 128))),
    "embedding": (("T", "T", (32, 95, 256)), ("batch", "B", None), ("n_embd", "C", (128, 512, 1024))),
    "batchgen": (("n_shots", "S", (8, 16, 32, 64)), ("batch", "B", None), ("sampling", "sampling",
                                                                           ("iid", "paper", "distinct"))),
}
BATCHES = {  # the batch sweep per device
    "cuda": {"attention": (128, 512, 1024, 2048), "embedding": (256, 1024, 4096), "batchgen": (256, 1024, 4096)},
    "cpu": {"attention": (16, 64, 256), "embedding": (64, 256, 1024), "batchgen": (256, 1024, 4096)},
}
CPU_BASE_BATCH = {"attention": 64, "embedding": 256, "batchgen": 1024}  # sweeps on a CPU run around these
QUICK_BASE = {"attention": dict(B=2, H=4, T=95, D=32), "embedding": dict(B=8, T=95, V=29, C=64),
              "batchgen": dict(B=64, S=32, n_id=32, p=29, sampling="iid")}


@dataclass(frozen=True)
class Case:
    """One shape of one op, and the (x_name, x) labels it is reported under."""

    op: str
    shape: tuple[tuple[str, Any], ...]
    labels: tuple[tuple[str, Any], ...]

    @property
    def dims(self) -> dict[str, Any]:
        return dict(self.shape)

    @property
    def is_main(self) -> bool:
        return any(name == "shape" for name, _ in self.labels)


def shape_label(op: str, dims: dict[str, Any]) -> str:
    """"paper" for the paper's shape, else the dims, e.g. "B2 H4 T95 D32"."""
    if dims == PAPER[op]:
        return "paper"
    return " ".join(f"{k}{v}" for k, v in dims.items() if k != "sampling") + (
        f" {dims['sampling']}" if "sampling" in dims else "")


def plan(device: torch.device, quick: bool, ops: tuple[str, ...] = OPS) -> list[Case]:
    """The shapes to measure: the paper's (a small stand-in with quick) and the sweeps around a base."""
    cases: list[Case] = []
    for op in ops:
        points: list[tuple[str, Any, dict[str, Any]]] = []
        main = dict(QUICK_BASE[op]) if quick else dict(PAPER[op])
        points.append(("shape", shape_label(op, main), main))
        base = dict(main)
        if device.type != "cuda" and not quick:
            base["B"] = CPU_BASE_BATCH[op]
        for x_name, key, values in SWEEPS[op]:
            if values is None:
                values = BATCHES["cuda" if device.type == "cuda" else "cpu"][op]
                if quick:
                    values = (base["B"] // 2, base["B"])
            elif quick:
                values = values[:2]
            for v in values:
                points.append((x_name, v, {**base, key: v}))
        by_shape: dict[tuple, list[tuple[str, Any]]] = {}
        for x_name, x, dims in points:
            by_shape.setdefault(tuple(dims.items()), []).append((x_name, x))
        cases += [Case(op, shape, tuple(labels)) for shape, labels in by_shape.items()]
    return cases


# ---- providers --------------------------------------------------------------------------------------
def available(provider: str, device: torch.device, toy: bool = False) -> str | None:
    """None if the provider can run here, else why not (toy: fused under Triton's interpreter too)."""
    if provider.startswith("fused") and device.type != "cuda" and not (toy and kernels_run_on(device)):
        return "fused kernels are benchmarked on CUDA only (the CPU interpreter's timings mean nothing)"
    return None


def _raise_recompile_limit(n: int = 256) -> None:
    """Every sweep shape compiles its own static graph; keep them all rather than fall back to eager."""
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name) and getattr(cfg, name) < n:
            setattr(cfg, name, n)


class _Compiled:
    """A torch.compile'd op, marked as such."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


@functools.lru_cache(maxsize=None)
def implementation(op: str, provider: str, compile_backend: str = "inductor") -> Callable:
    """The callable a provider runs for an op (compiled once per op; one static graph per shape)."""
    if provider == "reference":
        return get_op(op, "reference")
    if provider == "reference-compiled":
        _raise_recompile_limit()
        return _Compiled(torch.compile(get_op(op, "reference"), dynamic=False, backend=compile_backend))
    if provider == "fused":
        return get_op(op, "fused")
    raise ValueError(f"provider={provider!r} is not one of {', '.join(PROVIDERS)}")


# ---- work per op ------------------------------------------------------------------------------------
@dataclass
class Work:
    fn: Callable[[], Any]
    nbytes: float        # bytes the op must read and write
    flops: float | None  # None where FLOP/s is not the op's figure


def attention_bytes(provider: str, B: int, H: int, T: int, D: int, itemsize: int) -> tuple[float, float]:
    """(forward, backward) bytes: the kernel's traffic model for the fused provider, else the ideal 4n, 8n."""
    if provider != "fused":
        n = B * H * T * D * itemsize  # bytes of one of q, k, v, out
        return 4.0 * n, 8.0 * n
    model = kernel("attention_traffic")(B, H, T, D, itemsize)
    return tuple(float(model[p]["read"] + model[p]["write"]) for p in ("forward", "backward"))


def dtype_for(op: str, device: torch.device) -> torch.dtype:
    return torch.bfloat16 if op == "attention" and device.type == "cuda" else torch.float32


def setup(op: str, dims: dict[str, Any], impl: Callable, device: torch.device,
          provider: str = "reference") -> dict[str, Work]:
    """Inputs on the device and one Work per mode."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    if op == "attention":
        B, H, T, D = dims["B"], dims["H"], dims["T"], dims["D"]
        dt = dtype_for(op, device)
        qkv = torch.randn(B, T, 3 * H * D, generator=gen).to(device, dt).requires_grad_()  # (B, T, 3C)
        dout = torch.randn(B, T, H * D, generator=gen).to(device, dt)  # (B, T, C)
        out = impl(qkv, H, THETA)
        fwd_b, bwd_b = attention_bytes(provider, B, H, T, D, qkv.element_size())
        f = 2.0 * B * H * T * T * D  # causal forward: two T×T×D matmuls, half the scores
        return {"forward": Work(lambda: impl(qkv, H, THETA), fwd_b, f),
                "backward": Work(lambda: torch.autograd.grad(out, qkv, dout, retain_graph=True), bwd_b, 2.5 * f),
                "full": Work(lambda: torch.autograd.grad(impl(qkv, H, THETA), qkv, dout), fwd_b + bwd_b, 3.5 * f)}
    if op == "embedding":
        B, T, V, C = dims["B"], dims["T"], dims["V"], dims["C"]
        idx = torch.randint(V, (B, T), generator=gen).to(device)  # (B, T)
        weight = (0.02 * torch.randn(V, C, generator=gen)).to(device).requires_grad_()  # (V, C)
        dout = torch.randn(B, T, C, generator=gen).to(device)  # (B, T, C)
        out = impl(idx, weight)
        n_out, n_w, n_idx = B * T * C * 4, V * C * 4, B * T * 8
        fwd, bwd = n_idx + n_w + n_out, n_idx + n_out + n_w  # idx, table, out; idx, dout, dW
        return {"forward": Work(lambda: impl(idx, weight), fwd, None),
                "backward": Work(lambda: torch.autograd.grad(out, weight, dout, retain_graph=True), bwd, None),
                "full": Work(lambda: torch.autograd.grad(impl(idx, weight), weight, dout), fwd + bwd, None)}
    if op == "batchgen":
        cfg = Config.preset("paper", p=dims["p"], n_id=dims["n_id"], batch_size=max(dims["B"], dims["n_id"]),
                            n_shots=dims["S"], sampling=dims["sampling"])
        src = split_source(cfg, make_tasks(cfg.task), "train", device, training=True, batch_size=dims["B"])
        written = dims["B"] * src.seq_len * 8  # int64 token ids out; the tables read are a few kB
        # compiled: a 0-dim step tensor, else the whole batch is a compile-time constant (inductor stalls on it)
        step = torch.tensor(STEP, device=device) if isinstance(impl, _Compiled) else STEP
        return {"forward": Work(lambda: impl(src, step), written, None)}
    raise ValueError(f"op={op!r} is not one of {', '.join(OPS)}")


def rows_for(case: Case, provider: str, mode: str, work: Work, t: Timing, device: torch.device) -> list[dict]:
    out = []
    for x_name, x in case.labels:
        out.append(row(case.op, provider, mode, x_name, x, t, "ms", device, scale=1e3))
        out.append(row(case.op, provider, mode, x_name, x, t.rate(work.nbytes / 1e9), "GB/s", device))
        if work.flops is not None:
            out.append(row(case.op, provider, mode, x_name, x, t.rate(work.flops / 1e12), "TFLOP/s", device))
    return out


def wanted(case: Case, provider: str, device: torch.device, compile: str, toy: bool = False) -> bool:
    """Whether a provider is measured at a case: it runs here, and compiled ones where `compile` asks."""
    if available(provider, device, toy):
        return False
    if provider.endswith("compiled"):
        return compile == "all" or (compile == "main" and case.is_main)
    return True


@dataclass(frozen=True)
class Item:
    """One (case, provider, mode): what a pytest-benchmark test measures."""

    case: Case
    provider: str
    mode: str
    device: torch.device

    @property
    def id(self) -> str:
        x_name, x = self.case.labels[0]
        return f"{self.case.op}-{self.provider}-{self.mode}-{x_name}={x}".replace(" ", "_")

    def setup(self) -> Work:
        return setup(self.case.op, self.case.dims, implementation(self.case.op, self.provider), self.device,
                     self.provider)[self.mode]

    def rows(self, work: Work, t: Timing) -> list[dict]:
        return rows_for(self.case, self.provider, self.mode, work, t, self.device)


def items(device: torch.device, *, quick: bool = False, compile: str = "main", ops: tuple[str, ...] = OPS,
          providers: tuple[str, ...] = PROVIDERS) -> list[Item]:
    return [Item(case, p, mode, device) for case in plan(device, quick, ops) for p in providers
            if wanted(case, p, device, compile) for mode in MODES[case.op]]


def run(device: torch.device, rec: Recorder, *, quick: bool = False, compile: str = "main",
        ops: tuple[str, ...] = OPS, providers: tuple[str, ...] = PROVIDERS, sweeps: bool = True,
        toy: bool = False, compile_backend: str = "inductor") -> None:
    """Measure every (case, provider, mode); compile: "all" shapes, "main" (the paper's shape) or "off".

    The main shape of every op comes first, then the sweeps (none with sweeps=False), so a run cut short
    keeps the paper's figures. toy: the quick shapes only, fused too where Triton's interpreter is on
    (a rehearsal: the timings mean nothing). compile_backend: torch.compile's, for reference-compiled."""
    for p in providers:
        if p not in PROVIDERS:
            raise ValueError(f"unknown kernels provider {p!r}; providers: {', '.join(PROVIDERS)}")
        why = available(p, device, toy)
        if why:
            rec.note(f"kernels: skipped {p}: {why}")
    for op in ops:
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}; ops: {', '.join(OPS)}")
    cases = sorted(plan(device, quick or toy, ops), key=lambda c: not c.is_main)  # stable: op order kept
    if toy or not sweeps:
        cases = [c for c in cases if c.is_main]
    for case in cases:
        for provider in providers:
            if not wanted(case, provider, device, compile, toy):
                continue
            try:  # inputs built (and the compiled graph traced) once for all modes of a case
                works = setup(case.op, case.dims, implementation(case.op, provider, compile_backend), device)
                for mode, work in works.items():
                    rec.add(rows_for(case, provider, mode, work, measure(work.fn, device, quick=quick or toy),
                                     device))
            except Exception as e:  # one failing provider or shape (a kernel bug, out of memory) must not end the run
                rec.note(f"kernels: {case.op} {provider} {shape_label(case.op, case.dims)} failed: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
