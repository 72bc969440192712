"""A drop-in for the paper's training script: its flags, its .tab log and .pth checkpoints, fastgrok's trainer.

The paper's code (github ablghtianyi/ICL_Modular_Arithmetic) trains with `pre_training/icl_grokking.py`,
launched by SLURM scripts as `torchrun … icl_grokking.py --flags`. Replace the script by `-m fastgrok.paper`
(or run `fastgrok-paper --flags`): every flag of its parser is read with its name, type and default, and
is either mapped onto a fastgrok Config field, accepted and noted (it only tuned the old loader or the
launcher), or refused by name with exit code 2 (it selects a feature fastgrok does not have). Beside
fastgrok's own run folder it writes, as the paper's code does, the tab-separated log under `../data/`
(rewritten at every record step) and state_dict checkpoints under `../ckpts/` at the `--n_ckpts` steps;
`--out_dir DIR` puts `data/`, `ckpts/` and `runs/` under DIR instead of `..`.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .config import Config

PROG = "fastgrok-paper"
PAPER_VOCAB_EXTRA = 18  # the paper's tokenizer: numbers 0 … base, then 10 operator and 7 position tokens
MAX_OOD = 256           # the paper's cap on o.o.d. tasks
TAB_COLUMNS = ("step", "tr_loss", "tr_acc", "tr_acc_last", "test_loss", "test_acc", "last_test_acc",
               "ood_train_loss", "ood_train_acc", "ood_train_last_acc", "ood_val_loss", "ood_val_acc",
               "ood_val_last_acc")


class PaperFlagError(ValueError):
    """A paper flag with a value fastgrok cannot honour; the message names the flag."""


def str2bool(text: str) -> bool:
    """The paper's boolean flags: True/False (also yes/no, t/f, y/n, 1/0), any case."""
    low = str(text).lower()
    if low in ("yes", "true", "t", "y", "1"):
        return True
    if low in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


# ---- the flag table -------------------------------------------------------------------------------
MAPPED, NOTED, REFUSED = "mapped", "noted", "refused"


@dataclass(frozen=True)
class PaperFlag:
    """One flag of the paper's parser: its type and default there, and what fastgrok does with it.

    mapped: sets the fastgrok fields in `fastgrok` (values outside `allowed` are refused by name);
    noted: accepted, changes nothing here, and said once when given; refused: only `allowed` values
    (the paper's default among them) are accepted, any other ends the run before it starts."""

    name: str
    type: Callable[[str], Any]
    default: Any
    kind: str
    fastgrok: str                                   # the field(s) set, or why the flag is noted/refused
    allowed: Callable[[Any], bool] | None = None


def _is(*values: Any) -> Callable[[Any], bool]:
    return lambda v: v in values


def _lower_in(*values: str) -> Callable[[Any], bool]:
    return lambda v: str(v).lower() in values


LOADER = "only tuned the paper's data loader; fastgrok draws each batch on the device from (seed, step)"

