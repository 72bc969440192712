"""The training loop: batches on the device, z-position loss, AdamW, warm-up + cosine, evaluation,
atomic checkpoints and exact resume (SPEC "Optimisation", "Measurements")."""
from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from .backends import check_runnable, resolve_ops
from .checkpoint import CheckpointError, atomic_save, atomic_write_text, load_file
from .config import Config
from .data import SPLITS, BatchSource, split_source
from .envinfo import environment, peak_flops, resolve_device
from .metrics import SetAccumulator, classify_phase, z_logits_targets, z_loss
from .model import GPT, swiglu_hidden
from .tasks import Tasks, make_tasks

LOG_EVERY = 50  # steps between progress updates (one host sync each)


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss); the message names the step and the last good checkpoint."""


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]]       # one record per evaluation (the lines of metrics.jsonl)
    summary: dict[str, Any]
    losses: list[float] = field(default_factory=list)  # training loss of every step run by this call


# ---- pieces ----------------------------------------------------------------------------------------
def lr_at(step: int, cfg: Config) -> float:
    """Learning rate of optimiser step `step` (0-based): linear warm-up from init_lr_ratio·lr to lr over
    `warmup` steps, then cosine to min_lr_ratio·lr at the last step."""
    t = cfg.train
    if step < t.warmup:
        return t.lr * (t.init_lr_ratio + (1.0 - t.init_lr_ratio) * step / t.warmup)
    span = max(1, t.steps - 1 - t.warmup)
    progress = min(1.0, (step - t.warmup) / span)
    return t.lr * (t.min_lr_ratio + (1.0 - t.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, cfg: Config, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; weight decay on every parameter with ≥ 2 dims (tied embedding once), none on LayerNorm."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [dict(params=decay, weight_decay=cfg.train.weight_decay), dict(params=no_decay, weight_decay=0.0)]
    t = cfg.train
    kw = dict(lr=lr_at(0, cfg), betas=(t.beta1, t.beta2), eps=t.eps)
    if device.type == "cuda":
        kw["fused"] = True
    return torch.optim.AdamW(groups, **kw)


def autocast_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    d = cfg.train.dtype
    if d == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[d]


def use_compile(cfg: Config, device: torch.device) -> bool:
    return cfg.train.compile == "on" or (cfg.train.compile == "auto" and device.type == "cuda")


def train_flops_per_step(cfg: Config) -> float:
    """6·N·tokens (N without the embedding, which is a lookup; the tied head is counted only where
    logits are taken) + attention 12·depth·C·T² ·B / 2 (causal) — forward and backward."""
    m, t = cfg.model, cfg.task
    T = t.seq_len - 1
    B = cfg.train.batch_size
    C = m.n_embd
    mlp = 3 * C * swiglu_hidden(C, m.widen) if m.mlp == "swiglu" else 2 * m.widen * C * C
    block = 4 * C * C + mlp
    dense = 6 * m.depth * block * B * T + 6 * C * m.vocab_size * B * t.n_shots
    attn = 6 * m.depth * C * T * T * B  # 12·L·C·T² halved for causality
    return float(dense + attn)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(model: torch.nn.Module, sources: dict[str, BatchSource], cfg: Config, batchgen: Callable,
             device: torch.device, amp: torch.dtype | None) -> dict[str, dict[str, Any]]:
    """Metrics on each set from cfg.eval_batches batches (more if needed to reach every task)."""
    out = {}
    for name, src in sources.items():
        acc = SetAccumulator(src.n_tasks, src.n_shots, device)
        n_batches = max(cfg.train.eval_batches, math.ceil(src.n_tasks / src.batch_size))
        for i in range(n_batches):
            batch = batchgen(src, i)
            with _autocast(device, amp):
                logits, targets = z_logits_targets(model, batch, cfg.task.n_var)
            acc.add(logits, targets, src.row_tasks(i))
        out[name] = acc.result()
    return out


@dataclass
class Session:
    """Everything a training step needs, built once from a config."""

    cfg: Config
    device: torch.device
    amp: torch.dtype | None
    tasks: Tasks
    ops: Any
    train_src: BatchSource
    eval_srcs: dict[str, BatchSource]
    model: GPT
    fwd: torch.nn.Module          # the model, compiled when the config asks for it
    opt: torch.optim.Optimizer


def build(cfg: Config) -> Session:
    """Tasks, batch sources, model (seeded by cfg.seed), optimizer and (optionally) the compiled model."""
    device = resolve_device(cfg.train.device)
    amp = autocast_dtype(cfg, device)
    if amp is torch.float16 and device.type == "cpu":
        raise ValueError("dtype='fp16' autocast is for CUDA; use fp32 or bf16 on the CPU")
    check_runnable(cfg.model, device)
    tasks = make_tasks(cfg.task)
    ops = resolve_ops(cfg.model)
    train_src = split_source(cfg, tasks, "train", device, training=True)
    eval_srcs = {s: split_source(cfg, tasks, s, device) for s in SPLITS}
    torch.manual_seed(cfg.train.seed)
    model = GPT(cfg.model, ops).to(device)
    opt = make_optimizer(model, cfg, device)
    fwd = torch.compile(model) if use_compile(cfg, device) else model
    return Session(cfg, device, amp, tasks, ops, train_src, eval_srcs, model, fwd, opt)


def train_step(s: Session, step: int) -> Tensor:
    """One optimiser step on training batch `step`; returns the loss as a device tensor (no sync)."""
    for g in s.opt.param_groups:
        g["lr"] = lr_at(step, s.cfg)
    batch = s.ops.batchgen(s.train_src, step)
    with _autocast(s.device, s.amp):
        loss = z_loss(s.fwd, batch, s.cfg.task.n_var)
    loss.backward()
    if s.cfg.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(s.model.parameters(), s.cfg.train.grad_clip)
    s.opt.step()
    s.opt.zero_grad(set_to_none=True)
    return loss.detach()


def default_run_name(cfg: Config) -> str:
    t, m = cfg.task, cfg.model
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}_p{t.p}_nid{t.n_pretrain}_a{t.alpha:g}_d{m.depth}_w{m.n_embd}_s{cfg.train.seed}"


def _new_run_dir(cfg: Config) -> Path:
    root = Path(cfg.train.out_dir)
    name = cfg.train.run_name or default_run_name(cfg)
    run_dir = root / name
    if run_dir.exists() and any(run_dir.iterdir()):
        if cfg.train.run_name:
            raise ValueError(f"run folder {str(run_dir)!r} already holds a run: resume it with --resume, "
                             "or pick another run_name")
        i = 1
        while (root / f"{name}-{i}").exists():
            i += 1
        run_dir = root / f"{name}-{i}"
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def load_run(run_dir: str | Path) -> tuple[Config, dict[str, Any]]:
    """The config and last checkpoint of a run folder, with clear errors for what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder {str(run_dir)!r} does not exist")
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{str(run_dir)!r} is not a fastgrok run folder (no config.json)")
    try:
        cfg = Config.from_dict(json.loads(cfg_path.read_text()))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path} is corrupt: {e}") from None
    ckpt = load_file(run_dir / "last.pt")
    needed = ("model", "optimizer", "step")
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in needed):
        raise CheckpointError(f"{run_dir / 'last.pt'} is not a fastgrok training checkpoint")
    return cfg, ckpt


