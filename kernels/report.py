"""Offline compile report: every kernel at the tiles the launchers pick, compiled for sm_90 without a GPU.

    python -m fastgrok.kernels.report [--out bench_results/kernel_report.md] [--quick]

For each kernel, dtype (bf16, fp32) and shape the presets use (the paper's T = 95 with D = 128,
and the other head dims and a long sequence for the T > 128 path) it compiles the kernel with
Triton for GPUTarget("cuda", 90, 32), runs the bundled ptxas -v on the PTX, and lists registers
per thread, spill stores/loads (bytes per thread), stack frame and shared memory per program,
vector and scalar global loads and tensor-core instructions in the PTX, launches per attention
layer and the modelled DRAM bytes against the ideal. Pointers and strides
are declared 16-divisible, as Triton specialises them at run time for the model's layouts.
Nothing here runs a kernel, so nothing here is a timing; runs with TRITON_INTERPRET unset.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

PAPER = dict(B=1024, H=4, T=95, D=128)  # the paper's attention shape; the last block queries 32 positions
PAPER_TQ = 32  # positions 3i + 1 for the 32 z targets of a T = 95 sequence
ARCH = 90


@dataclass
class Compiled:
    kernel: str
    version: str
    dtype: str
    shape: str
    tiles: str
    warps: int
    stages: int
    regs: int
    spill_stores: int
    spill_loads: int
    stack: int
    shared: int
    ld_vector: int  # ld.global instructions moving 2-4 elements (vectorised) in the PTX
    ld_scalar: int  # ld.global instructions moving one element
    mma: int  # tensor-core instructions (mma.sync, wgmma.mma_async) in the PTX


def _ptxas_stats(ptx: str) -> tuple[int, int, int, int]:
    """(registers, spill store bytes, spill load bytes, stack frame bytes) from ptxas -v."""
    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        res = subprocess.run([get_ptxas(ARCH).path, "-v", f"--gpu-name=sm_{ARCH}a", str(src), "-o",
                              str(Path(tmp) / "k.o")], capture_output=True, text=True, check=True)
    log = res.stderr
    regs = int(re.search(r"Used (\d+) registers", log).group(1))
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    stack, stores, loads = (int(x) for x in m.groups())
    return regs, stores, loads, stack


def ptx_counts(ptx: str) -> tuple[int, int, int]:
    """(vector global loads, scalar global loads, tensor-core instructions) in a kernel's PTX."""
    loads = re.findall(r"^\s*(?:@!?%p\d+\s+)?ld\.global[\w.:]*", ptx, re.M)
    vector = sum(1 for x in loads if re.search(r"\.v[248]\b", x))
    mma = len(re.findall(r"\b(?:wgmma\.mma_async|mma\.sync)", ptx))
    return vector, len(loads) - vector, mma


def compile_kernel(fn, pointers: dict[str, str], constexprs: dict, num_warps: int, num_stages: int,
                   scalars: dict[str, str] | None = None):
    """Compile a @triton.jit kernel for sm_90 offline; `pointers` maps each pointer argument to its element type."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            sig[name] = "constexpr"
        elif scalars and name in scalars:
            sig[name] = scalars[name]
        elif name in pointers:
            sig[name] = "*" + pointers[name]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name.startswith("stride"):
            sig[name] = "i32"
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif "scale" in name:
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    from ._common import FP_FUSION

    options = dict(num_warps=num_warps, num_stages=num_stages, enable_fp_fusion=FP_FUSION)
    return triton.compile(ASTSource(fn, sig, constexprs, attrs), target=GPUTarget("cuda", ARCH, 32), options=options)


def _stats(kernel: str, version: str, dtype: str, shape: str, tiles: str, fn, dtypes, constexprs, warps, stages,
           scalars: dict[str, str] | None = None):
    k = compile_kernel(fn, dtypes, constexprs, warps, stages, scalars)
    regs, stores, loads, stack = _ptxas_stats(k.asm["ptx"])
    return Compiled(kernel, version, dtype, shape, tiles, warps, stages, regs, stores, loads, stack, k.metadata.shared,
                    *ptx_counts(k.asm["ptx"]))


def _attention_pointers(dtype: str) -> dict[str, str]:
    return {n: dtype for n in ("Q", "K", "V", "Out", "DO", "DQ", "DK", "DV")} | {
        n: "fp32" for n in ("Cos", "Sin", "Lse", "Delta")}


def attention_rows(D: int, T: int, TQ: int, dtype: str, label: str) -> list[Compiled]:
    """The v2 forward and backward at the tiles block_config picks for (T, TQ, D, dtype)."""
    from . import rope_attention as ra

    size = 2 if dtype == "bf16" else 4
    cfg = ra.block_config(T, TQ, D, size, interpret=False)
    prec = "tf32" if dtype == "bf16" else "ieee"
    tensors = _attention_pointers(dtype)
    bm, bn, w, s = cfg["fwd"]
    rows = [_stats("rope_attn_fwd", "v2", dtype, label, f"M{bm} N{bn}", ra._rope_attn_fwd_kernel, tensors,
                   dict(HEAD_DIM=D, BLOCK_M=bm, BLOCK_N=bn, INPUT_PRECISION=prec, UPCAST=False), w, s)]
    bm, bn, bm2, bn2, w, s = cfg["bwd"]
    one = T <= ra.ONE_PROGRAM_MAX_T
    rows.append(_stats("rope_attn_bwd", "v2", dtype, label, f"M{bm} N{bn} / M{bm2} N{bn2}" + (" 1/head" if one else ""),
                       ra._rope_attn_bwd_kernel, tensors,
                       dict(HEAD_DIM=D, BLOCK_M=bm, BLOCK_N=bn, BLOCK_M2=bm2, BLOCK_N2=bn2, ONE_PROGRAM=one,
                            SLICED=TQ != T, INPUT_PRECISION=prec, UPCAST=False), w, s))
    return rows


def other_rows() -> list[Compiled]:
    """Embedding (forward, backward, reduce) and batchgen at the paper's shape."""
    from . import embedding as emb

    rows = []
    N, V, C = 1024 * 95, 29, 512
    bn, bc = emb._fwd_blocks(N, C, interpret=False)
    rows.append(_stats("embedding_fwd", "", "fp32", "paper", f"N{bn} C{bc}", emb._embedding_fwd_kernel,
                       {"Idx": "i64", "W": "fp32", "Out": "fp32"}, dict(BLOCK_N=bn, BLOCK_C=bc), 4, 3))
    bv, bn, bc = emb.BLOCK_V_MAX // 2, *emb.GPU_BWD_BLOCKS  # V = 29 → BLOCK_V 32
    rows.append(_stats("embedding_bwd", "", "fp32", "paper", f"V{bv} N{bn} C{bc} {emb.GPU_BWD_PRECISION}",
                       emb._embedding_bwd_kernel, {"Idx": "i64", "DOut": "fp32", "Part": "fp32"},
                       dict(BLOCK_V=bv, BLOCK_N=bn, BLOCK_C=bc, INPUT_PRECISION=emb.GPU_BWD_PRECISION, UPCAST=False),
                       4, 3))
    rows.append(_stats("embedding_bwd_reduce", "", "fp32", "paper", "1024", emb._embedding_bwd_reduce_kernel, {"Part": "fp32", "DW": "fp32"},
                       dict(BLOCK=1024), 4, 3))
    rows += batchgen_rows()
    return rows


