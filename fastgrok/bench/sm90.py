"""Offline compile check: every Triton kernel configuration the paper presets, the benchmarks and the
GPU tests launch, compiled for an H100 (sm_90) without a GPU; registers, spills and shared memory.

The launchers run for real on empty CPU tensors of the real shapes (same strides, same block-size
choices as on CUDA: the interpreter switch is held off), but each kernel launch is captured instead of
run. Every distinct launch — Triton's own specialisation of the arguments (dtypes, 16-byte alignment,
ints equal to 1 or divisible by 16), the constexprs and num_warps/num_stages — is then compiled with
`triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 64))`, the runtime's own path, and
ptxas's report (`-v`) is read: registers per thread, spill stores/loads, and Triton's shared memory.
Needs triton's CUDA backend (the PyPI wheel ships ptxas), no device and no TRITON_INTERPRET.

    fastgrok bench sm90 [--out-dir DIR]       # table; rows (registers, spill B, shared B) to DIR/sm90.csv
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from ..backends import kernel_module
from ..config import Config
from ..data import split_source
from ..tasks import make_tasks
from .core import Recorder, Timing, env, row

ARCH = 90          # H100 / H200
WARP_SIZE = 64     # GPUTarget's third field (warp size 32 on NVIDIA; Triton's own target uses it as is)
SM_COUNT = 132     # H100 SXM / H200: the embedding backward sizes its token splits by it
THETA = 10000.0

# Attention launches: (label, B, H, T, D, dtype). The paper's shape in each dtype (training is bf16 under
# autocast; the GPU tests add fp16/fp32), the kernel benchmarks' T and head_dim sweeps, the GPU tests' shapes.
ATTENTION = [
    *[("paper", 1024, 4, 95, 128, dt) for dt in (torch.bfloat16, torch.float16, torch.float32)],
    *[(f"bench T={t}", 64, 4, t, 128, torch.bfloat16) for t in (32, 64, 128, 256)],
    *[(f"bench head_dim={d}", 64, 4, 95, d, torch.bfloat16) for d in (32, 64)],
    *[(f"test B{b}H{h}T{t}D{d}", b, h, t, d, dt) for b, h, t, d in ((2, 4, 1, 128), (2, 4, 17, 64), (1, 4, 1024, 128),
                                                                   (2, 2, 1024, 32))
      for dt in (torch.bfloat16, torch.float16, torch.float32)],
    ("test compile B4T95D64", 4, 4, 95, 64, torch.float32),
]
# Embedding launches: (label, B, T, V, C, dtype). Training feeds fp32 (the table and residual stream stay
# fp32 under autocast); the GPU tests add bf16/fp16; the benchmarks sweep T, batch and n_embd.
EMBEDDING = [
    *[("paper", 1024, 95, 29, 512, dt) for dt in (torch.float32, torch.bfloat16, torch.float16)],
    ("paper-vocab47", 1024, 95, 47, 512, torch.float32),
    *[(f"bench T={t}", 1024, t, 29, 512, torch.float32) for t in (32, 256)],
    *[(f"bench batch={b}", b, 95, 29, 512, torch.float32) for b in (256, 4096)],
    *[(f"bench n_embd={c}", 1024, 95, 29, c, torch.float32) for c in (128, 1024)],
]
# Batch generation: (label, batch, n_shots, sampling); the paper preset's tasks (p 29, n_id 512).
BATCHGEN = [
    *[(f"paper {s}", 1024, 32, s) for s in ("iid", "paper", "distinct")],
    *[(f"bench n_shots={k}", 1024, k, "iid") for k in (8, 16, 64)],
    *[(f"bench batch={b}", b, 32, "iid") for b in (256, 4096)],
]


@dataclass
class Launch:
    """One captured kernel launch: the kernel, its arguments and where it came from."""

    op: str
    label: str
    fn: Any                        # the JITFunction
    args: tuple
    kwargs: dict[str, Any]


@dataclass
class Compiled:
    """One distinct compiled configuration and ptxas's report on it."""

    kernel: str
    labels: list[str]
    consts: str
    num_warps: int
    num_stages: int
    registers: int | None = None
    spill_stores: int | None = None
    spill_loads: int | None = None
    shared: int | None = None
    seconds: float = 0.0
    error: str | None = None
    ops: set[str] = field(default_factory=set)


class _Capture:
    """Stands in for a JITFunction in its module: `kernel[grid](...)` records the launch instead of running it."""

    def __init__(self, fn: Any, sink: list[Launch], op: str, label: Callable[[], str]) -> None:
        self.fn, self.sink, self.op, self.label = fn, sink, op, label

    def __getitem__(self, grid: Any) -> Callable[..., None]:
        def launch(*args: Any, **kwargs: Any) -> None:
            self.sink.append(Launch(self.op, self.label(), self.fn, args, kwargs))
        return launch


