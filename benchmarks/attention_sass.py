"""The attention kernels' instruction-issue floor from their sm_90 SASS, offline (no GPU): a lower bound on time
that occupancy cannot lift, beside docs/kernels.md's latency line (issue #29).

    python benchmarks/attention_sass.py [--candidates split-w4,wg64-w8,...] [--no-rope | --no-pin]

For each candidate with a split backward, at the paper's shape (B 1024, H 4, T 95, D 128, bf16, every query):
the backward's two kinds of program (dK/dV of a key block, dQ of a query block) are compiled apart for sm_90
(the kernel's `job < n_kblocks` branch pinned in a patched copy of kernels/rope_attention.py), disassembled
with the nvdisasm that Triton bundles, and their main loop found by its back edge. Dynamic instructions per
warp = straight-line code + loop body × iterations per program (Triton's pipeliner predicates the tail's
prefetches rather than peeling iterations: every tensor-core instruction is in the loop, which is checked),
summed over a head's programs (iterations from the tiles); the issue floor = warp-instructions per head ×
heads per SM / (4 schedulers × 1 instruction a cycle × 1.98 GHz, the H200's clock). The forward likewise.
`--no-rope` loads q and k as they come (what a backward on pre-rotated operands would execute); `--no-pin`
drops `_rope_operand`'s opaque identity, so the rotation is recomputed in each dot's operand layout as before
it was added. A model from static code: loops are counted by their bodies; latency, stalls and memory are not
in it. Nothing runs.

Until 2026-12-07 the count took the body (iterations − stages + 1) times, as if the pipeliner peeled the last
stages − 1 iterations into straight-line code; it does not (no HMMA/HGMMA outside the loop), so the floors of
pipelined candidates (2–3 stages) were 20–40 % low. The one-stage kernels (`split`, v2's backward) were right.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
B, H, T, D = 1024, 4, 95, 128
SM, CLOCK, SCHEDULERS = 132, 1.98e9, 4
BRANCH = "        if job < n_kblocks:\n            _bwd_dkdv_block("


def patched_module(no_rope: bool, no_pin: bool = False):
    """kernels/rope_attention.py with the split branch pinned by a constexpr ONLY (1: dK/dV, 2: dQ), optionally
    with q and k loaded unrotated in the tile loops or rotated without the opaque identity; its custom ops
    renamed so both copies can load."""
    src = (ROOT / "kernels" / "rope_attention.py").read_text()
    sig = "PRE_DELTA: tl.constexpr, PIN: tl.constexpr,\n):\n    # Causal RoPE attention backward"
    for old, new in ((sig, sig.replace("PIN: tl.constexpr,", "PIN: tl.constexpr, ONLY: tl.constexpr = 0,")),
                     (BRANCH, BRANCH.replace("job < n_kblocks:", "(job < n_kblocks and ONLY != 2) or ONLY == 1:")),
                     ("from ._common import", "from fastgrok.kernels._common import"),
                     ('"fastgrok::', '"fastgrok_sass::'), ('op_defined("fastgrok_sass::rope_attn_fwd")', "False")):
        if src.count(old) < 1:
            raise SystemExit(f"attention_sass: kernels/rope_attention.py changed; cannot patch {old.splitlines()[0]!r}")
        src = src.replace(old, new)
    if no_pin:
        pin = "    if PIN:\n        x = tl.inline_asm_elementwise("
        if pin not in src:
            raise SystemExit("attention_sass: kernels/rope_attention.py changed; cannot drop the rotation's pin")
        src = src.replace(pin, pin.replace("if PIN:", "if False:"))
    if no_rope:
        rope_q = "_rope_operand(Q, stride_qt, pos, row_ok, Cos, Sin, Q, HEAD_DIM, BLOCK_M, UPCAST, PIN)\n        do,"
        rope_k = ("_rope_operand(K, stride_kt, offs_n, key_ok, Cos, Sin, Q, HEAD_DIM, BLOCK_N, UPCAST, PIN)\n"
                  "        v = _load_rows(V, stride_vt, offs_n, key_ok, HEAD_DIM, UPCAST)\n        s = tl.dot(q, tl.trans(k)")
        for old in (rope_q, rope_k):
            if old not in src:
                raise SystemExit("attention_sass: kernels/rope_attention.py changed; cannot drop the loops' RoPE")
        src = src.replace(rope_q, "_load_rows(Q, stride_qt, pos, row_ok, HEAD_DIM, UPCAST)\n        do,")
        src = src.replace(rope_k, rope_k.replace(
            "_rope_operand(K, stride_kt, offs_n, key_ok, Cos, Sin, Q, HEAD_DIM, BLOCK_N, UPCAST, PIN)",
            "_load_rows(K, stride_kt, offs_n, key_ok, HEAD_DIM, UPCAST)"))
    path = Path(tempfile.mkdtemp()) / "rope_attention_sass.py"  # @triton.jit needs a file it can read
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("rope_attention_sass", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sass(launch) -> str:
    """The launch compiled for sm_90 and disassembled."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile, make_backend

    from fastgrok.bench import sm90
    target = GPUTarget("cuda", sm90.ARCH, sm90.WARP_SIZE)
    options, signature, constexprs, attrs = sm90._specialise(launch, make_backend(target))
    with tempfile.TemporaryDirectory() as cache, sm90._env(TRITON_CACHE_DIR=cache, TRITON_ALWAYS_COMPILE="1"):
        k = compile(ASTSource(launch.fn, signature, constexprs, attrs), target=target, options=options.__dict__)
    import triton
    nvdisasm = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(k.asm["cubin"])
        f.flush()
        return subprocess.run([str(nvdisasm), "-c", f.name], capture_output=True, text=True, check=True).stdout