PAPER_FLAGS: tuple[PaperFlag, ...] = (
    # basic settings
    PaperFlag("model_name", str, "rope_decoder", REFUSED, "only the RoPE decoder (an encoder is not causal)",
              _is("rope_decoder")),
    PaperFlag("device", str, "cuda", MAPPED, "device"),
    PaperFlag("dtype", str, "bfloat16", MAPPED, "dtype (with --mixed_precision)"),
    PaperFlag("mixed_precision", str2bool, True, MAPPED, "dtype: True → bf16 autocast, False → fp32"),
    PaperFlag("num_workers", int, 0, NOTED, LOADER),
    PaperFlag("seed", int, 1, MAPPED, "seed (model init and training batches)"),
    PaperFlag("tqdm_bar", str2bool, False, NOTED, "fastgrok prints its own progress (a bar on a terminal)"),
    # launcher
    PaperFlag("dist_url", str, "env://", NOTED, "one process only for now; torchrun's environment is read"),
    PaperFlag("dist_backend", str, "nccl", NOTED, "one process only for now"),
    # model
    PaperFlag("n_layer", int, 4, MAPPED, "depth"),
    PaperFlag("dp", float, 0.0, REFUSED, "no dropout in fastgrok's model", _is(0.0)),
    PaperFlag("if_ln", str2bool, True, REFUSED, "fastgrok's blocks always have LayerNorm", _is(True)),
    PaperFlag("vocab_size", int, -1, NOTED, "derived, as the paper's code does: base + 18 (its tokenizer)"),
    PaperFlag("n_embd", int, 512, MAPPED, "n_embd"),
    PaperFlag("n_head", int, 4, MAPPED, "n_head"),
    PaperFlag("block_size", int, 512, NOTED, "only in the file names (RoPE has no length limit in training)"),
    PaperFlag("act_name", str, "relu", MAPPED, "mlp: relu, gelu (tanh) or swiglu", _lower_in("relu", "gelu", "swiglu")),
    PaperFlag("widen_factor", int, 4, MAPPED, "widen"),
    PaperFlag("mu", float, 1.0, REFUSED, "no skip-connection scaling in fastgrok", _is(1.0)),
    PaperFlag("weight_tying", str2bool, True, REFUSED, "fastgrok's head is always tied to the embedding", _is(True)),
    PaperFlag("dont_decay_embd", str2bool, False, REFUSED, "fastgrok decays the (tied) embedding", _is(False)),
    PaperFlag("s", float, 0.0, REFUSED, "only standard attention scaling (s = 0)", _is(0.0)),
    # data
    PaperFlag("n_tasks_pl", int, 64, MAPPED, "n_pl (parallelogram) or n_id (--parallelogram False)"),
    PaperFlag("n_tasks_rd", int, 0, MAPPED, "n_rd"),
    PaperFlag("parallelogram", str2bool, True, MAPPED, "selection: parallelogram or random"),
    PaperFlag("n_var", int, 2, MAPPED, "n_var"),
    PaperFlag("data_seed", int, 0, MAPPED, "data_seed"),
    PaperFlag("split_data", str2bool, True, REFUSED, "fastgrok always splits the inputs (α)", _is(True)),
    PaperFlag("data_pct", float, 80.0, MAPPED, "alpha = data_pct / 100"),
    PaperFlag("split_tasks", str2bool, False, REFUSED, "o.o.d. tasks are evaluated separately (as the paper does)",
              _is(False)),
    PaperFlag("task_pct", float, 50.0, NOTED, "unused with --split_tasks False, as in the paper's code"),
    PaperFlag("p", int, 29, MAPPED, "p"),
    PaperFlag("base", int, 29, MAPPED, "must equal --p: fastgrok's tokens are the numbers 0 … p-1"),
    PaperFlag("n_point_per_row", int, 32, MAPPED, "n_shots"),
    PaperFlag("encrypted", str2bool, True, REFUSED, "task vectors never appear in the sequence", _is(True)),
    PaperFlag("pos_hint", str2bool, False, REFUSED, "no digit-position tokens", _is(False)),
    PaperFlag("reverse_target", str2bool, False, REFUSED, "no digit reversal", _is(False)),
    PaperFlag("show_mod", str2bool, False, REFUSED, "no <MOD> p tokens", _is(False)),
    PaperFlag("show_seos", str2bool, False, REFUSED, "no <SOS>/<EOS> tokens", _is(False)),
    PaperFlag("fake_restart_steps", int, 5000, NOTED, LOADER),
    PaperFlag("n_val_step", int, 16, MAPPED, "eval_batches = ⌈n_val_step · eval_bs / bs⌉"),
    # optimisation
    PaperFlag("optim", str, "adamw", REFUSED, "fastgrok trains with AdamW only", _lower_in("adamw")),
    PaperFlag("bs", int, 1024, MAPPED, "batch_size"),
    PaperFlag("eval_bs", int, 1024, MAPPED, "eval_batches (with --n_val_step) and the o.o.d. task cap"),
    PaperFlag("lr", float, 1.5e-4, MAPPED, "lr"),
    PaperFlag("n_cycles", int, 1, REFUSED, "one warm-up + decay cycle only", _is(1)),
    PaperFlag("clip", float, 0.0, MAPPED, "grad_clip"),
    PaperFlag("wd", float, 2.0, MAPPED, "weight_decay"),
    PaperFlag("beta1", float, 0.9, MAPPED, "beta1"),
    PaperFlag("beta2", float, 0.98, MAPPED, "beta2"),
    PaperFlag("eps", float, 1e-8, NOTED, "the paper's code never passes it to AdamW (which uses 1e-8); "
              "fastgrok keeps eps = 1e-8 too"),
    PaperFlag("steps", int, 200_000, MAPPED, "steps"),
    PaperFlag("warmup_steps", int, 10_000, MAPPED, "warmup"),
    PaperFlag("lr_decay", str, "cosine", REFUSED, "fastgrok's schedule is warm-up then cosine", _lower_in("cosine")),
    PaperFlag("reshuffle_step", int, 1, NOTED, LOADER),
    PaperFlag("fake_epochs", int, 1_000_000, NOTED, LOADER),
    # saving
    PaperFlag("steps_per_record", int, 1000, MAPPED, "eval_every (and the .tab rows: step 1, then every multiple)"),
    PaperFlag("n_ckpts", int, 1, MAPPED, "the .pth checkpoints: 1 → the last step, n > 1 → log-spaced from "
              "--warmup_steps to --steps, 0 → none"),
)
FLAGS: dict[str, PaperFlag] = {f.name: f for f in PAPER_FLAGS}

