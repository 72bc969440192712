"""The trainer: batches on the device, z-position loss, AdamW, warm-up + cosine, evaluation,
atomic checkpoints and exact resume (SPEC "Optimisation", "Measurements")."""
from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import torch
from torch import Tensor

from . import distributed, runfolder, tracking
from .backends import check_runnable, resolve_ops
from .checkpoint import CheckpointError
from .config import DEFAULT_PRESET, Config, nearest_preset
from .data import SPLITS, BatchSource, split_source
from .envinfo import environment, peak_flops
from .memory import check_fits
from .metrics import SetAccumulator, classify_phase, z_logits_targets, z_loss
from .model import GPT, swiglu_hidden
from .runfolder import RunFolder
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


def _flops_terms(cfg: Config) -> tuple[int, int, int, int, int, int, int]:
    """(B, T, S, C, V, qkv weights, the block's other weights) of a config."""
    m, t = cfg.model, cfg.task
    C = m.n_embd
    mlp = 3 * C * swiglu_hidden(C, m.widen) if m.mlp == "swiglu" else 2 * m.widen * C * C
    return cfg.train.batch_size, t.seq_len - 1, t.n_shots, C, m.vocab_size, 3 * C * C, C * C + mlp


def full_model_flops_per_step(cfg: Config) -> float:
    """FLOPs of the whole model at every position: 6·N·tokens (N without the embedding, a lookup; the tied
    head only where logits are taken) + attention 12·depth·C·T²·B / 2 (causal), forward and backward.
    More than a step runs: the last block skips the non-loss positions (see train_flops_per_step)."""
    B, T, S, C, V, qkv, rest = _flops_terms(cfg)
    depth = cfg.model.depth
    return float(6 * depth * (qkv + rest) * B * T + 6 * C * V * B * S + 6 * depth * C * T * T * B)


def train_flops_per_step(cfg: Config) -> float:
    """FLOPs a training step executes (forward and backward), what MFU is reported from.

    As full_model_flops_per_step, except the last block: its q, k, v projection runs at all T positions,
    but its attention (S queries, the query at position t against t + 1 keys), output projection and MLP
    only at the S positions whose logits the loss takes (GPT.forward's `positions`)."""
    return float(sum(executed_flops(cfg)))


def executed_flops(cfg: Config) -> tuple[int, int]:
    """(matmul FLOPs of the projections, MLPs and head; attention's QKᵀ and PV) a training step executes."""
    B, T, S, C, V, qkv, rest = _flops_terms(cfg)
    depth, n_var = cfg.model.depth, cfg.task.n_var
    keys = S * n_var + (n_var + 1) * S * (S - 1) // 2  # Σ (t + 1) over the query positions n_var − 1 + j·(n_var + 1)
    dense = 6 * B * ((depth - 1) * (qkv + rest) * T + qkv * T + rest * S) + 6 * C * V * B * S
    attn = 6 * (depth - 1) * C * T * T * B + 12 * C * keys * B
    return dense, attn


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(model: torch.nn.Module, sources: dict[str, BatchSource], cfg: Config, batchgen: Callable,
             device: torch.device, amp: torch.dtype | None,
             dist: distributed.Dist = distributed.SINGLE) -> dict[str, dict[str, Any]]:
    """Metrics on each set from cfg.eval_batches batches (more if needed to reach every task); under DDP each
    rank takes its rows of every batch and the sums are added over the ranks."""
    out = {}
    for name, src in sources.items():
        acc = SetAccumulator(src.n_tasks, src.n_shots, device)
        n_batches = max(cfg.train.eval_batches, math.ceil(src.n_tasks / src.batch_size))
        for i in range(n_batches):
            batch = dist.batch(batchgen, src, i)  # DDP: this rank's rows
            with _autocast(device, amp):
                logits, targets = z_logits_targets(model, batch, cfg.task.n_var)
            acc.add(logits, targets, dist.shard(src.row_tasks(i)))
        dist.all_reduce_sum_(acc.loss, acc.correct, acc.count)  # DDP: every rank's rows
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
    fwd: torch.nn.Module          # the model, compiled when the config asks for it (DDP: then wrapped)
    opt: torch.optim.Optimizer
    dist: distributed.Dist = distributed.SINGLE  # DDP: this rank's place in the run


