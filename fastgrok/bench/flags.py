"""`fastgrok bench`'s flags, torch-free: `fastgrok --help` and a bad flag answer before torch and the suites
are imported (cli.py, which runs them, imports both)."""
from __future__ import annotations

import argparse

SUITE_NAMES = ("kernels", "train", "tasks", "sweep")  # `all`
EXTRA_NAMES = ("ceilings", "profile", "paper-run", "sm90", "gpu-tests", "paper-code")  # run only when named
COMPILE = ("all", "main", "off")
# Suite options beyond quick/compile: flag dest → parser of its value; each suite gets those its run() takes.
OPTIONS = ("toy", "configs", "batch_sizes", "providers", "ops", "sweeps", "seconds", "eval_every", "backend", "top",
           "compile_backend", "tests", "workers", "paper_dir", "families", "evals", "repeats")


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in _names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of ints") from None


def add_arguments(p: argparse.ArgumentParser, suite: bool = True) -> None:
    if suite:
        p.add_argument("suite", nargs="?", default="all", choices=(*SUITE_NAMES, "all", *EXTRA_NAMES, "render", "merge"),
                       help=f"what to run (default: all = {', '.join(SUITE_NAMES)}); render only rewrites "
                            "OUT_DIR/README.md; merge appends the rows of --from DIR that OUT_DIR lacks")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: small shapes, few repeats, no torch.compile (unless --compile says so)")
    p.add_argument("--out-dir", default="bench_results",
                   help="rows are appended to OUT_DIR/<suite>.csv, never overwritten (default: bench_results)")
    p.add_argument("--device", default="auto", help="'auto' (cuda if available), 'cpu', 'cuda' or 'cuda:N'")
    p.add_argument("--compile", choices=COMPILE, default=None,
                   help="torch.compile providers at every shape and config (all), only the paper's shape and "
                        "first config (main; the default) or nowhere (off; the default with --quick)")
    g = p.add_argument_group("suite options (each suite takes those it knows)")
    g.add_argument("--toy", action="store_true",
                   help="toy sizes that run every code path on a CPU, fused kernels under TRITON_INTERPRET=1 "
                        "(the gpu_check rehearsal; timings mean nothing)")
    g.add_argument("--configs", type=_names, default=None, help="train/profile: configs, e.g. paper-d2,paper-d4")
    g.add_argument("--batch-sizes", type=_ints, default=None, help="train: batch sizes, e.g. 1024,2048,4096")
    g.add_argument("--providers", type=_names, default=None, help="train/kernels: providers, comma-separated")
    g.add_argument("--ops", type=_names, default=None, help="kernels: ops, e.g. attention,embedding")
    g.add_argument("--no-sweeps", dest="sweeps", action="store_false", default=None,
                   help="kernels: the paper's shapes only")
    g.add_argument("--seconds", type=float, default=None, help="paper-run: wall-clock seconds (default 180)")
    g.add_argument("--eval-every", type=int, default=None, help="paper-run: evaluation interval (default 500)")
    g.add_argument("--backend", default=None, choices=("reference", "fused"),
                   help="profile/paper-run: the model's backend (default fused)")
    g.add_argument("--top", type=int, default=None, help="profile: kernels listed (default 15)")
    g.add_argument("--compile-backend", default=None,
                   help="train/profile/kernels: torch.compile backend (default inductor)")
    g.add_argument("--tests", type=_names, default=None,
                   help="gpu-tests: test paths, comma-separated (default: the tree's tests/)")
    g.add_argument("--workers", type=int, default=None,
                   help="gpu-tests: pytest-xdist processes, where it is installed (default: one process)")
    g.add_argument("--paper-dir", default=None, metavar="DIR",
                   help="paper-code: a copy of github.com/ablghtianyi/ICL_Modular_Arithmetic (pre_training/, _src/)")
    g.add_argument("--families", type=_names, default=None, help="tasks: families, e.g. p29,p59,p97 (default all)")
    g.add_argument("--no-evals", dest="evals", action="store_false", default=None,
                   help="tasks: step and start-up only, no evaluation sweep")
    g.add_argument("--repeats", type=int, default=None, help="tasks: start-up repetitions per point (default 5)")
    if suite:
        p.add_argument("--from", dest="source", default=None, metavar="DIR",
                       help="merge: the folder whose rows (and paper_run-*.jsonl files) are added to OUT_DIR")
