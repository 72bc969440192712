"""Command line: parses flags into a Config and calls the library. Every field is a flag."""
from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import fields
from typing import Any, Sequence

from .config import DEFAULT_PRESET, PRESETS, SECTIONS, Config

# What the CLI reports as a user error: one line on stderr, exit code 2.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError)


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    for section, cls in SECTIONS.items():
        group = p.add_argument_group(f"{section} fields (override the preset)")
        for f in fields(cls):
            flag = "--" + f.name.replace("_", "-")
            names = [flag] if "_" not in f.name else [flag, "--" + f.name]
            group.add_argument(*names, dest=f.name, default=None, metavar=f.name.upper(),
                               help=f"default: {f.default!r}")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastgrok", description="Fast trainer for the in-context modular "
                                     "arithmetic experiments of 'Learning to grok' (He et al., 2024).")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    t = sub.add_parser("train", help="train a run (default preset: quick)")
    t.add_argument("--preset", default=None, help=f"named preset: {', '.join(PRESETS)} (default: {DEFAULT_PRESET})")
    t.add_argument("--config", default=None, help="TOML file: optional preset = '...', then fields")
    t.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run saved in RUN_DIR")
    t.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="stop after this step with a checkpoint (resume later with --resume)")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    t.add_argument("--dist-backend", default="auto", choices=("auto", "nccl", "gloo"),
                   help="under torchrun: the process group's backend (auto: NCCL for CUDA, gloo for the CPU)")
    _add_config_flags(t)
    c = sub.add_parser("config", help="print the resolved config as JSON")
    c.add_argument("--preset", default=None)
    c.add_argument("--config", default=None)
    _add_config_flags(c)
    sub.add_parser("presets", help="list the presets")
    # main() hands everything after `paper` to fastgrok-paper's own parser (the paper's flag names)
    sub.add_parser("paper", add_help=False, help="the paper's command line, as fastgrok-paper (--p=29 …; see "
                   "`fastgrok paper --help`)")
    _add_sweep_parser(sub)
    pl = sub.add_parser("plot", help="draw a sweep's phase diagram, k-shot and curves (or one run's) as PNGs")
    pl.add_argument("path", metavar="SWEEP_DIR|RUN_DIR")
    pl.add_argument("--out", default=None, metavar="DIR", help="where the PNGs go (default: the folder itself)")
    _add_analyze_parser(sub)
    _add_export_parser(sub)
    from .bench.flags import SUITE_NAMES, add_arguments as add_bench_arguments
    add_bench_arguments(sub.add_parser("bench", help=f"run benchmarks ({', '.join(SUITE_NAMES)}, …; rows appended "
                                       "to bench_results/) or render bench_results/README.md"))
    return parser


# The fields a paper-format checkpoint does not hold (its name usually does): flags of `analyze`.
ANALYZE_FIELDS = ("p", "n_var", "selection", "n_pl", "n_id", "n_rd", "max_ood", "alpha", "data_seed", "n_shots",
                  "sampling", "mlp")


