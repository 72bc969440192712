"""The short GPU summary the docs quote (docs/benchmarks.md "GPU results"), derived from bench_results/*.csv.

    python benchmarks/gpu_summary.py [--device "NVIDIA H200"] [--dir bench_results]

Every figure is the latest row's median (p50) of that device. Attention's GB/s count the ideal bytes for
every provider (the `reference` row's bytes: its GB/s × its ms), so the shares of the measured copy
bandwidth compare like with like; kernels.csv's own `fused` GB/s use the kernel's traffic model instead.
Speedups are medians ÷ medians, except against the paper's loop, where its mean and median are both given.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from fastgrok.bench.core import read_rows
from fastgrok.bench.render import latest

KERNEL_PROVIDERS = ("fused", "reference", "reference-compiled")
TRAIN_PROVIDERS = ("fused-compiled", "reference-compiled", "fused", "reference", "host-pipeline-compiled",
                   "host-pipeline")


def _cells(folder: Path, device: str) -> dict[tuple[str, str, str, str, str], float]:
    """(benchmark, provider, mode, x, unit) → latest p50 on `device`."""
    out = {}
    for path in sorted(folder.glob("*.csv")):
        rows = read_rows(path)
        if not rows or "p50" not in rows[0]:
            continue
        for (bench, dev, prov, mode, _x_name, x, unit), r in latest(rows).items():
            if dev == device:
                try:
                    out[(bench, prov, mode, x, unit)] = float(r["p50"])
                except ValueError:
                    pass
    return out


def _f(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}g}"


def summary(folder: Path, device: str) -> str:
    c = _cells(folder, device)
    copy = c.get(("copy", "torch", "device-to-device", "1024 MiB", "GB/s"))
    out = [f"Figures: {device}, bench_results/ (latest medians; `python benchmarks/gpu_summary.py`).", ""]
    if copy:
        out += [f"Measured copy bandwidth: {copy:.0f} GB/s (device-to-device, 1 GiB, read + write).", ""]
    out += ["| op (paper shape) | mode | " + " | ".join(KERNEL_PROVIDERS) + " | speedup of fused over the best reference (medians) |",
            "|---|---|" + "---|" * (len(KERNEL_PROVIDERS) + 1)]
    for op in ("attention", "embedding", "batchgen"):
        for mode in ("forward", "backward", "full"):
            ms = {p: c.get((op, p, mode, "paper", "ms")) for p in KERNEL_PROVIDERS}
            if ms["fused"] is None:
                continue
            ideal = None
            if op == "attention" and ms["reference"] and (g := c.get((op, "reference", mode, "paper", "GB/s"))):
                ideal = g * ms["reference"] * 1e-3  # GB
            cells = []
            for p in KERNEL_PROVIDERS:
                cell = f"{_f(ms[p])} ms"
                if ideal and ms[p]:
                    gbs = ideal / (ms[p] * 1e-3)
                    cell += f", {gbs:.0f} GB/s" + (f" ({100 * gbs / copy:.0f} %)" if copy else "")
                cells.append(cell if ms[p] is not None else "—")
            best = min(v for p, v in ms.items() if p != "fused" and v is not None)
            speed = best / ms["fused"]
            verdict = f"{speed:.2f}× " + ("faster" if speed > 1 else "**slower**")
            out.append(f"| {op} | {mode} | " + " | ".join(cells) + f" | {verdict} |")
    out += ["", "Train step (bf16, batch 1024; ms is the median over windows of 10 steps' mean step time; "
            "MFU of 989 TFLOP/s from the FLOPs a step executes, full-model FLOPs in brackets):", "",
            "| provider | paper-d2 ms | steps/s | MFU % | paper-d4 ms | steps/s | MFU % |", "|---|---|---|---|---|---|---|"]
    for p in TRAIN_PROVIDERS:
        row = []
        for x in ("paper-d2", "paper-d4"):
            ms = c.get(("train_step", p, "step", x, "ms"))
            mfu, full = c.get(("train_step", p, "step", x, "MFU %")), c.get(("train_step", p, "step", x, "MFU % (full model)"))
            row += [_f(ms), _f(1e3 / ms) if ms else "—", f"{_f(mfu)} ({_f(full)})" if mfu else "—"]
        out.append(f"| {p} | " + " | ".join(row) + " |")
    mean, med = c.get(("train_step", "paper-code", "step-mean", "paper-d4", "ms")), \
        c.get(("train_step", "paper-code", "step", "paper-d4", "ms"))
    if mean and med:
        out.append(f"| paper-code (the paper's loop) | — | — | — | {mean:.1f} mean, {med:.1f} median | "
                   f"{1e3 / mean:.1f} (mean) | — |")
        ours = c.get(("train_step", "fused-compiled", "step", "paper-d4", "ms"))
        ref = c.get(("train_step", "reference-compiled", "step", "paper-d4", "ms"))
        if ours and ref:
            out += ["", f"Depth 4: fused-compiled is {mean / ours:.2f}× the paper's loop by its mean step "
                    f"({med / ours:.2f}× by its median) and {ref / ours:.2f}× reference-compiled (medians)."]
    prof = sorted(((v, x) for (b, p, m, x, u), v in c.items() if b == "profile" and u == "ms" and m == "paper-d4"),
                  key=lambda vx: vx[1])
    if prof:
        share = {x: v for (b, p, m, x, u), v in c.items() if b == "profile" and u == "% of kernel time" and m == "paper-d4"}
        out += ["", "Profile of a depth-4 fused-compiled step (kernel time per step):", "",
                "| kernel | ms | % |", "|---|---|---|"]
        out += [f"| {x.split(' ', 1)[1]} | {v:.2f} | {share.get(x, 0):.1f} |" for v, x in prof[:8]]
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="NVIDIA H200")
    p.add_argument("--dir", type=Path, default=Path(__file__).resolve().parents[1] / "bench_results")
    a = p.parse_args()
    print(summary(a.dir, a.device), end="")


if __name__ == "__main__":
    main()