# fastgrok's own additions (exact names only, so abbreviations of the paper's flags mean what they meant there)
EXTRA_FLAGS = {
    "out_dir": "folder that takes the place of `..`: DIR/data/*.tab, DIR/ckpts/*.pth, DIR/runs/<run>",
    "backend": "fastgrok backend: reference (default) or fused (Triton kernels, CUDA)",
    "quiet": "no progress output",
}


# ---- parsing --------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{PROG}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The paper's parser: its flags, types and defaults (abbreviations allowed, as there)."""
    extras = "; ".join(f"--{k}: {v}" for k, v in EXTRA_FLAGS.items())
    parser = _Parser(prog=PROG, description="The paper's icl_grokking.py command line, trained by fastgrok. "
                     f"fastgrok additions: {extras}.")
    for f in PAPER_FLAGS:
        parser.add_argument(f"--{f.name}", type=f.type, default=argparse.SUPPRESS,
                            help=f"[{f.kind}] {f.fastgrok} (paper default: {f.default!r})")
    return parser


def _extras_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, add_help=False, allow_abbrev=False)
    p.add_argument("--out_dir", default=None)
    p.add_argument("--backend", default="reference")
    p.add_argument("--quiet", action="store_true")
    return p


def parse(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, set[str], argparse.Namespace]:
    """(paper flags with defaults filled in, the flags given, fastgrok's extras)."""
    extras, rest = _extras_parser().parse_known_args(argv)
    given = vars(build_parser().parse_args(rest))
    ns = argparse.Namespace(**{f.name: given.get(f.name, f.default) for f in PAPER_FLAGS})
    return ns, set(given), extras


# ---- flags → Config -------------------------------------------------------------------------------
def check_flags(ns: argparse.Namespace) -> None:
    """Refuse, by name, every flag value that selects something fastgrok does not have."""
    for f in PAPER_FLAGS:
        value = getattr(ns, f.name)
        if f.allowed is not None and not f.allowed(value):
            raise PaperFlagError(f"--{f.name}={value} is not supported by fastgrok ({f.fastgrok}); "
                                 f"the paper's default is {f.default!r}")
    if ns.base != ns.p:
        raise PaperFlagError(f"--base={ns.base} with --p={ns.p}: numbers written in another base take several "
                             "tokens each; fastgrok's tokens are the numbers 0 … p-1 (use --base equal to --p)")
    if ns.mixed_precision:
        if ns.dtype == "float16":
            raise PaperFlagError("--dtype=float16 with --mixed_precision=True: the paper scales the fp16 loss "
                                 "(GradScaler), fastgrok's autocast does not; use --dtype=bfloat16")
        if ns.dtype != "bfloat16":
            raise PaperFlagError(f"--dtype={ns.dtype} with --mixed_precision=True: use bfloat16 "
                                 "(or --mixed_precision=False for fp32)")
    if ns.n_ckpts < 0:
        raise PaperFlagError(f"--n_ckpts={ns.n_ckpts} must be ≥ 0")
    for name in ("bs", "eval_bs", "n_val_step"):  # they divide (eval_batches) before the Config checks them
        if getattr(ns, name) < 1:
            raise PaperFlagError(f"--{name}={getattr(ns, name)} must be ≥ 1")