def _add_analyze_parser(sub: Any) -> None:
    from .sets import ANALYSES
    a = sub.add_parser("analyze", help="the paper's interpretability study of a run or checkpoint: k-shot, Figure 5's "
                       "grid, attention, embeddings, heads, cosine, label noise (PNGs and JSON)",
                       description="Study a trained model: SOURCE is a run folder (its last.pt, else best.pt) or a "
                       "checkpoint in the paper's format (p and the task fields from its name, or the flags below). "
                       "Writes NAME.png and NAME.json per analysis to SOURCE/analysis/ (or --out).")
    a.add_argument("source", metavar="RUN_DIR|CHECKPOINT")
    a.add_argument("--what", default=None, metavar="LIST", help=f"comma-separated, of {', '.join(ANALYSES)} "
                   "(default: all that fit the model)")
    a.add_argument("--task", default=None, metavar="A,B", help="the task of grid, attention, heads and cosine "
                   "(default: the first o.o.d. task)")
    a.add_argument("--shots", type=int, default=None, metavar="K", help="examples in the fixed context "
                   "(default: n_shots - 1)")
    a.add_argument("--layer", type=int, default=None, metavar="L", help="the head drawn large in heads (default 0)")
    a.add_argument("--head", type=int, default=None, metavar="H", help="(default 0)")
    a.add_argument("--checkpoint", default=None, choices=("best", "last"), help="run folder: last.pt (default, "
                   "else best.pt) or best.pt (chosen on o.o.d. test accuracy: every output says so)")
    a.add_argument("--out", default=None, metavar="DIR", help="where the files go (default: RUN_DIR/analysis/)")
    a.add_argument("--seed", type=int, default=0, help="draw of the fixed context and of the label noise")
    a.add_argument("--noise-seqs", type=int, default=4096, metavar="N", help="label noise: sequences per set")
    a.add_argument("--context", default=None, metavar="X,Y;X,Y;…", help="the fixed context's inputs (their z from "
                   "--task), instead of a draw; K = their number")
    a.add_argument("--draw", default="fastgrok", choices=("fastgrok", "paper"), help="the context's inputs: distinct "
                   "train inputs drawn by --seed (fastgrok), or the paper's Figure 5 draw (random.seed(1) over all p² "
                   "inputs, the same for every task)")
    a.add_argument("--all-tasks", action="store_true", help="grid: every i.d. and o.o.d. task, the same inputs")
    a.add_argument("--noise-protocol", default="fastgrok", choices=("fastgrok", "paper"), help="label noise: j of "
                   "the k examples before the query on train inputs (fastgrok), or the paper's label_noise.ipynb (j "
                   "of all points, the query's own included, test inputs, i.d. and o.o.d. averaged)")
    a.add_argument("--tasks-from", default=None, choices=("fastgrok",), help="a paper-format checkpoint that "
                   "fastgrok-paper trained: its tasks are fastgrok's draw, so kshot, noise and the i.d./o.o.d. labels "
                   "run (without it they do not: the paper's code draws its tasks from its training seed)")
    a.add_argument("--vocab", default="numbers", choices=("numbers", "full"), help="grid: argmax over the p number "
                   "tokens as the paper (default) or over the whole vocabulary")
    a.add_argument("--device", default="auto", help="auto (CUDA if there is one), cpu, cuda, cuda:1")
    a.add_argument("--no-figures", action="store_true", help="the numbers (JSON) alone")
    a.add_argument("--quiet", action="store_true", help="print nothing but errors")
    group = a.add_argument_group("a paper-format checkpoint's task fields (over what its name says)")
    for name in ANALYZE_FIELDS:
        group.add_argument("--" + name.replace("_", "-"), dest=name, default=None, metavar=name.upper())


def _parse_ints(text: str, flag: str, n: int) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise ValueError(f"{flag} {text!r}: expected {n} comma-separated integers")
    return values


def _parse_context(text: str) -> tuple[tuple[int, int], ...]:
    """--context "x,y;x,y;…" as (x, y) pairs, or ValueError naming the flag."""
    pairs = [t.strip() for t in text.split(";") if t.strip()]
    if not pairs:
        raise ValueError(f"--context {text!r}: expected x,y pairs separated by ';', e.g. 1,2;3,4")
    return tuple(_parse_ints(t, "--context", 2) for t in pairs)  # type: ignore[misc]


