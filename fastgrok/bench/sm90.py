"""Offline sm_90 compile report: every Triton kernel configuration the paper presets, the benchmarks and
the GPU tests launch, compiled for an H100 (sm_90) without a GPU; registers, spills, shared memory, PTX.

The registry's fused ops run for real on empty CPU tensors of the real shapes inside the kernels'
`capture_launches` (handed out by fastgrok.backends): the launchers take the GPU's paths (its tiles,
checks and split sizes) and record each kernel launch instead of running it. Every distinct launch —
Triton's own specialisation of the arguments (dtypes, 16-byte alignment, ints equal to 1 or divisible
by 16), the constexprs and num_warps/num_stages — is then compiled with `triton.compile(ASTSource(...),
target=GPUTarget("cuda", 90, 32))`, the runtime's own path, and read back: registers per thread, spill
stores/loads and stack frame from ptxas's report (`-v`), Triton's shared memory, and in the PTX the
vector and scalar global loads and the tensor-core instructions. The markdown report adds the attention
kernel's modelled DRAM traffic (`traffic` beside it) against the ideal. Nothing runs a kernel, so
nothing here is a timing. Needs triton's CUDA backend (the PyPI wheel ships ptxas), no device and no
TRITON_INTERPRET.

    fastgrok bench sm90 [--quick] [--out-dir DIR]         # table; rows (registers, spill B, shared B) to DIR/sm90.csv
    python -m fastgrok.bench.sm90 [--quick] [--out FILE]  # the markdown report (e.g. bench_results/kernel_report.md)
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ..backends import capture_launches, get_op, interpreter_active, kernel_module
from ..config import Config
from ..data import split_source
from ..tasks import make_tasks
from .core import Recorder, Timing, env, row

ARCH = 90          # H100 / H200
WARP_SIZE = 32     # GPUTarget's third field: NVIDIA's warp, as Triton's CUDA driver reports it
SM_COUNT = 132     # H100 SXM / H200: the embedding backward sizes its token splits by it
THETA = 10000.0
PAPER = dict(B=1024, H=4, T=95, D=128)  # the paper's attention shape
PAPER_TQ = 32  # the last block queries the 32 z positions 3i + 1 of a T = 95 sequence

_BF16, _FP16, _FP32 = torch.bfloat16, torch.float16, torch.float32
# Attention launches: (label, B, H, T, D, dtype). The paper's shape in each dtype (training is bf16 under
# autocast; the GPU tests add fp16/fp32), the kernel benchmarks' T and head_dim sweeps, the GPU tests'
# shapes, and the tiles block_config picks for every head dim on the short and the long path in both
# training dtypes. Each runs twice: every query (blocks below the last), then the z positions only.
ATTENTION = [
    *[("paper", 1024, 4, 95, 128, dt) for dt in (_BF16, _FP16, _FP32)],
    *[(f"bench T={t}", 64, 4, t, 128, _BF16) for t in (32, 64, 128, 256)],
    *[(f"bench head_dim={d}", 64, 4, 95, d, _BF16) for d in (32, 64)],
    *[(f"test B{b}H{h}T{t}D{d}", b, h, t, d, dt) for b, h, t, d in ((2, 4, 1, 128), (2, 4, 17, 64), (1, 4, 1024, 128),
                                                                   (2, 2, 1024, 32))
      for dt in (_BF16, _FP16, _FP32)],
    ("test compile B4T95D64", 4, 4, 95, 64, _FP32),
    *[(f"tiles T={t} head_dim={d}", 64, 4, t, d, dt) for t in (95, 256) for d in (32, 64, 128) for dt in (_BF16, _FP32)],
]
# Embedding launches: (label, B, T, V, C, dtype). Training feeds fp32 (the table and residual stream stay
# fp32 under autocast); the GPU tests add bf16/fp16; the benchmarks sweep T, batch and n_embd.
EMBEDDING = [
    *[("paper", 1024, 95, 29, 512, dt) for dt in (_FP32, _BF16, _FP16)],
    ("paper-vocab47", 1024, 95, 47, 512, _FP32),
    *[(f"bench T={t}", 1024, t, 29, 512, _FP32) for t in (32, 256)],
    *[(f"bench batch={b}", b, 95, 29, 512, _FP32) for b in (256, 4096)],
    *[(f"bench n_embd={c}", 1024, 95, 29, c, _FP32) for c in (128, 1024)],
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
    """One distinct compiled configuration and what ptxas and the PTX say about it."""

    kernel: str
    labels: list[str]
    consts: str
    num_warps: int
    num_stages: int
    registers: int | None = None
    spill_stores: int | None = None   # bytes per thread
    spill_loads: int | None = None
    stack: int | None = None          # stack frame, bytes per thread
    shared: int | None = None         # bytes per program
    ld_vector: int | None = None      # ld.global instructions moving 2-8 elements (vectorised) in the PTX
    ld_scalar: int | None = None      # ld.global instructions moving one element
    mma: int | None = None            # tensor-core instructions (mma.sync, wgmma.mma_async) in the PTX
    seconds: float = 0.0
    error: str | None = None
    ops: set[str] = field(default_factory=set)


def capture(op: str, label: str, call: Callable[[], object]) -> list[Launch]:
    """The kernel launches `call()` makes, recorded (not run) as the GPU's, each marked with `op` and `label`."""
    with capture_launches(SM_COUNT) as found:
        call()
    return [Launch(op, label, f.kernel, f.args, f.kwargs) for f in found]