def n_tasks(ns: argparse.Namespace) -> int:
    """Pre-training tasks: 4 · n_tasks_pl with the parallelogram construction, plus the random extras."""
    return (4 if ns.parallelogram else 1) * ns.n_tasks_pl + ns.n_tasks_rd


def n_ood(ns: argparse.Namespace) -> int:
    """The paper's o.o.d. task count: all unseen tasks, at most 256 and eval_bs, rounded down to a multiple of 8."""
    if ns.base < 2 or not 1 <= ns.n_var <= 64:  # refused by the Config; keep base**n_var small meanwhile
        return MAX_OOD
    n = min(MAX_OOD, ns.eval_bs, ns.base**ns.n_var - n_tasks(ns))
    return max(1, n - n % 8 if n >= 8 else n)


def to_config(ns: argparse.Namespace, backend: str = "reference", out_dir: str = "runs", run_name: str = "") -> Config:
    """The fastgrok Config that trains what the paper's flags describe (call check_flags first)."""
    task = dict(p=ns.p, n_var=ns.n_var, n_rd=ns.n_tasks_rd, alpha=ns.data_pct / 100.0, data_seed=ns.data_seed,
                n_shots=ns.n_point_per_row, max_ood=n_ood(ns), sampling="paper")
    if ns.parallelogram:
        task.update(selection="parallelogram", n_pl=ns.n_tasks_pl)
    else:
        task.update(selection="random", n_id=ns.n_tasks_pl)
    model = dict(depth=ns.n_layer, n_embd=ns.n_embd, n_head=ns.n_head, mlp=ns.act_name.lower(),
                 widen=ns.widen_factor, vocab_size=ns.base + PAPER_VOCAB_EXTRA, backend=backend)
    train = dict(batch_size=ns.bs, steps=ns.steps, warmup=ns.warmup_steps, lr=ns.lr, beta1=ns.beta1,
                 beta2=ns.beta2, weight_decay=ns.wd, grad_clip=ns.clip, eval_every=ns.steps_per_record,
                 eval_batches=max(1, math.ceil(ns.n_val_step * ns.eval_bs / ns.bs)), seed=ns.seed,
                 device=ns.device, dtype="bf16" if ns.mixed_precision else "fp32", out_dir=out_dir,
                 run_name=run_name)
    try:
        return Config.from_flat(task | model | train)
    except (ValueError, TypeError) as e:
        raise PaperFlagError(f"{e}{_flags_for(str(e))}") from None


_FIELD_FLAG = {"n_pl": "n_tasks_pl", "n_id": "n_tasks_pl", "n_rd": "n_tasks_rd", "alpha": "data_pct",
               "n_shots": "n_point_per_row", "depth": "n_layer", "mlp": "act_name", "widen": "widen_factor",
               "batch_size": "bs", "warmup": "warmup_steps", "weight_decay": "wd", "grad_clip": "clip",
               "eval_every": "steps_per_record", "eval_batches": "n_val_step"}


def _flags_for(message: str) -> str:
    """' (paper flags: --bs, …)' for the fastgrok field names a Config error mentions."""
    names = [f"--{flag}" for field, flag in _FIELD_FLAG.items() if re.search(rf"\b{field}\b", message)]
    return f" (paper flags: {', '.join(dict.fromkeys(names))})" if names else ""


