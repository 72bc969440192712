"""`fastgrok bench [kernels|train|tasks|all|render]`: run the suites, print a table, append the rows
to `<out_dir>/<suite>.csv` and re-render `<out_dir>/README.md`. benchmarks/*.py and
benchmarks/gpu_check.sh call this same code.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import torch

from . import kernels as bench_kernels, render as bench_render, sweep as bench_sweep, tasks as bench_tasks
from . import train as bench_train
from .core import Recorder, env as bench_env, print_rows, resolve

SUITES: dict[str, Callable[..., None]] = {"kernels": bench_kernels.run, "train": bench_train.run,
                                          "tasks": bench_tasks.run, "sweep": bench_sweep.run}
COMPILE = ("all", "main", "off")


def add_arguments(p: argparse.ArgumentParser, suite: bool = True) -> None:
    if suite:
        p.add_argument("suite", nargs="?", default="all", choices=(*SUITES, "all", "render"),
                       help="what to run (default: all); render only rewrites OUT_DIR/README.md")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: small shapes, few repeats, no torch.compile (unless --compile says so)")
    p.add_argument("--out-dir", default="bench_results",
                   help="rows are appended to OUT_DIR/<suite>.csv, never overwritten (default: bench_results)")
    p.add_argument("--device", default="auto", help="'auto' (cuda if available), 'cpu', 'cuda' or 'cuda:N'")
    p.add_argument("--compile", choices=COMPILE, default=None,
                   help="torch.compile providers at every shape and config (all), only the paper's shape and "
                        "first config (main; the default) or nowhere (off; the default with --quick)")


def run_suites(suites: list[str], device: torch.device | str, out_dir: str | Path | None, *, quick: bool = False,
               compile: str | None = None, log: Callable[[str], None] | None = print) -> dict[str, Recorder]:
    """Run suites in order; with out_dir, append each one's rows to out_dir/<suite>.csv as they come."""
    device = torch.device(device) if not isinstance(device, torch.device) else device
    if compile is None:
        compile = "off" if quick else "main"
    if compile not in COMPILE:
        raise ValueError(f"compile={compile!r} is not one of {', '.join(COMPILE)}")
    out = {}
    for name in suites:
        if name not in SUITES:
            raise ValueError(f"unknown benchmark suite {name!r}; suites: {', '.join(SUITES)}")
        rec = Recorder(Path(out_dir) / f"{name}.csv" if out_dir is not None else None, log=log)
        dev, torch_v, triton_v, sha = bench_env(device)
        rec.log(f"bench {name}{' (quick)' if quick else ''} | {dev} | torch {torch_v} | triton {triton_v} | "
                f"git {sha} | compile {compile}" + (f" | appending to {rec.path}" if rec.path else ""))
        SUITES[name](device, rec, quick=quick, compile=compile)
        out[name] = rec
    return out


def main(args: argparse.Namespace) -> int:
    """The CLI entry point: 0 when every measurement ran, 1 when some failed (their rows are missing)."""
    out_dir = Path(args.out_dir)
    if args.suite == "render":
        print(f"rendered {bench_render.write(out_dir)}")
        return 0
    device = resolve(args.device)
    suites = list(SUITES) if args.suite == "all" else [args.suite]
    recs = run_suites(suites, device, out_dir, quick=args.quick, compile=args.compile)
    failed = 0
    for name, rec in recs.items():
        if rec.rows:
            print_rows(rec.rows, f"fastgrok bench {name} — {rec.rows[0]['device']}")
            print(f"appended {len(rec.rows)} rows to {rec.path}")
        for n in rec.notes:
            print(f"note: {n}")
        failed += sum(" failed: " in n for n in rec.notes)
    print(f"rendered {bench_render.write(out_dir)}")
    if failed:
        print(f"{failed} measurement(s) failed; see the notes above")
    return 1 if failed else 0


def script_main(suite: str, argv: list[str] | None = None, description: str | None = None) -> int:
    """Entry point of benchmarks/bench_<suite>.py: the flags of `fastgrok bench`, one suite."""
    p = argparse.ArgumentParser(description=description or f"fastgrok bench {suite}")
    add_arguments(p, suite=False)
    args = p.parse_args(argv)
    args.suite = suite
    try:
        return main(args)
    except (ValueError, TypeError) as e:
        print(f"fastgrok: error: {e}", file=sys.stderr)
        return 2