def _cmd_analyze(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import runfolder
    from .analysis import Options, analyze, open_source
    from .config import FIELD_SECTION, SECTIONS, _coerce
    from typing import get_type_hints
    fields_given = {}
    for name in ANALYZE_FIELDS:
        value = getattr(args, name)
        if value is not None:
            fields_given[name] = _coerce(name, value, get_type_hints(SECTIONS[FIELD_SECTION[name]])[name])
    what = tuple(w.strip() for w in args.what.split(",") if w.strip()) if args.what is not None else ()
    if args.what is not None and not what:
        raise ValueError("--what is empty: name analyses, comma-separated")
    opts = Options(what=what, task=_parse_ints(args.task, "--task", 2) if args.task is not None else None,
                   shots=args.shots, layer=args.layer, head=args.head, seed=args.seed, noise_seqs=args.noise_seqs,
                   figures=not args.no_figures, draw=args.draw, all_tasks=args.all_tasks, vocab=args.vocab,
                   noise_protocol=args.noise_protocol, tasks_from=args.tasks_from,
                   context=_parse_context(args.context) if args.context is not None else None)
    subject = open_source(args.source, checkpoint=args.checkpoint, device=args.device, fields=fields_given)
    log = (lambda _: None) if args.quiet else (lambda m: print(m, flush=True))
    step = f" at step {subject.step}" if subject.step is not None else ""
    log(f"analyze {subject.checkpoint}{step}: p={subject.p}, depth {subject.cfg.model.depth}, width "
        f"{subject.cfg.model.n_embd}, {subject.cfg.model.n_head} heads, {len(subject.tasks.pretrain)} pre-training "
        f"tasks, {len(subject.tasks.ood)} o.o.d.")
    if subject.source == subject.checkpoint:  # a checkpoint file: its task set is fastgrok's draw for the fields
        if args.tasks_from == "fastgrok":
            log(f"tasks: fastgrok's draw for p={subject.p}, data_seed={subject.cfg.task.data_seed}, the ones "
                "fastgrok-paper trained on (--tasks-from fastgrok)")
        else:
            log("tasks: not known (the paper's code draws them from its training seed): no i.d./o.o.d. labels, no "
                "kshot or noise; --tasks-from fastgrok if fastgrok-paper trained it")
    if Path(subject.checkpoint).name == runfolder.BEST:
        log(f"weights: {runfolder.BEST}, chosen on o.o.d. test accuracy: its o.o.d. test numbers are biased upward (every "
            "output says so; --checkpoint last for the unselected end of training)")
    index = analyze(subject, opts, args.out, log=log)
    out = args.out or subject.out_dir
    log(f"{len(index['analyses'])} analyses in {sum(a['seconds'] for a in index['analyses'].values()):.1f} s → {out}")
    return 0


def _add_export_parser(sub: Any) -> None:
    e = sub.add_parser("export", help="write a run's (or a paper checkpoint's) model as safetensors or a "
                       "TransformerLens model, with its config and task set",
                       description="SOURCE is a run folder (its best.pt, else last.pt) or a checkpoint in the paper's "
                       "format. Writes to SOURCE/export/ (safetensors) or SOURCE/tl/ (transformer-lens), or --out.")
    e.add_argument("source", metavar="RUN_DIR|CHECKPOINT")
    e.add_argument("--format", default="safetensors", choices=("safetensors", "transformer-lens"))
    e.add_argument("--out", default=None, metavar="DIR", help="the folder to write")
    e.add_argument("--checkpoint", default=None, choices=("best", "last"), help="run folder: last.pt (default, "
                   "else best.pt) or best.pt (chosen on o.o.d. test accuracy)")
    group = e.add_argument_group("a paper-format checkpoint's task fields (over what its name says)")
    for name in ANALYZE_FIELDS:
        group.add_argument("--" + name.replace("_", "-"), dest=name, default=None, metavar=name.upper())


def _cmd_export(args: argparse.Namespace) -> int:
    from .config import FIELD_SECTION, _coerce
    from typing import get_type_hints
    if args.format == "safetensors":
        from .export import export
    else:
        from .interop import export_transformer_lens as export
    given = {n: _coerce(n, getattr(args, n), get_type_hints(SECTIONS[FIELD_SECTION[n]])[n]) for n in ANALYZE_FIELDS
             if getattr(args, n) is not None}
    files = export(args.source, args.out, args.checkpoint, given)
    print(f"exported {args.source} ({args.format}) → {files[0].parent}: {', '.join(f.name for f in files)}")
    return 0


def _add_sweep_parser(sub: Any) -> None:
    w = sub.add_parser("sweep", help="run a grid of configs as one resumable sweep (local or SLURM)",
                       description="Run every point of a grid; re-run the same command (or `fastgrok sweep "
                       "SWEEP_DIR`) to resume: finished points are skipped, interrupted ones resume from last.pt.")
    w.add_argument("sweep_dir", metavar="SWEEP_DIR")
    w.add_argument("--preset", default=None, help=f"base preset: {', '.join(PRESETS)} (default: {DEFAULT_PRESET})")
    w.add_argument("--config", default=None, help="TOML file: preset = '...', fixed fields, and a [grid] table")
    w.add_argument("--grid", action="append", default=[], metavar="FIELD=VALUES",
                   help="an axis: field=v1,v2,… or field=start:stop:step (inclusive) or start:stop:*factor")
    w.add_argument("--seeds", default=None, metavar="S1,S2", help="the seed axis (same as --grid seed=…)")
    w.add_argument("--jobs", type=int, default=None, help="local engine: points at a time (default: one per GPU, "
                   "else 1); each gets one GPU, or an even share of the CPU threads")
    w.add_argument("--engine", default="local", help="local (default) or slurm")
    w.add_argument("--partition", default=None, help="slurm: partition")
    w.add_argument("--gpus-per-job", type=int, default=None, help="slurm: GPUs per point (default: 1 where the "
                   "partition has GPUs, else 0)")
    w.add_argument("--cpus-per-job", type=int, default=None, help="slurm: CPUs per point, torch's threads "
                   "(default: SLURM's)")
    w.add_argument("--time", default="6:00:00", help="slurm: time limit per job; a job near it saves, requeues and "
                   "resumes from last.pt (default 6:00:00)")
    w.add_argument("--max-requeues", type=int, default=100, metavar="N", help="slurm: requeues on reaching the "
                   "time limit before a point stops (default 100)")
    w.add_argument("--array-parallelism", type=int, default=None, metavar="K", help="slurm: jobs running at once")
    w.add_argument("--retry-failed", action="store_true", help="run the failed points again")
    w.add_argument("--status", action="store_true", help="print the table of points and write results.csv; run nothing")
    w.add_argument("--stop-when-settled", type=int, default=None, metavar="K",
                   help="stop a run after K evaluations in a row with all four sets solved")
    w.add_argument("--no-plots", action="store_true", help="do not redraw the figures as runs finish")
    w.add_argument("--quiet", action="store_true", help="only the final table")
    _add_config_flags(w)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .config import config_and_grid_from_toml
    from .sweep import SlurmOptions, SweepOptions, load_sweep, open_sweep, parse_grid, print_status, run_sweep
    from .sweep.grid import fixed_and_axis
    overrides = {f.name: getattr(args, f.name) for cls in SECTIONS.values() for f in fields(cls)
                 if getattr(args, f.name, None) is not None}
    if args.status:
        given = [flag for flag, on in (("--grid", args.grid), ("--seeds", args.seeds), ("--preset", args.preset),
                                       ("--config", args.config), ("--retry-failed", args.retry_failed),
                                       ("--stop-when-settled", args.stop_when_settled is not None)) if on]
        given += ["--" + k.replace("_", "-") for k in overrides]
        if given:
            raise ValueError(f"--status prints the saved sweep and changes nothing: drop {', '.join(given)} (or drop "
                             "--status to run the sweep with them)")
        print_status(load_sweep(args.sweep_dir))
        return 0
    placed = [k for k in ("out_dir", "run_name") if k in overrides]
    if placed:  # each point's folder is SWEEP_DIR/runs/<point>: a sweep has no place for them
        raise ValueError(f"--{placed[0].replace('_', '-')}: a sweep's runs go under SWEEP_DIR/runs/<point>; "
                         "give another SWEEP_DIR instead")
    table = None
    if args.config is not None:
        if args.preset is not None:
            raise ValueError("give the preset inside the TOML file (preset = '...') or on the command line, not both")
        cfg, table = config_and_grid_from_toml(args.config, overrides)
    elif args.preset is not None or overrides:
        cfg = Config.preset(DEFAULT_PRESET if args.preset is None else args.preset, **overrides)
    else:
        cfg = None
    grid = parse_grid(args.grid, args.seeds, table)
    fixed_and_axis(overrides, grid)
    jobs = args.jobs
    if jobs is None:
        import torch
        jobs = max(1, torch.cuda.device_count()) if args.engine == "local" else 1
    slurm = SlurmOptions(partition=args.partition, gpus_per_job=args.gpus_per_job, cpus_per_job=args.cpus_per_job,
                         time=args.time, array_parallelism=args.array_parallelism, max_requeues=args.max_requeues)
    opts = SweepOptions(engine=args.engine, jobs=jobs, retry_failed=args.retry_failed,
                        stop_when_settled=args.stop_when_settled, plots=not args.no_plots, slurm=slurm)
    opts.check()  # before the folder is made: a bad option leaves nothing behind
    sweep, _ = open_sweep(args.sweep_dir, cfg, grid, args.stop_when_settled)
    opts.stop_when_settled = sweep.stop_when_settled
    final = run_sweep(sweep, opts, log=(lambda _: None) if args.quiet else lambda m: print(m, flush=True))
    print_status(sweep)
    failed = [n for n, s in final.items() if s == "failed"]
    if failed:
        print(f"{len(failed)} point(s) failed (reasons above); `fastgrok sweep {sweep.root} --retry-failed` "
              "runs them again", file=sys.stderr)
    return 1 if failed else 0


# The flag that sets each field a library error (config.FieldError) names.
FIELD_FLAGS = {
    "grid": "--grid FIELD=VALUES, --seeds S1,S2 or a [grid] table in --config (and --preset for the base)",
    "partition": "--partition NAME", "gpus_per_job": "--gpus-per-job N", "cpus_per_job": "--cpus-per-job N",
    "max_requeues": "--max-requeues N", "time": "--time HH:MM:SS",
    "array_parallelism": "--array-parallelism K", "jobs": "--jobs N", "engine": "--engine NAME",
    "stop_when_settled": "--stop-when-settled K", "dist_backend": "--dist-backend gloo|nccl|auto",
}


def _user_error(e: BaseException) -> str:
    """One line for a user's mistake; a library error naming a field gets the flag that sets it."""
    from .config import FieldError
    if isinstance(e, FieldError) and e.field in FIELD_FLAGS:
        return f"{e} (on the command line: {FIELD_FLAGS[e.field]})"
    return str(e)


def _cmd_plot(args: argparse.Namespace) -> int:
    from .sweep import plot_path
    for path in plot_path(args.path, args.out):
        print(path)
    return 0


def resolve_config(args: argparse.Namespace) -> Config:
    overrides = {f.name: getattr(args, f.name) for cls in SECTIONS.values() for f in fields(cls)
                 if getattr(args, f.name, None) is not None}
    if args.config is not None:  # --config '' or --preset '' is a mistake, not "none given"
        if args.preset is not None:
            raise ValueError("give the preset inside the TOML file (preset = '...') or on the command line, not both")
        return Config.from_toml(args.config, **overrides)
    return Config.preset(DEFAULT_PRESET if args.preset is None else args.preset, **overrides)


def _cmd_train(args: argparse.Namespace) -> int:
    from . import distributed
    from .trainer import TrainingError, train
    with distributed.launched(args.dist_backend) as dist:  # under torchrun: one rank of a DDP run
        try:
            if args.resume is not None:  # --resume "" is a mistake, not "no resume"
                given = [f.name for cls in SECTIONS.values() for f in fields(cls) if getattr(args, f.name) is not None]
                if given or args.preset is not None or args.config is not None:
                    raise ValueError("--resume continues the saved config; drop "
                                     f"{', '.join(given) or '--preset/--config'}")
                train(resume=args.resume, stop_at=args.stop_at, quiet=args.quiet)
            else:
                train(resolve_config(args), stop_at=args.stop_at, quiet=args.quiet)
        except (*USER_ERRORS, TrainingError) as e:
            if not dist.enabled:
                raise
            # DDP: rank 0 prints the error the ranks share; a rank failing alone, its own
            dist.report(e, lambda line: print(f"fastgrok: error: {line}", file=sys.stderr, flush=True))
            raise SystemExit(2) from None  # leaves the process group as a failure (no waiting on peers)
        except KeyboardInterrupt as e:
            if not dist.enabled:
                raise
            if dist.is_main:
                print(f"fastgrok: {e or 'interrupted'}", file=sys.stderr)
            raise SystemExit(130) from None
    return 0


def _import_trainer() -> None:
    """Import torch and the trainer so that a Ctrl-C meanwhile always stops us: some libraries' import code
    swallows a KeyboardInterrupt (the run then went on, or failed later with a half-imported numpy)."""
    hits: list[int] = []

    def on_sigint(signum: int, frame: Any) -> None:
        hits.append(signum)
        raise KeyboardInterrupt

    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return  # SIGINT ignored (a background job) or handled by an embedding program: leave it alone
    signal.signal(signal.SIGINT, on_sigint)
    try:
        from . import trainer  # noqa: F401  (torch, numpy, the model)
    except Exception:
        if hits:
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if hits:
        raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["paper"]:  # `fastgrok paper --p=29 …` is `fastgrok-paper --p=29 …`
        from .paper import main as paper_main
        return paper_main(argv[1:])
    try:
        parser = build_parser()
        args = parser.parse_args(argv)  # --help and bad flags answer before torch is imported
        if args.command is None:
            parser.print_help()
            return 2
        if args.command in ("presets", "config"):  # no torch needed
            return _main(args)
        _import_trainer()
        from .distributed import torchrun_env
        try:
            under_torchrun = torchrun_env() is not None
        except ValueError as e:
            print(f"fastgrok: error: {e}", file=sys.stderr)
            return 2
        if under_torchrun:  # under torchrun: an uncaught error's traceback goes to torchrun's report
            from torch.distributed.elastic.multiprocessing.errors import record
            return record(_main)(args)
        return _main(args)
    except KeyboardInterrupt as e:  # anywhere: imports, start-up or the loop (which saves first)
        print(f"fastgrok: {str(e) or 'interrupted before training started'}", file=sys.stderr)
        return 130


def _main(args: argparse.Namespace) -> int:
    if args.command in ("presets", "config"):
        return _cmd_info(args)
    from .trainer import TrainingError
    try:
        if args.command == "train":
            return _cmd_train(args)
        if args.command == "bench":
            from .bench.cli import main as bench_main
            return bench_main(args)
        if args.command in ("sweep", "plot", "analyze", "export"):
            try:
                cmd = {"sweep": _cmd_sweep, "plot": _cmd_plot, "analyze": _cmd_analyze, "export": _cmd_export}[args.command]
                return cmd(args)
            except OSError as e:  # a folder that cannot be made or read: a user error, named
                where = (e.filename or getattr(args, "out", None) or getattr(args, "sweep_dir", None)
                         or getattr(args, "path", None) or args.source)  # a write without a file name: --out
                raise ValueError(f"{where}: {e.strerror or e}") from None
    except (*USER_ERRORS, TrainingError) as e:
        print(f"fastgrok: error: {_user_error(e)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("fastgrok: error: out of memory (the estimate did not foresee it): lower batch_size, n_shots, "
              "depth or n_embd", file=sys.stderr)
        return 2
    except OSError as e:  # one not caught where its path entered
        where = f" ({e.filename})" if e.filename else ""
        print(f"fastgrok: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    return 2


def _cmd_info(args: argparse.Namespace) -> int:
    """`presets` and `config`: torch-free."""
    if args.command == "presets":
        for name, values in PRESETS.items():
            print(f"{name:10s} {', '.join(f'{k}={v}' for k, v in values.items())}")
        return 0
    try:
        print(json.dumps(resolve_config(args).to_dict(), indent=2))
    except USER_ERRORS as e:
        print(f"fastgrok: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a --config file that cannot be read
        print(f"fastgrok: error: {e.strerror or e} ({e.filename})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