# ---- output --------------------------------------------------------------------------------------
class _Reporter:
    """A rich progress bar on a terminal, plain lines otherwise."""

    def __init__(self, total: int, start: int, quiet: bool) -> None:
        from rich.console import Console
        self.console = Console(highlight=False)
        self.quiet = quiet
        self.progress = None
        if not quiet and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
            self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console)
            self.task = self.progress.add_task("train", total=total, completed=start, info="")
            self.progress.start()

    def line(self, text: str) -> None:
        if self.quiet:
            return
        if self.progress is not None:
            self.progress.console.print(text)
        else:
            print(text, flush=True)

    def update(self, step: int, info: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


# ---- the loop ------------------------------------------------------------------------------------
def train(cfg: Config | None = None, *, resume: str | Path | None = None, stop_at: int | None = None,
          quiet: bool = False, stop_when: Callable[[list[dict[str, Any]]], bool] | None = None) -> TrainResult:
    """Train (or resume) a run; returns its evaluation history, summary and folder.

    `stop_at` ends this call after that optimiser step (with a checkpoint), as a crash would, so the
    run can be resumed; the trajectory is unchanged. `stop_when(history)`, asked after each evaluation,
    ends the run there when it returns True (a sweep's settled run): the summary says `stopped_early`.
    """
    ckpt: dict[str, Any] | None = None
    if resume is not None:
        saved, ckpt = load_run(resume)
        if cfg is not None and cfg != saved:
            raise ValueError("resume continues the saved config; pass no other config with it")
        cfg, run_dir = saved, Path(resume)
    elif cfg is None:
        cfg = Config.preset("quick")
    if stop_at is not None and stop_at < 1:
        raise ValueError(f"stop_at={stop_at} must be ≥ 1")

    t0 = time.perf_counter()
    sess = build(cfg)
    device, amp, ops, model, opt = sess.device, sess.amp, sess.ops, sess.model, sess.opt
    start, best = 0, {"step": None, "ood_test_acc": -1.0}
    if ckpt is not None:
        start, best = int(ckpt["step"]), ckpt.get("best", best)
        if stop_at is not None and stop_at <= start:
            raise ValueError(f"stop_at={stop_at} is not after the checkpoint's step {start}")
        if start >= cfg.train.steps:
            raise ValueError(f"the run in {run_dir} already finished ({start}/{cfg.train.steps} steps)")
        try:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{run_dir / 'last.pt'} does not fit the saved config: "
                                  f"{str(e).splitlines()[0][:200]}") from None
    else:
        run_dir = _new_run_dir(cfg)
        atomic_write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", run_dir / "config.json")
    env = environment(device) | {"argv": sys.argv, "backends": dict(ops.names), "compile": use_compile(cfg, device),
                                 "autocast": str(amp) if amp else "fp32", "params": model.num_params()}
    atomic_write_text(json.dumps(env, indent=2) + "\n", run_dir / ("env.json" if ckpt is None else f"env-resume-{start}.json"))
    metrics_path = run_dir / "metrics.jsonl"
    history = _read_history(metrics_path, upto=start)
    atomic_write_text("".join(json.dumps(r) + "\n" for r in history), metrics_path)
    startup_s = time.perf_counter() - t0

    end = cfg.train.steps if stop_at is None else min(stop_at, cfg.train.steps)
    rep = _Reporter(cfg.train.steps, start, quiet)
    rep.line(f"fastgrok run {run_dir}")
    rep.line(f"config {json.dumps(cfg.to_flat())}")
    rep.line(f"env {env['device']} | torch {env['torch']} | triton {env['triton']} | params {env['params']:,} | "
             f"backends {dict(ops.names)} | compile {env['compile']} | autocast {env['autocast']} | "
             f"start-up {startup_s:.2f}s" + (f" | resumed at step {start}" if ckpt else ""))

    tokens_per_step = cfg.train.batch_size * (cfg.task.seq_len - 1)
    flops = train_flops_per_step(cfg)
    peak = peak_flops(device)
    window = torch.zeros(LOG_EVERY, device=device)  # per-step losses, fetched every LOG_EVERY steps
    all_losses: list[float] = []
    interval_losses: list[float] = list(ckpt.get("interval_losses", [])) if ckpt else []
    step, stopped_early = start, False
    t_last, s_last = time.perf_counter(), start
    loop_t0 = time.perf_counter()

    def save_last(path_step: int) -> None:
        atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": path_step, "best": best,
                     "interval_losses": interval_losses, "config": cfg.to_dict()}, run_dir / "last.pt")

    flushed = start

    def flush(upto: int) -> None:
        """Fetch the losses of steps flushed … upto-1 (one sync); stop on a non-finite one."""
        nonlocal flushed
        vals_all = window.tolist()
        vals = [vals_all[s % LOG_EVERY] for s in range(flushed, upto)]
        for i, v in enumerate(vals):
            if not math.isfinite(v):
                bad = flushed + i + 1
                last_ok = _last_checkpoint_step(run_dir)
                where = (f"the last good checkpoint (step {last_ok}) is {run_dir / 'last.pt'}"
                         if last_ok is not None else "no checkpoint was written before it")
                raise TrainingError(f"loss is {v} at step {bad}: training stopped; {where}")
        flushed = upto
        all_losses.extend(vals)
        interval_losses.extend(vals)

    # Ctrl-C finishes the current step, then saves and stops (a second Ctrl-C stops at once).
    asked = {"stop": False}

    def on_sigint(signum, frame):
        if asked["stop"]:
            raise KeyboardInterrupt
        asked["stop"] = True

    main_thread = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGINT, on_sigint) if main_thread else None
    try:
        while step < end:
            loss = train_step(sess, step)
            window[step % LOG_EVERY] = loss
            step += 1
            is_eval = step % cfg.train.eval_every == 0 or step == cfg.train.steps
            if step % LOG_EVERY == 0 or is_eval or step == end:
                flush(step)
                now = time.perf_counter()
                dt = (now - t_last) / max(1, step - s_last)
                t_last, s_last = now, step
                recent = sum(all_losses[-LOG_EVERY:]) / max(1, len(all_losses[-LOG_EVERY:]))
                info = f"loss {recent:.4f} | {dt * 1e3:.1f} ms/step | {_fmt_rate(tokens_per_step / dt)} tok/s"
                if peak:
                    info += f" | {100 * flops / dt / peak:.0f}% MFU"
                rep.update(step, info)
            if is_eval:
                rec = _evaluate_and_save(model, sess.fwd, sess.eval_srcs, cfg, ops, device, amp, step, interval_losses,
                                         best, run_dir, loop_t0, start, tokens_per_step)
                interval_losses = []
                history.append(rec)
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                save_last(step)
                s = rec["sets"]
                msg = (f"step {step} | loss {rec['train_loss']:.4f} | train {s['train']['acc']:.3f} | "
                       f"id {s['id_test']['acc']:.3f} | ood {s['ood_test']['acc']:.3f} | {info.split(' | ', 1)[1]}")
                rep.line(msg)
                if stop_when is not None and stop_when(history):
                    stopped_early = True
                    break
            if asked["stop"]:
                raise KeyboardInterrupt
        if step == end and step % cfg.train.eval_every and step != cfg.train.steps:
            save_last(step)  # stop_at between evaluations: keep the exact state for --resume
    except KeyboardInterrupt:
        flush(step)
        save_last(step)
        rep.close()
        raise KeyboardInterrupt(f"interrupted at step {step}; saved {run_dir / 'last.pt'}: "
                                f"resume with `fastgrok train --resume {run_dir}`") from None
    finally:
        rep.close()
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)

    elapsed = time.perf_counter() - loop_t0
    summary = _summary(cfg, history, best, step, start, elapsed, startup_s, tokens_per_step, flops, peak, run_dir)
    summary["stopped_early"] = stopped_early
    if step == cfg.train.steps or stopped_early:
        atomic_write_text(json.dumps(summary, indent=2) + "\n", run_dir / "summary.json")
    if not quiet:
        print_summary(summary)
    return TrainResult(run_dir=run_dir, history=history, summary=summary, losses=all_losses)