def batchgen_rows() -> list[Compiled]:
    from . import batchgen as bg

    rows = []
    for sampling in ("iid", "distinct"):
        fn, pointers, scalars, constexprs, label = bg.report_config(sampling=sampling)
        rows.append(_stats("batchgen", "", "int64", "paper", label, fn, pointers, constexprs, 4, 3, scalars))
    return rows


def traffic_table() -> list[str]:
    """Modelled DRAM bytes per launch at the paper's shape, bf16, in units of n (one (B, T, C) tensor)."""
    from . import rope_attention as ra

    B, H, T, D = PAPER.values()
    n = B * H * T * D * 2
    ideal = ra.ideal_bytes(B, H, T, D, 2)
    lines = ["| kernels | pass | launches | modelled bytes | ideal | modelled / ideal |", "|---|---|---|---|---|---|"]
    for name, model in (("v2, all 95 queries", ra.traffic(B, H, T, D, 2)),
                        ("v2, last block (32 queries)", ra.traffic(B, H, T, D, 2, PAPER_TQ))):
        for p in ("forward", "backward"):
            total = model[p]["read"] + model[p]["write"]
            lines.append(f"| {name} | {p} | {model[p]['launches']} | {total / n:.3f} n | {ideal[p] / n:.0f} n | "
                         f"{total / ideal[p]:.3f} |")
    lines.append(f"\nn = B·H·T·D·2 bytes = {n / 1e6:.1f} MB at B {B}, H {H}, T {T}, D {D}, bf16.")
    return lines


def render(rows: list[Compiled], header: list[str]) -> str:
    lines = [*header, "", "| kernel | version | dtype | shape | tiles | warps | stages | registers | spill st/ld (B) "
             "| stack (B) | shared (B) | ld.global vector/scalar | mma |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.kernel} | {r.version} | {r.dtype} | {r.shape} | {r.tiles} | {r.warps} | {r.stages} | "
                     f"{r.regs} | {r.spill_stores}/{r.spill_loads} | {r.stack} | {r.shared} | "
                     f"{r.ld_vector}/{r.ld_scalar} | {r.mma} |")
    return "\n".join(lines)


def _git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def collect(quick: bool = False) -> list[Compiled]:
    rows = []
    T, D = PAPER["T"], PAPER["D"]
    for dtype in ("bf16", "fp32"):
        rows += attention_rows(D, T, T, dtype, "paper (T95 D128)")
        rows += attention_rows(D, T, PAPER_TQ, dtype, "paper, last block (32 queries)")
        if not quick:
            rows += attention_rows(D, 256, 256, dtype, "T256 D128 (long path)")
            for d in (32, 64):
                rows += attention_rows(d, T, T, dtype, f"T95 D{d}")
                rows += attention_rows(d, 256, 256, dtype, f"T256 D{d} (long path)")
    if not quick:
        rows += other_rows()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fastgrok.kernels.report", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="also write the markdown table here")
    ap.add_argument("--quick", action="store_true", help="the paper's shape only")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("report: unset TRITON_INTERPRET (the report compiles for sm_90, it runs nothing)", file=sys.stderr)
        return 2
    import torch
    import triton

    rows = collect(args.quick)
    spills = sum(r.spill_stores + r.spill_loads for r in rows)
    header = ["# Kernel compile report (sm_90 offline)", "",
              f"device: sm_90 offline (Triton {triton.__version__}, ptxas bundled with it; torch {torch.__version__}); "
              f"commit {_git_sha()}; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. "
              "Compiled, never run: no timings. The GPU machines run Triton 3.6, whose compiler may allocate "
              "registers differently: rerun this report there (it needs no GPU).", "",
              "Launches per attention layer (forward + backward): 1 + 1 = 2 at every T.", "",
              *traffic_table(), "",
              f"Spilled bytes over all kernels listed: {spills}."]
    text = render(rows, header)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