# ---- the paper's outputs --------------------------------------------------------------------------
def run_stem(ns: argparse.Namespace) -> tuple[str, str]:
    """The paper's file name around the step: (head, tail); a log is head + tail, a checkpoint head_t{step} + tail.

    Its code multiplies n_tasks_pl by 4 (parallelogram) before building the name, so `pltask` holds n_id."""
    pl = 4 * ns.n_tasks_pl if ns.parallelogram else ns.n_tasks_pl
    head = (f"noembd{ns.dont_decay_embd}_parale{ns.parallelogram}_pltask{pl}_{ns.model_name}_p{ns.p}_base{ns.base}"
            f"_row{ns.n_point_per_row}_ntask{n_tasks(ns)}_nvar{ns.n_var}_dsplit{ns.split_data}_dfrac{ns.data_pct:.1f}"
            f"_{ns.act_name}_n{ns.n_embd}_h{ns.n_head}_d{ns.n_layer}_lctx{ns.block_size}_I{ns.seed}_dI{ns.data_seed}"
            f"_{ns.optim}_bs{ns.bs}")
    tail = f"_T{ns.steps:d}_Tw{ns.warmup_steps:d}_lr{ns.lr:0.2e}_wd{ns.wd:.2e}"
    return head, tail


def ckpt_steps(n_ckpts: int, warmup_steps: int, steps: int) -> list[int]:
    """The paper's --n_ckpts rule: 0 → none, 1 → the last step, n → n log-spaced steps from the warm-up's end
    (numpy.logspace cast to int, duplicates dropped), those a run reaches."""
    if n_ckpts == 0:
        return []
    if n_ckpts == 1:
        return [steps]
    import numpy as np
    with np.errstate(all="ignore"):  # --warmup_steps=0: log10(0); only the last step survives
        picked = np.logspace(np.log10(warmup_steps), np.log10(steps), num=n_ckpts, dtype=int)
    return sorted({int(s) for s in picked if 1 <= s <= steps})


def format_tab(rows: list[list[float]]) -> str:
    """pandas' DataFrame(rows, columns=TAB_COLUMNS).to_csv(sep='\\t'), which the paper's notebooks read."""
    lines = ["\t" + "\t".join(TAB_COLUMNS)]
    for i, row in enumerate(rows):
        lines.append("\t".join([str(i), str(int(row[0]))] + [repr(float(v)) for v in row[1:]]))
    return "\n".join(lines) + "\n"


class PaperOutputs:
    """The paper's log and checkpoints, written from train()'s hooks."""

    def __init__(self, ns: argparse.Namespace, root: Path, suffix: str = "") -> None:
        head, tail = run_stem(ns)
        tail += suffix  # another run's files hold the paper's names (they omit beta1, beta2, eps, …)
        self.tab_path = root / "data" / f"{head}{tail}.tab"
        self.ckpt_head, self.ckpt_tail, self.ckpt_dir = head, tail, root / "ckpts"
        self.every = ns.steps_per_record
        self.ckpt_steps = set(ckpt_steps(ns.n_ckpts, ns.warmup_steps, ns.steps))
        self.rows: list[list[float]] = []
        self.record: dict[str, Any] | None = None

    def ckpt_path(self, step: int) -> Path:
        return self.ckpt_dir / f"{self.ckpt_head}_t{step}{self.ckpt_tail}.pth"

    def on_eval(self, record: dict[str, Any], sess: Any) -> None:
        self.record = record

    def on_step(self, step: int, loss: Tensor, sess: Any) -> None:
        from .checkpoint import atomic_write_text, save_reference_checkpoint
        if step == 1 or step % self.every == 0:
            if self.record is not None and self.record["step"] == step:
                sets = self.record["sets"]
            else:  # the paper also records step 1, where fastgrok does not evaluate
                from .trainer import evaluate
                sets = evaluate(sess.fwd, sess.eval_srcs, sess.cfg, sess.ops.batchgen, sess.device, sess.amp)
            self.rows.append(tab_row(step, float(loss), sets))
            atomic_write_text(format_tab(self.rows), self.tab_path)
        if step in self.ckpt_steps:
            save_reference_checkpoint(sess.model, self.ckpt_path(step))


def tab_row(step: int, loss: float, sets: dict[str, dict[str, Any]]) -> list[float]:
    """One .tab row: the paper's `test` is fastgrok's id_test and its `ood_val` is ood_test; accuracies are
    means over tasks (as the paper averages its per-task figures)."""
    row: list[float] = [step, loss]
    for name, with_loss in (("train", False), ("id_test", True), ("ood_train", True), ("ood_test", True)):
        s = sets[name]
        row += ([s["loss"]] if with_loss else []) + [s["task_mean_acc"], s["task_mean_acc_last"]]
    return row