def _evaluate_and_save(model, fwd, eval_srcs, cfg, ops, device, amp, step, interval_losses, best, run_dir,
                       loop_t0, start, tokens_per_step) -> dict[str, Any]:
    sets = evaluate(fwd, eval_srcs, cfg, ops.batchgen, device, amp)
    phase, solved = classify_phase(sets, cfg.train.phase_threshold)
    rec = {
        "step": step,
        "tokens": step * tokens_per_step,
        "lr": lr_at(step - 1, cfg),
        "train_loss": sum(interval_losses) / max(1, len(interval_losses)),
        "time_s": round(time.perf_counter() - loop_t0, 3),
        "phase": phase,
        "solved": solved,
        "sets": sets,
    }
    if sets["ood_test"]["acc"] > best["ood_test_acc"]:
        best.update(step=step, ood_test_acc=sets["ood_test"]["acc"])
        atomic_save({"model": model.state_dict(), "step": step, "metrics": sets, "config": cfg.to_dict()},
                    run_dir / "best.pt")
    return rec


def _read_history(path: Path, upto: int) -> list[dict[str, Any]]:
    """Evaluation records of a run up to a step (records past a resumed checkpoint are dropped)."""
    if not path.is_file():
        return []
    out = []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise CheckpointError(f"{path} line {i + 1} is corrupt") from None
        if rec.get("step", 0) <= upto:
            out.append(rec)
    return out