def build(cfg: Config, dist: distributed.Dist = distributed.SINGLE) -> Session:
    """Tasks, batch sources, model (seeded by cfg.seed), optimizer and (optionally) the compiled model;
    a config whose memory estimate exceeds the device is refused before anything is allocated."""
    device = dist.device(cfg.train.device)  # DDP: cuda:LOCAL_RANK
    dist.check_batch(cfg.train.batch_size)
    check_fits(cfg, device, world_size=dist.world_size,  # DDP: this rank's rows; CPU ranks share the host's RAM
               sharing=dist.local_world_size if device.type == "cpu" else 1)
    amp = autocast_dtype(cfg, device)
    if amp is torch.float16 and device.type == "cpu":
        raise ValueError("dtype='fp16' autocast is for CUDA; use fp32 or bf16 on the CPU")
    check_runnable(cfg.model, device)
    tasks = make_tasks(cfg.task)
    ops = resolve_ops(cfg.model, device=device)  # the fused backend routed for this device (backends.ROUTES)
    train_src = split_source(cfg, tasks, "train", device, training=True)
    eval_srcs = {s: split_source(cfg, tasks, s, device) for s in SPLITS}
    torch.manual_seed(cfg.train.seed)
    model = GPT(cfg.model, ops).to(device)
    opt = make_optimizer(model, cfg, device)
    fwd = torch.compile(model) if use_compile(cfg, device) else model
    fwd = dist.wrap(fwd, device)  # DDP: compile, then wrap
    return Session(cfg, device, amp, tasks, ops, train_src, eval_srcs, model, fwd, opt, dist)


def train_step(s: Session, step: int, interruptible: Callable[[], ContextManager] = contextlib.nullcontext) -> Tensor:
    """One optimiser step on training batch `step`; returns the loss as a device tensor (no sync).
    A KeyboardInterrupt may stop it only inside `interruptible()`: before any state is updated."""
    for g in s.opt.param_groups:
        g["lr"] = lr_at(step, s.cfg)
    batch = s.dist.batch(s.ops.batchgen, s.train_src, step)  # DDP: this rank's rows of the global batch
    with interruptible():
        with _autocast(s.device, s.amp):
            loss = z_loss(s.fwd, batch, s.cfg.task.n_var)
        loss.backward()
    if s.cfg.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(s.model.parameters(), s.cfg.train.grad_clip)
    s.opt.step()
    s.opt.zero_grad(set_to_none=True)
    return loss.detach()


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