def count(text: str) -> tuple[int, int]:
    """(instructions, instructions in the largest loop body: the span from a back edge's target to the edge).

    The dynamic count below takes the loop body once per iteration, which holds because Triton's software
    pipeliner predicates the last iterations' prefetches instead of peeling them: every tensor-core
    instruction of the kernel lies in its loop. Refused otherwise (the count would be wrong)."""
    labels, ins, current = {}, [], None
    for line in text.splitlines():
        m = re.match(r"\s*\.L_x_(\d+):", line)
        if m:
            current = m.group(1)
            continue
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s*(.*?);", line)
        if m:
            addr = int(m.group(1), 16)
            if current is not None:
                labels[current], current = addr, None
            ins.append((addr, m.group(2)))
    span = (0, -1)
    for addr, text_ in ins:
        m = re.search(r"BRA\b.*?\.L_x_(\d+)", text_)
        if m and labels.get(m.group(1), addr) < addr and addr - labels[m.group(1)] > span[1] - span[0]:
            span = (labels[m.group(1)], addr)
    outside = sum(1 for a, t in ins if re.search(r"\bH(G)?MMA\b", t) and not span[0] <= a <= span[1])
    if outside:
        raise SystemExit(f"attention_sass: {outside} tensor-core instructions outside the main loop (a peeled "
                         "iteration?): the loop-body count does not hold for this kernel")
    return len(ins), sum(1 for a, _ in ins if span[0] <= a <= span[1])


def dynamic(n: int, body: int, iters: list[int]) -> int:
    """Instructions a warp executes over programs with these loop iteration counts: straight-line code (prologue
    prefetches included) once, the body once per iteration (the pipeliner predicates, it does not peel)."""
    return sum(n - body + body * it for it in iters)


def floor_ms(warp_instructions_per_head: float) -> float:
    return warp_instructions_per_head / SCHEDULERS * (B * H / SM) / CLOCK * 1e3


def analyse(module, name: str) -> dict:
    import torch

    from fastgrok.bench import sm90
    from fastgrok.kernels._common import capture_launches
    x = torch.empty(B, T, H, D, dtype=torch.bfloat16).transpose(1, 2)  # (B, H, T, D) view, as from qkv
    lse = torch.empty(B, H, T)
    with capture_launches(sm90.SM_COUNT) as found:
        module.rope_attn_forward(x, x, x, candidate=name)
        module.rope_attn_backward(x, x, x, x, x, lse, candidate=name)
    fwd, bwd = found[0], found[-1]
    out = {"candidate": name}
    n, body = count(sass(sm90.Launch("attention", name, fwd.kernel, fwd.args, fwd.kwargs)))
    bm, bn, w = fwd.kwargs["BLOCK_M"], fwd.kwargs["BLOCK_N"], fwd.kwargs["num_warps"]
    iters = [math.ceil(min((i + 1) * bm, T) / bn) for i in range(math.ceil(T / bm))]
    out["fwd"] = floor_ms(dynamic(n, body, iters) * w)
    if bwd.kwargs["ONE_PROGRAM"]:
        out["bwd"] = None  # one program per head: nested loops; its split twin ("split" for v2) stands in
        return out
    total = 0
    for only in (1, 2):
        kw = dict(bwd.kwargs, ONLY=only)
        n, body = count(sass(sm90.Launch("attention", name, bwd.kernel, bwd.args, kw)))
        if only == 1:
            BM, BN = kw["BLOCK_M"], kw["BLOCK_N"]
            iters = [math.ceil((T - j * BN) / BM) for j in range(math.ceil(T / BN))]
        else:
            BM2, BN2 = kw["BLOCK_M2"], kw["BLOCK_N2"]
            iters = [math.ceil(min((i + 1) * BM2, T) / BN2) for i in range(math.ceil(T / BM2))]
        total += dynamic(n, body, iters) * kw["num_warps"]
    out["bwd"] = floor_ms(total)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/attention_sass.py", description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", default=None, help="comma-separated candidate names (default: all)")
    how = ap.add_mutually_exclusive_group()
    how.add_argument("--no-rope", action="store_true", help="q and k loaded unrotated in the tile loops")
    how.add_argument("--no-pin", action="store_true", help="the rotation recomputed in each dot's operand layout")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("attention_sass: compiles for the GPU; run it without TRITON_INTERPRET=1", file=sys.stderr)
        return 2
    module = patched_module(args.no_rope, args.no_pin)
    names = list(module.CANDIDATES) if args.candidates is None else [c.strip() for c in args.candidates.split(",")]
    unknown = [c for c in names if c not in module.CANDIDATES]
    if unknown:
        print(f"attention_sass: --candidates: {', '.join(unknown)} not among {', '.join(module.CANDIDATES)}",
              file=sys.stderr)
        return 2
    import triton
    how = " — loops without RoPE" if args.no_rope else " — rotation not pinned" if args.no_pin else ""
    print(f"issue floor at B {B}, H {H}, T {T}, D {D}, bf16 (sm_90 offline, Triton {triton.__version__}, "
          f"{CLOCK / 1e9:.2f} GHz, {SM} SMs){how}")
    print(f"{'candidate':18s} {'forward (ms)':>13s} {'backward (ms)':>14s}")
    for name in names:
        r = analyse(module, name)
        bwd = "—" if r["bwd"] is None else f"{r['bwd']:.3f}"
        print(f"{name:18s} {r['fwd']:13.3f} {bwd:>14s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