def _last_checkpoint_step(run_dir: Path) -> int | None:
    path = run_dir / "last.pt"
    if not path.is_file():
        return None
    try:
        return int(load_file(path)["step"])
    except Exception:
        return None


def _summary(cfg, history, best, step, start, elapsed, startup_s, tokens_per_step, flops, peak, run_dir):
    steps_run = step - start
    last = history[-1] if history else None
    rate = steps_run / elapsed if elapsed > 0 else float("nan")
    summary = {
        "run_dir": str(run_dir),
        "steps": step,
        "steps_total": cfg.train.steps,
        "finished": step == cfg.train.steps,
        "wall_s": round(elapsed, 2),
        "startup_s": round(startup_s, 3),
        "steps_per_s": round(rate, 3),
        "tokens_per_s": round(rate * tokens_per_step, 1),
        "mfu": round(flops * rate / peak, 4) if peak else None,
        "best_ood_step": best["step"],
        "best_ood_test_acc": best["ood_test_acc"] if best["step"] is not None else None,
        "phase": last["phase"] if last else None,
        "phase_threshold": cfg.train.phase_threshold,
        "final": {k: {m: v[m] for m in ("loss", "acc", "acc_last", "task_mean_acc")} for k, v in last["sets"].items()}
        if last else None,
        "final_kshot_ood_test": last["sets"]["ood_test"]["kshot"] if last else None,
    }
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    """The end-of-run table."""
    from rich.console import Console
    from rich.table import Table
    console = Console(highlight=False)
    table = Table(title=f"fastgrok — {summary['run_dir']}")
    for col in ("set", "loss", "acc (all shots)", "acc (last shot)", "solved"):
        table.add_column(col, justify="left" if col == "set" else "right")
    if summary["final"]:
        thr = summary["phase_threshold"]
        for name, m in summary["final"].items():
            table.add_row(name, f"{m['loss']:.4f}", f"{m['acc']:.3f}", f"{m['acc_last']:.3f}",
                          "✓" if m["acc_last"] >= thr else "✗")
    console.print(table)
    best = (f"best o.o.d. test acc {summary['best_ood_test_acc']:.3f} at step {summary['best_ood_step']}"
            if summary["best_ood_step"] is not None else "no evaluation yet")
    console.print(f"phase: {summary['phase']} (threshold {summary['phase_threshold']}) | {best} | "
                  f"{summary['steps']}/{summary['steps_total']} steps in {summary['wall_s']:.1f}s "
                  f"({summary['steps_per_s']:.2f} steps/s, {_fmt_rate(summary['tokens_per_s'])} tok/s)")
