"""`fastgrok bench [kernels|train|tasks|sweep|all|ceilings|profile|paper-run|sm90|gpu-tests|paper-code|render|merge]`: run the
suites, print a table, append the rows to `<out_dir>/<suite>.csv` and re-render `<out_dir>/README.md`.
benchmarks/*.py and benchmarks/gpu_check.sh call this same code. `all` is the measured suites
(flags.SUITE_NAMES: kernels, train, tasks, sweep); the others (flags.EXTRA_NAMES) run when named.
"""
from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Callable

import torch

from .. import distributed
from . import (ceilings as bench_ceilings, gputests as bench_gputests, kernels as bench_kernels,
               papercode as bench_papercode, paperrun as bench_paperrun, profile as bench_profile,
               render as bench_render, sm90 as bench_sm90, sweep as bench_sweep, tasks as bench_tasks,
               train as bench_train)
from .core import Recorder, env as bench_env, merge as merge_results, print_rows, resolve
from .flags import COMPILE, EXTRA_NAMES, OPTIONS, SUITE_NAMES, add_arguments  # noqa: F401  (add_arguments: for callers)

SUITES: dict[str, Callable[..., None]] = {"kernels": bench_kernels.run, "train": bench_train.run,
                                          "tasks": bench_tasks.run, "sweep": bench_sweep.run}
# Run only when named (not part of `all`): the device's ceilings, a kernel profile of one step, a time-boxed
# training run, the offline sm_90 compile check, the GPU tests' outcome and the paper's own loop.
EXTRA: dict[str, Callable[..., None]] = {"ceilings": bench_ceilings.run, "profile": bench_profile.run,
                                         "paper-run": bench_paperrun.run, "sm90": bench_sm90.run,
                                         "gpu-tests": bench_gputests.run, "paper-code": bench_papercode.run}
assert tuple(SUITES) == SUITE_NAMES and tuple(EXTRA) == EXTRA_NAMES  # the parser's choices (flags.py)
CSV = {"paper-code": "train"}  # the paper's loop as train_step rows, beside ours; others: <suite>.csv with "-" as "_"
def run_suites(suites: list[str], device: torch.device | str, out_dir: str | Path | None, *, quick: bool = False,
               compile: str | None = None, log: Callable[[str], None] | None = print,
               **options: object) -> dict[str, Recorder]:
    """Run suites in order; with out_dir, append each one's rows to out_dir/<suite>.csv as they come.

    options (see OPTIONS; None = the suite's default) go to the suites whose run() takes them."""
    device = torch.device(device) if not isinstance(device, torch.device) else device
    if compile is None:
        compile = "off" if quick else "main"
    if compile not in COMPILE:
        raise ValueError(f"compile={compile!r} is not one of {', '.join(COMPILE)}")
    out = {}
    every = {**SUITES, **EXTRA}
    for name in suites:
        if name not in every:
            raise ValueError(f"unknown benchmark suite {name!r}; suites: {', '.join(every)}")
        fn = every[name]
        takes = inspect.signature(fn).parameters
        unknown = [k for k in options if k not in OPTIONS]
        if unknown:
            raise ValueError(f"unknown suite option(s) {', '.join(unknown)}; options: {', '.join(OPTIONS)}")
        opts = {k: v for k, v in options.items() if v is not None and k in takes}
        csv_name = CSV.get(name, name.replace("-", "_"))
        rec = Recorder(Path(out_dir) / f"{csv_name}.csv" if out_dir is not None else None, log=log)
        dev, torch_v, triton_v, sha = bench_env(device)
        rec.log(f"bench {name}{' (quick)' if quick else ''}{' (toy)' if options.get('toy') else ''} | {dev} | "
                f"torch {torch_v} | triton {triton_v} | git {sha} | compile {compile}"
                + (f" | appending to {rec.path}" if rec.path else ""))
        fn(device, rec, quick=quick, compile=compile, **opts)
        out[name] = rec
    return out


def main(args: argparse.Namespace) -> int:
    """The CLI entry point: 0 when every measurement ran, 1 when some failed (their rows are missing)."""
    out_dir = Path(args.out_dir)
    if args.suite == "render":
        print(f"rendered {bench_render.write(out_dir)}")
        return 0
    if args.suite == "merge":
        if not args.source:
            raise ValueError("merge needs --from DIR, the folder whose rows are appended to --out-dir")
        for line in merge_results(args.source, out_dir):
            print(line)
        print(f"rendered {bench_render.write(out_dir)}")
        return 0
    options = {k: getattr(args, k, None) for k in OPTIONS}
    options["toy"] = options["toy"] or None
    if distributed.torchrun_env() is not None:
        return _main_ddp(args, out_dir, options)
    device = resolve(args.device)
    suites = list(SUITES) if args.suite == "all" else [args.suite]
    recs = run_suites(suites, device, out_dir, quick=args.quick, compile=args.compile, **options)
    return _report(recs, out_dir)


def _main_ddp(args: argparse.Namespace, out_dir: Path, options: dict[str, object]) -> int:
    """Under torchrun: the train suite as DDP over every rank; rank 0 records, prints and renders."""
    if args.suite != "train":  # every rank sees it; rank 0 says it
        if distributed.torchrun_env()["RANK"] == 0:
            raise ValueError(f"under torchrun only the train suite runs (torchrun … -m fastgrok bench train), "
                             f"not {args.suite!r}")
        return 2
    with distributed.launched() as dist:
        device = dist.device(args.device)
        recs = run_suites(["train"], device, out_dir if dist.is_main else None, quick=args.quick,
                          compile=args.compile, log=print if dist.is_main else None, **options)
        return _report(recs, out_dir) if dist.is_main else 0


def _report(recs: dict[str, Recorder], out_dir: Path) -> int:
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
    args.suite, args.source = suite, None
    try:
        return main(args)
    except (ValueError, TypeError) as e:
        print(f"fastgrok: error: {e}", file=sys.stderr)
        return 2