@contextlib.contextmanager
def _captured(sink: list[Launch], label: Callable[[], str]) -> Iterator[None]:
    """Patch the kernel modules: launches captured, the device and interpreter checks as on CUDA."""
    rope_attention, embedding, batchgen = (kernel_module(op) for op in ("attention", "embedding", "batchgen"))
    patches: list[tuple[Any, str, Any]] = []
    for mod, op in ((rope_attention, "attention"), (embedding, "embedding"), (batchgen, "batchgen")):
        for name, value in list(vars(mod).items()):
            if name.endswith("_kernel") and hasattr(value, "__getitem__") and hasattr(value, "fn"):
                patches.append((mod, name, _Capture(value, sink, op, label)))
        patches.append((mod, "check_device", lambda t, name: None))
        patches.append((mod, "interpreter_active", lambda: False))
    patches.append((embedding, "_sm_count", lambda device: SM_COUNT))
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
    try:
        for mod, name, value in patches:
            setattr(mod, name, value)
        yield
    finally:
        for mod, name, value in saved:
            setattr(mod, name, value)


def launches() -> list[Launch]:
    """Every kernel launch of the scenarios above, captured (no kernel runs; tensors are never touched)."""
    rope_attention, embedding, batchgen = (kernel_module(op) for op in ("attention", "embedding", "batchgen"))
    sink: list[Launch] = []
    current = {"label": ""}
    with _captured(sink, lambda: current["label"]):
        for label, B, H, T, D, dt in ATTENTION:
            current["label"] = label
            C = H * D
            qkv = torch.empty(B, T, 3 * C, dtype=dt)  # (B, T, 3C): the model's fused projection
            # every query (blocks below the last), then the z positions only (the last block's q_slice)
            for q_start, q_step, q_len in ((0, 1, T), (1, 3, len(range(1, T, 3)))):
                out, lse = rope_attention._qkv_fwd_impl(qkv, H, THETA, q_start, q_step, q_len)
                rope_attention._qkv_bwd_impl(torch.empty(B, q_len, C, dtype=dt), qkv, out, lse, H, THETA,
                                             q_start, q_step, q_len)
        for label, B, T, V, C, dt in EMBEDDING:
            current["label"] = label
            idx = torch.zeros(B, T, dtype=torch.int64)
            embedding.embedding_forward(idx, torch.empty(V, C, dtype=dt), check_bounds=False)
            embedding.embedding_backward(torch.empty(B, T, C, dtype=dt), idx, V)
        cfg = Config.preset("paper")
        tasks = make_tasks(cfg.task)
        for label, B, S, sampling in BATCHGEN:
            current["label"] = label
            c = cfg.override(n_shots=S, sampling=sampling)
            src = split_source(c, tasks, "train", "cpu", training=True, batch_size=B)
            for step in (7, torch.tensor(7)):  # an int, and a device scalar (CUDA-graph mode)
                batchgen.batchgen_forward(src.task_vecs, src.inputs, src.p, B, S, sampling, src.key, step)
    return sink


def _specialise(launch: Launch, backend: Any) -> tuple[Any, dict, dict, dict]:
    """Triton's runtime specialisation of a launch's arguments, without a driver: options, signature,
    constexprs, attrs — exactly what `JITFunction.run` hands to `compile`."""
    from triton.runtime.jit import create_function_from_signature
    fn = launch.fn
    kwargs = dict(launch.kwargs)
    kwargs.setdefault("debug", False)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*launch.args, **kwargs)
    return fn._pack_args(backend, kwargs, bound_args, specialization, options)