def attention_launches(scenarios: list[tuple] = ATTENTION,
                       q_slices: tuple[slice | None, ...] = (None, slice(1, None, 3))) -> list[Launch]:
    """Forward and backward launches of the fused attention op at each (label, B, H, T, D, dtype) and query slice."""
    attention = get_op("attention", "fused")
    out = []
    for label, B, H, T, D, dt in scenarios:
        qkv = torch.empty(B, T, 3 * H * D, dtype=dt, requires_grad=True)  # (B, T, 3C): the fused projection
        for q_slice in q_slices:
            def step(q_slice: slice | None = q_slice) -> None:
                y = attention(qkv, H, THETA, q_slice)  # (B, T', C)
                torch.autograd.grad(y, qkv, torch.empty_like(y))
            out += capture("attention", label, step)
    return out


# The attention kernels' other launch candidates (kernels/rope_attention.py CANDIDATES; the default one is
# what every scenario above launches) in bf16 at the paper's shape, the other head dims and the long path.
CANDIDATE_SHAPES = [("paper", 1024, 4, 95, 128, _BF16), ("tiles T=95 head_dim=32", 64, 4, 95, 32, _BF16),
                    ("tiles T=95 head_dim=64", 64, 4, 95, 64, _BF16), ("tiles T=256 head_dim=128", 64, 4, 256, 128, _BF16)]


def candidate_launches(shapes: list[tuple] = CANDIDATE_SHAPES) -> list[Launch]:
    """The attention launches of every non-default candidate at `shapes`, labelled "<label> [<candidate>]"."""
    ra = kernel_module("attention")
    out = []
    for name in ra.CANDIDATES:
        if name != ra.DEFAULT_CANDIDATE:
            with ra.attention_candidate(name):
                out += attention_launches([(f"{label} [{name}]", *rest) for label, *rest in shapes])
    return out


def embedding_launches(scenarios: list[tuple] = EMBEDDING) -> list[Launch]:
    """Forward and backward launches of the fused embedding op at each (label, B, T, V, C, dtype)."""
    embedding = get_op("embedding", "fused")
    out = []
    for label, B, T, V, C, dt in scenarios:
        idx = torch.zeros(B, T, dtype=torch.int64)
        weight = torch.empty(V, C, dtype=dt, requires_grad=True)

        def step() -> None:
            y = embedding(idx, weight)  # (B, T, C)
            torch.autograd.grad(y, weight, torch.empty_like(y))
        out += capture("embedding", label, step)
    return out


def batchgen_launches(scenarios: list[tuple] = BATCHGEN) -> list[Launch]:
    """Launches of the fused batch generator at each (label, batch, n_shots, sampling) of the paper preset."""
    batchgen = get_op("batchgen", "fused")
    cfg = Config.preset("paper")
    tasks = make_tasks(cfg.task)
    out = []
    for label, B, S, sampling in scenarios:
        c = cfg.override(n_shots=S, sampling=sampling)
        src = split_source(c, tasks, "train", "cpu", training=True, batch_size=B)
        for step in (7, torch.tensor(7)):  # an int, and a device scalar (CUDA-graph mode)
            out += capture("batchgen", label, lambda step=step: batchgen(src, step))
    return out


def launches() -> list[Launch]:
    """Every kernel launch of the scenarios above, captured (no kernel runs; tensors are never touched)."""
    return attention_launches() + candidate_launches() + embedding_launches() + batchgen_launches()


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
    "stack": re.compile(r"(\d+) bytes stack frame"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
}


def parse_ptxas(log: str, name: str) -> dict[str, int]:
    """Registers, stack frame and spills of entry `name` from a `ptxas -v` log."""
    start = log.find(f"Compiling entry function '{name}'")
    part = log[start:] if start >= 0 else log
    out = {}
    for key, pat in _PTXAS.items():
        m = pat.search(part)
        if m:
            out[key] = int(m.group(1))
    return out