def _human(v: Any) -> str:
    """A config value or a count as a person reads it: 200,000 steps, 1.5e-04, 12.6M params."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return str(v)
    if isinstance(v, int):
        return f"{v / 1e6:.2f}M" if v >= 10**6 else f"{v:,}"
    return f"{v:g}"


def _fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


# ---- the loop ------------------------------------------------------------------------------------
def train(cfg: Config | None = None, *, resume: str | Path | None = None, stop_at: int | None = None,
          quiet: bool = False, on_eval: Callable[[dict[str, Any], Session], None] | None = None,
          on_step: Callable[[int, Tensor, Session], None] | None = None,
          stop_when: Callable[[list[dict[str, Any]]], bool] | None = None,
          track: dict[str, Any] | None = None) -> TrainResult:
    """Train (or resume) a run; returns its evaluation history, summary and folder.

    `stop_at` ends this call after that optimiser step (with a checkpoint), as a crash would, so the
    run can be resumed; the trajectory is unchanged. A run folder is owned by one process at a time
    (runfolder.RunFolderBusy for a second); a run that fails before its first step leaves no folder.
    Hooks (for other output formats, e.g. fastgrok.paper): `on_eval(record, session)` runs after each
    evaluation record is appended to metrics.jsonl; `on_step(step, loss, session)` after every optimiser
    step and its evaluation, with `step` the steps done and `loss` that step's loss as a device tensor
    (reading it syncs). Both may read `session.model`; neither should change it.
    `stop_when(history)`, asked after each evaluation, ends the run there when it returns True (a sweep's
    settled run): the summary says `stopped_early`.
    Under torchrun (inside `distributed.launched()`) rank 0 alone owns (locks) and writes the run folder and
    prints; the other ranks get the config, checkpoint and history from it. The hooks run on every rank
    (`session.dist.is_main` tells rank 0); `stop_when` is asked on rank 0, whose answer every rank follows.
    Ctrl-C ends every rank at once, keeping the last checkpoint.
    `cfg.log` names experiment trackers (fastgrok/tracking.py; rank 0 logs); `track` adds their context: a
    sweep's {"group": sweep name, "point": {field: value}}.
    """
    _check_train_args(cfg, resume, stop_at, quiet=quiet, on_eval=on_eval, on_step=on_step, stop_when=stop_when)
    dist = distributed.current()  # DDP: torchrun's rank and world size (one process: SINGLE)
    quiet = quiet or not dist.is_main  # DDP: rank 0 prints
    t0 = time.perf_counter()
    run: RunFolder | _RankRun | None = None
    loop: _Loop | None = None
    try:
        ckpt: dict[str, Any] | None = None
        if resume is not None:
            def open_main() -> tuple[Path, Config, dict[str, Any] | None]:  # DDP: rank 0 locks and reads
                nonlocal run
                run = runfolder.open_run(resume)
                return run.path, run.cfg, run.checkpoint()  # no checkpoint yet: the run starts again from step 0
            path, saved, ckpt = dist.on_main(open_main)  # DDP: every rank gets the config and checkpoint
            if run is None:
                run = _RankRun(path, saved)
            if cfg is not None and cfg != saved:
                raise ValueError("resume continues the saved config; pass no other config with it")
            cfg = saved
        elif cfg is None:
            cfg = Config.preset(DEFAULT_PRESET)
        start = int(ckpt["step"]) if ckpt is not None else 0
        if run is not None:
            if stop_at is not None and stop_at <= start:
                raise ValueError(f"stop_at={stop_at} is not after the checkpoint's step {start}")
            if start >= cfg.train.steps:
                raise ValueError(f"the run in {run.path} already finished ({start}/{cfg.train.steps} steps)")
        tracking.check(cfg)  # a tracker's missing package: one line, before anything is built
        sess = build(cfg, dist)
        if ckpt is not None:
            try:
                sess.model.load_state_dict(ckpt["model"])
                sess.opt.load_state_dict(ckpt["optimizer"])
            except (RuntimeError, ValueError, KeyError) as e:
                raise CheckpointError(f"{run.path / runfolder.LAST} does not fit the saved config: "
                                      f"{str(e).splitlines()[0][:200]}") from None
        if run is None:
            def create_main() -> tuple[Path, list[str]]:  # DDP: rank 0 makes, locks and owns the folder
                nonlocal run
                run = runfolder.create(cfg)
                return run.path, run.stale_removed
            path, stale = dist.on_main(create_main)  # DDP: every rank learns its name
            if run is None:
                run = _RankRun(path, cfg, created=True, stale_removed=stale)

        loop = _Loop(sess, run, ckpt, start, stop_at, quiet, t0, _Hooks(on_eval, on_step, stop_when), track)
        loop.announce()
        loop.run_steps()
        result = loop.finish()
        loop.trackers.close(ok=True)
        return result
    except BaseException as e:
        if loop is not None:
            with contextlib.suppress(Exception):  # a tracker's own failure must not hide this error
                loop.trackers.close(ok=False)
        started = loop is not None and loop.started
        if not started and run is not None and run.created:
            run.discard()
        if isinstance(e, KeyboardInterrupt) and not started:
            raise KeyboardInterrupt("interrupted before training started") from None
        raise
    finally:
        if run is not None:
            run.close()


@dataclass
class _RankRun:
    """The run folder as a rank other than 0 sees it under DDP: its name, no lock, no writes (rank 0 owns it)."""

    path: Path
    cfg: Config
    created: bool = False
    stale_removed: list[str] = field(default_factory=list)

    def write_json(self, name: str, obj: Any) -> None: ...
    def rewrite_history(self, records: list[dict[str, Any]]) -> None: ...
    def append(self, record: dict[str, Any]) -> None: ...
    def save_last(self, state: dict[str, Any]) -> None: ...
    def save_best(self, state: dict[str, Any]) -> None: ...
    def close(self) -> None: ...
    def discard(self) -> None: ...


def _check_train_args(cfg: Any, resume: Any, stop_at: Any, **named: Any) -> None:
    """The arguments of train(), each named in its error; `named` holds quiet and the hooks."""
    if not isinstance(named.get("quiet", False), bool):
        raise TypeError(f"quiet must be True or False, got {type(named['quiet']).__name__} {named['quiet']!r:.60}")
    for hook in ("on_eval", "on_step", "stop_when"):
        if named.get(hook) is not None and not callable(named[hook]):
            raise TypeError(f"{hook} must be a function (or None), got {type(named[hook]).__name__} "
                            f"{named[hook]!r:.60}")
    if cfg is not None and not isinstance(cfg, Config):
        raise TypeError(f"train(cfg) takes a Config (e.g. Config.preset('tiny')), got {type(cfg).__name__} "
                        f"{cfg!r:.60}")
    if resume is not None and not isinstance(resume, (str, os.PathLike)):
        raise TypeError(f"resume must be the path of a run folder, got {type(resume).__name__} {resume!r:.60}")
    if isinstance(resume, str) and not resume.strip():
        raise ValueError("resume='' names no run folder: give the folder of the run to continue")
    if stop_at is not None:
        if not isinstance(stop_at, int) or isinstance(stop_at, bool):
            raise TypeError(f"stop_at must be an int step, got {type(stop_at).__name__} {stop_at!r:.60}")
        if stop_at < 1:
            raise ValueError(f"stop_at={stop_at} must be ≥ 1")


class _Interrupts:
    """Ctrl-C during the loop. The first asks to stop after the current step (save, then exit; under DDP
    after the step where the ranks next agree on it); a second stops at once, but only inside
    `interruptible()` — the forward/backward pass and the evaluation, which change no saved state — so a
    parameter update, a record or a checkpoint is never cut half-way (an evaluation cut short is redone
    on resume)."""

    def __init__(self) -> None:
        self.count = 0
        self.open = False

    def handler(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count >= 2 and self.open:
            self.open = False
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        if self.count >= 2:
            raise KeyboardInterrupt
        self.open = True
        try:
            yield
        finally:
            self.open = False


def _is_eval_step(step: int, cfg: Config) -> bool:
    return step % cfg.train.eval_every == 0 or step == cfg.train.steps


class _Loop:
    """One call's training from `start` to `end`: steps, loss flushes, evaluations with their records and
    checkpoints, Ctrl-C, and the summary. Each method keeps one of those; `run` strings them together."""

    def __init__(self, sess: Session, run: RunFolder | _RankRun, ckpt: dict[str, Any] | None, start: int,
                 stop_at: int | None, quiet: bool, t0: float, hooks: _Hooks,
                 track: dict[str, Any] | None = None) -> None:
        self.sess, self.run, self.cfg, self.dist, self.hooks = sess, run, sess.cfg, sess.dist, hooks
        self.quiet, self.ckpt, self.start = quiet, ckpt, start
        self.best = dict(ckpt.get("best", {})) if ckpt is not None else {}
        self.best = self.best or {"step": None, "ood_test_acc": -1.0}
        device, amp, model = sess.device, sess.amp, sess.model
        self.env = environment(device) | {"argv": sys.argv, "backends": dict(sess.ops.names),
                                          "routed": dict(sess.ops.routed),
                                          "compile": use_compile(self.cfg, device),
                                          "autocast": str(amp) if amp else "fp32", "params": model.num_params()}
        self.env |= self.dist.describe()  # DDP: world size and process-group backend
        self.history: list[dict[str, Any]] = self.dist.on_main(self._prepare)  # DDP: every rank gets it
        self.startup_s = time.perf_counter() - t0
        self.end = self.cfg.train.steps if stop_at is None else min(stop_at, self.cfg.train.steps)
        self.rep = _Reporter(self.cfg.train.steps, start, quiet)
        self.tokens_per_step = self.cfg.train.batch_size * (self.cfg.task.seq_len - 1)
        self.flops = train_flops_per_step(self.cfg)
        self.peak = (peak_flops(device) or 0) * self.dist.world_size or None  # DDP: every rank's GPU
        self.window = torch.zeros(LOG_EVERY, device=device)  # per-step losses, fetched every LOG_EVERY steps
        self.losses: list[float] = []  # every step this call ran
        self.interval_losses: list[float] = list(ckpt.get("interval_losses", [])) if ckpt else []
        self.step = self.flushed = self.s_last = start
        self.t_last = self.loop_t0 = time.perf_counter()
        self.info = ""
        self.stopped_early = self.started = False
        self.interrupts = _Interrupts()
        self.agreed_stop = False  # DDP: every rank stops after the same step (torchrun passes Ctrl-C to each)
        self.track, self.trackers = track, tracking.Trackers([])
        self.t_eval, self.s_eval = self.loop_t0, start  # the previous evaluation: steps/s between evaluations

    def _prepare(self) -> list[dict[str, Any]]:
        """Rank 0: env.json (env-resume-STEP.json on resume), and the history up to the checkpoint."""
        first = self.ckpt is None and self.run.created
        self.run.write_json(runfolder.env_file(None if first else self.start), self.env)
        history = self.run.history(upto=self.start)  # records past the checkpoint (whole or torn) are dropped
        self.run.rewrite_history(history)
        return history

    def announce(self) -> None:
        """What runs where: the run folder, what differs from the nearest preset (config.json has every
        field), the machine and the backends, in a few short lines."""
        env, dist, run = self.env, self.dist, self.run
        self.rep.line(f"fastgrok run {run.path}")
        preset, diff = nearest_preset(self.cfg)
        changes = f"{len(diff)} change{'s' * (len(diff) != 1)}" if diff else "no changes"
        self.rep.line(f"config: preset {preset}, {changes} (every field: {run.path / runfolder.CONFIG})")
        width = max((len(k) for k in diff), default=0)
        for k, (value, base) in diff.items():
            self.rep.line(f"  {k:<{width}}  {_human(value):>10}  (preset {_human(base)})")
        backends = self.sess.ops.label()
        self.rep.line(f"{env['device']} | torch {env['torch']} | triton {env['triton']} | {_human(env['params'])} params | "
                      f"{backends} | compile {'on' if env['compile'] else 'off'} | {env['autocast']} | "
                      f"start-up {self.startup_s:.2f} s" + (f" | resumed at step {self.start:,}" if run.created is False else "")
                      + (f" | DDP over {dist.world_size} ranks ({dist.backend})" if dist.enabled else ""))
        if run.stale_removed:
            self.rep.line(f"removed stale temporary files of a killed run: {', '.join(run.stale_removed)}")

    # ---- the pieces of a step
    def one_step(self) -> Tensor:
        """One optimiser step; its loss stays on the device until the next flush."""
        loss = train_step(self.sess, self.step, self.interrupts.interruptible)
        self.window[self.step % LOG_EVERY] = loss
        self.step += 1
        return loss

    def flush(self) -> None:
        """Fetch the losses of the steps since the last flush (one sync); stop on a non-finite one."""
        vals_all = self.dist.mean(self.window).tolist()  # DDP: the loss of the global batch
        vals = [vals_all[s % LOG_EVERY] for s in range(self.flushed, self.step)]
        for i, v in enumerate(vals):
            if not math.isfinite(v):
                bad = self.flushed + i + 1
                last_ok = self.dist.on_main(lambda: self.run.checkpoint_step())  # DDP: every rank stops alike
                where = (f"the last good checkpoint (step {last_ok}) is {self.run.path / runfolder.LAST}"
                         if last_ok is not None else "no checkpoint was written before it (--resume starts at step 0)")
                raise TrainingError(f"loss is {v} at step {bad}: training stopped; {where}")
        self.flushed = self.step
        self.losses.extend(vals)
        self.interval_losses.extend(vals)
        self._progress()

    def _progress(self) -> None:
        now = time.perf_counter()
        dt = (now - self.t_last) / max(1, self.step - self.s_last)
        self.t_last, self.s_last = now, self.step
        recent = self.losses[-LOG_EVERY:]
        self.info = (f"loss {sum(recent) / max(1, len(recent)):.4f} | {dt * 1e3:.1f} ms/step | "
                     f"{_fmt_rate(self.tokens_per_step / dt)} tok/s")
        if self.peak:
            self.info += f" | {100 * self.flops / dt / self.peak:.0f}% MFU"
        self.rep.update(self.step, self.info)

    def evaluate_and_record(self, at: int) -> None:
        """Evaluate, then write best.pt, the record and last.pt, in that order (runfolder's protocol)."""
        sess, cfg = self.sess, self.cfg
        with self.interrupts.interruptible():
            sets = evaluate(sess.fwd, sess.eval_srcs, cfg, sess.ops.batchgen, sess.device, sess.amp, self.dist)
        rec = _record(cfg, sets, at, self.interval_losses, self.loop_t0, self.tokens_per_step)
        if sets["ood_test"]["acc"] > self.best["ood_test_acc"]:  # DDP: every rank keeps `best`, rank 0 writes
            self.run.save_best({"model": sess.model.state_dict(), "step": at, "metrics": sets,
                                "config": cfg.to_dict()})
            self.best.update(step=at, ood_test_acc=sets["ood_test"]["acc"])
        self.run.append(rec)
        self.history.append(rec)
        if self.hooks.on_eval is not None:
            self.hooks.on_eval(rec, sess)
        self.interval_losses.clear()
        self.checkpoint(at)
        self.trackers.log(rec, self.perf(at))  # after the checkpoint: a resume never runs a logged step again
        s = rec["sets"]
        self.rep.line(f"step {at} | loss {rec['train_loss']:.4f} | train {s['train']['acc']:.3f} | "
                      f"id {s['id_test']['acc']:.3f} | ood {s['ood_test']['acc']:.3f}"
                      + (f" | {self.info.split(' | ', 1)[1]}" if self.info else ""))

    def perf(self, at: int) -> dict[str, float | None]:
        """Speed since the previous evaluation (that evaluation included) and peak memory, for the trackers."""
        now = time.perf_counter()
        dt, ds = now - self.t_eval, at - self.s_eval
        self.t_eval, self.s_eval = now, at
        rate = ds / dt if ds > 0 and dt > 0 else None
        return {"steps_per_s": rate, "tokens_per_s": rate * self.tokens_per_step if rate else None,
                "mfu": self.flops * rate / self.peak if rate and self.peak else None,
                "peak_mem_gib": tracking.peak_memory_gib(self.sess.device)}

    def checkpoint(self, at: int) -> None:
        """last.pt: the state after `at` whole steps, all that --resume needs."""
        self.run.save_last({"model": self.sess.model.state_dict(), "optimizer": self.sess.opt.state_dict(),
                            "step": at, "best": self.best, "interval_losses": self.interval_losses,
                            "config": self.cfg.to_dict()})

    def stop_asked(self) -> bool:
        """After an evaluation: does `stop_when` end the run here? DDP: rank 0 decides (the records' time_s
        differ between ranks), every rank follows."""
        stop_when = self.hooks.stop_when
        return stop_when is not None and self.dist.on_main(lambda: bool(stop_when(self.history)))

    def interrupted(self) -> bool:
        """Ctrl-C seen? DDP: the ranks ask each other at every flush (steps where they sync already), so a
        Ctrl-C seen by any rank stops all of them after the same step, at most LOG_EVERY steps later."""
        if not self.dist.enabled:
            return self.interrupts.count > 0
        self.agreed_stop = self.flushed == self.step and self.dist.any(self.interrupts.count > 0)
        return self.agreed_stop

    def interrupt(self) -> KeyboardInterrupt:
        """Save what a Ctrl-C leaves (the state after `step` whole steps; a cut step changed nothing saved);
        the KeyboardInterrupt to raise says where."""
        run_dir = self.run.path
        if self.dist.enabled and not self.agreed_stop:  # DDP: no collective here, the other ranks may be gone
            return KeyboardInterrupt(f"interrupted near step {self.step}; resume from the last checkpoint with "
                                     f"`fastgrok train --resume {run_dir}`")
        self.flush()
        self.checkpoint(self.step)
        self.rep.close()
        return KeyboardInterrupt(f"interrupted at step {self.step}; saved {run_dir / runfolder.LAST}: "
                                 f"resume with `fastgrok train --resume {run_dir}`")

    # ---- the loop
    def run_steps(self) -> None:
        cfg = self.cfg
        main_thread = threading.current_thread() is threading.main_thread()
        old_handler = signal.signal(signal.SIGINT, self.interrupts.handler) if main_thread else None
        self.started = True  # from here on the folder is a run (resumable, from step 0 at least)
        if self.dist.is_main and self.cfg.train.log:  # DDP: rank 0 logs
            self.trackers = tracking.start(self.cfg, self.run.path, self.start, self.track, say=self.rep.line)
            self.t_eval = time.perf_counter()  # the trackers' start-up is not training time
        try:
            if (self.ckpt is not None and _is_eval_step(self.start, cfg)
                    and not any(r["step"] == self.start for r in self.history)):
                self.evaluate_and_record(self.start)  # its evaluation was cut short before the record was written
            while self.step < self.end:
                loss = self.one_step()
                is_eval = _is_eval_step(self.step, cfg)
                if self.step % LOG_EVERY == 0 or is_eval or self.step == self.end:
                    self.flush()
                if is_eval:
                    self.evaluate_and_record(self.step)
                if self.hooks.on_step is not None:
                    self.hooks.on_step(self.step, loss, self.sess)
                if is_eval and self.stop_asked():
                    self.stopped_early = True
                    break
                if self.interrupted():
                    raise KeyboardInterrupt
            if self.step == self.end and not _is_eval_step(self.step, cfg):
                self.checkpoint(self.step)  # stop_at between evaluations: keep the exact state for --resume
        except KeyboardInterrupt:
            raise self.interrupt() from None
        finally:
            self.rep.close()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)

    def finish(self) -> TrainResult:
        summary = self.summary()
        if self.step == self.cfg.train.steps or self.stopped_early:
            self.run.write_json(runfolder.SUMMARY, summary)
            self.trackers.finish(summary)
        if not self.quiet:
            print_summary(summary)
        return TrainResult(run_dir=self.run.path, history=self.history, summary=summary, losses=self.losses)

    def summary(self) -> dict[str, Any]:
        cfg, best, step = self.cfg, self.best, self.step
        elapsed = time.perf_counter() - self.loop_t0
        last = self.history[-1] if self.history else None
        rate = (step - self.start) / elapsed if elapsed > 0 else float("nan")
        return {
            "run_dir": str(self.run.path),
            "steps": step,
            "steps_total": cfg.train.steps,
            "finished": step == cfg.train.steps,
            "wall_s": round(elapsed, 2),
            "startup_s": round(self.startup_s, 3),
            "steps_per_s": round(rate, 3),
            "tokens_per_s": round(rate * self.tokens_per_step, 1),
            "mfu": round(self.flops * rate / self.peak, 4) if self.peak else None,
            "best_ood_step": best["step"],
            "best_ood_test_acc": best["ood_test_acc"] if best["step"] is not None else None,
            "phase": last["phase"] if last else None,
            "phase_threshold": cfg.train.phase_threshold,
            "final": {k: {m: v[m] for m in ("loss", "acc", "acc_last", "task_mean_acc")}
                      for k, v in last["sets"].items()} if last else None,
            "final_kshot_ood_test": last["sets"]["ood_test"]["kshot"] if last else None,
            "stopped_early": self.stopped_early,
        }


@dataclass
class _Hooks:
    on_eval: Callable[[dict[str, Any], Session], None] | None = None
    on_step: Callable[[int, Tensor, Session], None] | None = None
    stop_when: Callable[[list[dict[str, Any]]], bool] | None = None


def _record(cfg: Config, sets: dict[str, Any], step: int, interval_losses: list[float], loop_t0: float,
            tokens_per_step: int) -> dict[str, Any]:
    """One line of metrics.jsonl ("step" first: it stays readable in a torn line)."""
    phase, solved = classify_phase(sets, cfg.train.phase_threshold)
    return {
        "step": step,
        "tokens": step * tokens_per_step,
        "lr": lr_at(step - 1, cfg),
        "train_loss": sum(interval_losses) / max(1, len(interval_losses)),
        "time_s": round(time.perf_counter() - loop_t0, 3),
        "phase": phase,
        "solved": solved,
        "sets": sets,
    }


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