_PTXAS = {
    "registers": re.compile(r"Used (\d+) registers"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
}


def _parse_ptxas(log: str, name: str) -> dict[str, int]:
    """Registers and spills of entry `name` from a `ptxas -v` log."""
    start = log.find(f"Compiling entry function '{name}'")
    part = log[start:] if start >= 0 else log
    out = {}
    for key, pat in _PTXAS.items():
        m = pat.search(part)
        if m:
            out[key] = int(m.group(1))
    return out


def compile_all(found: list[Launch], log: Callable[[str], None] | None = print) -> list[Compiled]:
    """Compile every distinct launch for sm_90; one Compiled per distinct configuration."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile, make_backend

    target = GPUTarget("cuda", ARCH, WARP_SIZE)
    backend = make_backend(target)
    distinct: dict[str, tuple[Compiled, Launch, tuple]] = {}
    for launch in found:
        options, signature, constexprs, attrs = _specialise(launch, backend)
        names = launch.fn.arg_names
        consts = " ".join(f"{names[k[0]]}={v}" for k, v in sorted(constexprs.items()) if len(k) == 1
                          and names[k[0]].isupper() and names[k[0]] not in ("INPUT_PRECISION",))
        dtypes = sorted({v for v in signature.values() if v.startswith("*") and "i64" not in v and "i32" not in v})
        key = repr((launch.fn.__name__, sorted(signature.items()), sorted(constexprs.items(), key=str),
                    sorted(attrs.items(), key=str), options.num_warps, options.num_stages))
        if key not in distinct:
            c = Compiled(launch.fn.__name__, [], (" ".join(d.lstrip("*") for d in dtypes) + " " + consts).strip(),
                         options.num_warps, options.num_stages)
            distinct[key] = (c, launch, (options, signature, constexprs, attrs))
        c = distinct[key][0]
        c.ops.add(launch.op)
        if launch.label not in c.labels:
            c.labels.append(launch.label)
    out = []
    with tempfile.TemporaryDirectory() as cache, _env(TRITON_CACHE_DIR=cache, TRITON_ALWAYS_COMPILE="1",
                                                      TRITON_DUMP_PTXAS_LOG="1"):
        for c, launch, (options, signature, constexprs, attrs) in distinct.values():
            t0 = time.perf_counter()
            buf = io.StringIO()
            try:
                with contextlib.redirect_stdout(buf):
                    k = compile(ASTSource(launch.fn, signature, constexprs, attrs), target=target,
                                options=options.__dict__)
                c.shared = int(k.metadata.shared)
                for name, v in _parse_ptxas(buf.getvalue(), k.metadata.name).items():
                    setattr(c, name, v)
            except Exception as e:  # report every configuration, failing ones included
                c.error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"[:300]
            c.seconds = time.perf_counter() - t0
            if log is not None:
                log(f"  {c.kernel:34s} {c.consts:60s} w{c.num_warps} s{c.num_stages}: " + (
                    f"FAILED {c.error}" if c.error else
                    f"{c.registers} regs, spills {c.spill_stores}/{c.spill_loads} B, shared {c.shared} B "
                    f"({c.seconds:.1f} s)"))
            out.append(c)
    return out


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def table(results: list[Compiled]) -> str:
    """A markdown table of the compiled configurations."""
    lines = ["| kernel | configuration | warps | stages | registers | spill stores / loads (B) | shared (B) | "
             "launched by |", "|---|---|---|---|---|---|---|---|"]
    for c in results:
        used = ", ".join(c.labels[:4]) + (f" (+{len(c.labels) - 4})" if len(c.labels) > 4 else "")
        if c.error:
            lines.append(f"| {c.kernel} | {c.consts} | {c.num_warps} | {c.num_stages} | FAILED: {c.error} | | | "
                         f"{used} |")
        else:
            lines.append(f"| {c.kernel} | {c.consts} | {c.num_warps} | {c.num_stages} | {c.registers} | "
                         f"{c.spill_stores} / {c.spill_loads} | {c.shared} | {used} |")
    return "\n".join(lines)


def run(device: torch.device, rec: Recorder, *, quick: bool = False, compile: str = "main") -> None:
    """Capture, compile for sm_90 and record one row per configuration and figure (registers, spill B, shared B):
    provider "triton" (the version is its own column), mode the kernel, x its configuration.

    `device` is ignored (no device is used); `quick` compiles only the paper's shapes."""
    if os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on"):
        raise ValueError("fastgrok bench sm90 compiles for the GPU: run it without TRITON_INTERPRET=1")
    found = launches()
    if quick:
        found = [f for f in found if f.label.startswith("paper")]
    rec.log(f"sm90: {len(found)} launches captured")
    results = compile_all(found, log=rec.log)
    target = f"sm_{ARCH} (offline)"
    dev, torch_v, triton_v, sha = env(torch.device("cpu"))
    rows, seen = [], set()
    for c in results:
        if c.error:
            rec.note(f"sm90: {c.kernel} {c.consts} failed: {c.error}")
            continue
        # the first launch that asked for it names a configuration: equal constexprs can still differ in
        # Triton's specialisation of the other arguments (T = 95 vs 64: divisible by 16 or not)
        x = f"{c.labels[0]}: {c.consts} w{c.num_warps} s{c.num_stages}"
        n = 2
        while (c.kernel, x) in seen:
            x = f"{c.labels[0]}: {c.consts} w{c.num_warps} s{c.num_stages} ({n})"
            n += 1
        seen.add((c.kernel, x))
        for unit, v in (("registers", c.registers), ("spill B", (c.spill_stores or 0) + (c.spill_loads or 0)),
                        ("shared B", c.shared)):
            r = row("sm90_compile", "triton", c.kernel, "config", x, Timing(v, v, v), unit, device)
            r["device"] = target
            rows.append(r)
    rec.add(rows)
    rec.log(table(results))
    failed = sum(c.error is not None for c in results)
    spilled = sum(bool(c.spill_stores or c.spill_loads) for c in results if not c.error)
    rec.log(f"sm90: {len(results)} distinct configurations ({dev}, torch {torch_v}, triton {triton_v}, git {sha}): "
            f"{failed} failed, {spilled} spill")