def ptx_counts(ptx: str) -> dict[str, int]:
    """Vector and scalar global loads and tensor-core instructions in a kernel's PTX."""
    loads = re.findall(r"^\s*(?:@!?%p\d+\s+)?ld\.global[\w.:]*", ptx, re.M)
    vector = sum(1 for x in loads if re.search(r"\.v[248]\b", x))
    mma = len(re.findall(r"\b(?:wgmma\.mma_async|mma\.sync)", ptx))
    return {"ld_vector": vector, "ld_scalar": len(loads) - vector, "mma": mma}


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
                for name, v in (parse_ptxas(buf.getvalue(), k.metadata.name) | ptx_counts(k.asm["ptx"])).items():
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
    lines = ["| kernel | configuration | warps | stages | registers | spill stores / loads (B) | stack (B) | shared (B) "
             "| ld.global vector / scalar | mma | launched by |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in results:
        used = ", ".join(c.labels[:4]) + (f" (+{len(c.labels) - 4})" if len(c.labels) > 4 else "")
        if c.error:
            lines.append(f"| {c.kernel} | {c.consts} | {c.num_warps} | {c.num_stages} | FAILED: {c.error} | | | | | | "
                         f"{used} |")
        else:
            lines.append(f"| {c.kernel} | {c.consts} | {c.num_warps} | {c.num_stages} | {c.registers} | "
                         f"{c.spill_stores} / {c.spill_loads} | {c.stack} | {c.shared} | {c.ld_vector} / {c.ld_scalar} "
                         f"| {c.mma} | {used} |")
    return "\n".join(lines)


def traffic_table() -> list[str]:
    """Modelled DRAM bytes per attention launch at the paper's shape, bf16, in units of n (one (B, T, C) tensor)."""
    ra = kernel_module("attention")
    B, H, T, D = PAPER.values()
    n = B * H * T * D * 2
    ideal = ra.ideal_bytes(B, H, T, D, 2)
    lines = ["| queries | pass | launches | modelled bytes | ideal | modelled / ideal |", "|---|---|---|---|---|---|"]
    for name, model in ((f"all {T}", ra.traffic(B, H, T, D, 2)),
                        (f"last block ({PAPER_TQ})", ra.traffic(B, H, T, D, 2, PAPER_TQ))):
        for p in ("forward", "backward"):
            total = model[p]["read"] + model[p]["write"]
            lines.append(f"| {name} | {p} | {model[p]['launches']} | {total / n:.3f} n | {ideal[p] / n:.0f} n | "
                         f"{total / ideal[p]:.3f} |")
    lines.append(f"\nn = B·H·T·D·2 bytes = {n / 1e6:.1f} MB at B {B}, H {H}, T {T}, D {D}, bf16.")
    return lines


def report(results: list[Compiled]) -> str:
    """The markdown report: versions, the attention traffic model, the table, the spill total."""
    dev, torch_v, triton_v, sha = env(torch.device("cpu"))
    spills = sum((c.spill_stores or 0) + (c.spill_loads or 0) for c in results if not c.error)
    failed = sum(c.error is not None for c in results)
    return "\n".join([
        "# Kernel compile report (sm_90 offline)", "",
        f"device: sm_{ARCH} offline (Triton {triton_v}, ptxas bundled with it; torch {torch_v}); "
        f"commit {sha}; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. "
        "Compiled, never run: no timings. The GPU machines run Triton 3.6, whose compiler may allocate "
        "registers differently: rerun this report there (it needs no GPU).", "",
        "Launches per attention layer (forward + backward): 1 + 1 = 2 at every T.", "",
        *traffic_table(), "",
        f"{len(results)} distinct configurations, {failed} failed; spilled bytes over all of them: {spills}.", "",
        table(results)])


def _refuse_interpreter(what: str) -> None:
    if interpreter_active():
        raise ValueError(f"{what} compiles for the GPU: run it without TRITON_INTERPRET=1")


def _selected(quick: bool) -> list[Launch]:
    found = launches()
    return [f for f in found if f.label.startswith("paper")] if quick else found


def run(device: torch.device, rec: Recorder, *, quick: bool = False, compile: str = "main") -> None:
    """Capture, compile for sm_90 and record one row per configuration and figure (registers, spill B, shared B):
    provider "triton" (the version is its own column), mode the kernel, x its configuration.

    `device` is ignored (no device is used); `quick` compiles only the paper's shapes."""
    _refuse_interpreter("fastgrok bench sm90")
    found = _selected(quick)
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


def main(argv: list[str] | None = None) -> int:
    """`python -m fastgrok.bench.sm90`: the markdown report on stdout (and in --out), progress on stderr."""
    ap = argparse.ArgumentParser(prog="python -m fastgrok.bench.sm90", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="also write the markdown report here")
    ap.add_argument("--quick", action="store_true", help="the paper's shapes only")
    args = ap.parse_args(argv)
    try:
        _refuse_interpreter("python -m fastgrok.bench.sm90")
    except ValueError as e:
        print(f"sm90: {e}", file=sys.stderr)
        return 2
    text = report(compile_all(_selected(args.quick), log=lambda line: print(line, file=sys.stderr)))
    print(text)
    if args.out:
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text + "\n")
        except OSError as e:
            print(f"sm90: cannot write {args.out}: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