# ---- the entry point ------------------------------------------------------------------------------
def _note(ns: argparse.Namespace, given: set[str]) -> list[str]:
    return [f"{PROG}: note: --{f.name}={getattr(ns, f.name)} accepted, no effect here: {f.fastgrok}"
            for f in PAPER_FLAGS if f.kind == NOTED and f.name in given]


def _check_writable(folder: Path) -> None:
    """Refuse, before training starts and without writing anything, a folder for the log or the checkpoints
    that cannot be made or written (it would otherwise fail at the first record step)."""
    there = folder
    while not there.exists() and there != there.parent:
        there = there.parent
    if not there.is_dir():
        raise PaperFlagError(f"--out_dir: cannot create {folder}: {there} is a file, not a folder")
    if not os.access(there, os.W_OK | os.X_OK):
        raise PaperFlagError(f"--out_dir: cannot create {folder}: {there} is not writable")


def _free_suffix(ns: argparse.Namespace, root: Path) -> str:
    """'' when no file this run writes exists yet, else the first '-i' for which none does: the paper's names
    omit beta1, beta2, eps and more, so two different runs can share them, and neither may overwrite the
    other's .tab, .pth or run folder."""
    def taken(suffix: str) -> bool:
        out = PaperOutputs(ns, root, suffix)
        head, tail = run_stem(ns)
        run_dir = root / "runs" / f"{head}{tail}{suffix}"
        return (out.tab_path.exists() or any(out.ckpt_path(s).exists() for s in out.ckpt_steps)
                or (run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir()))))
    i = 0
    while taken(f"-{i}" if i else ""):
        i += 1
    return f"-{i}" if i else ""


def main(argv: Sequence[str] | None = None) -> int:
    world = os.environ.get("WORLD_SIZE", "1")
    if world.strip() not in ("", "1"):
        print(f"{PROG}: error: launched as {world} processes (WORLD_SIZE={world}); fastgrok-paper runs one "
              "process for now: use torchrun --nproc_per_node=1 (one GPU)", file=sys.stderr)
        return 2
    try:
        ns, given, extras = parse(argv)
    except SystemExit as e:  # a usage error (one line, already printed) or --help
        return int(e.code or 0)
    from .checkpoint import CheckpointError
    from .trainer import TrainingError, train
    try:
        check_flags(ns)
        if extras.out_dir is not None and not extras.out_dir.strip():
            raise PaperFlagError(f"--out_dir={extras.out_dir!r} names no folder (leave it out for `..`)")
        root = Path(extras.out_dir) if extras.out_dir is not None else Path("..")
        head, tail = run_stem(ns)
        suffix = _free_suffix(ns, root)
        run_dir = root / "runs" / f"{head}{tail}{suffix}"
        cfg = to_config(ns, backend=extras.backend, out_dir=str(run_dir.parent), run_name=run_dir.name)
        for line in _note(ns, given):
            print(line)
        if suffix:
            print(f"{PROG}: note: files of another run have this run's names in {root} (the paper's names omit "
                  f"beta1, beta2, eps, …); this run's end in {suffix}, nothing is overwritten")
        out = PaperOutputs(ns, root, suffix)
        for folder in (out.tab_path.parent, *([out.ckpt_dir] if out.ckpt_steps else [])):
            _check_writable(folder)
        print(f"{PROG}: log {out.tab_path}" + (f"; checkpoints at steps {sorted(out.ckpt_steps)} in {out.ckpt_dir}"
                                              if out.ckpt_steps else "; no checkpoints (--n_ckpts=0)"))
        train(cfg, quiet=extras.quiet, on_eval=out.on_eval, on_step=out.on_step)
    except (ValueError, TypeError, TrainingError, CheckpointError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # one not foreseen above: its reason and path, on one line
        print(f"{PROG}: error: {e.strerror or e}" + (f" ({e.filename})" if e.filename else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"{PROG}: {e or 'interrupted'}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
