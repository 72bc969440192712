"""A time-boxed real training run: the `paper` preset for a few minutes, evaluating every `eval_every`
steps, so the record shows the early trajectory and the step time inside a training run (evaluation,
checkpoints and logging included), not only in a tight benchmark loop.

The run is `fastgrok.train` itself. After `seconds` (counted from the start of this suite: start-up
and compilation are inside the box; if no evaluation is written by then, at the first one, at most
max(seconds, 60) later) a timer sends the process SIGINT, which the trainer answers by finishing the
step, saving `last.pt` and stopping — the Ctrl-C path. The run folder lives in a
temporary directory; its metrics.jsonl is copied to `<out_dir>/paper_run-<time>.jsonl`, and
paper_run.csv gets per evaluation: ms/step over the interval before it (evaluation included; the
first interval holds compilation), the training loss and each set's accuracy.
"""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from .. import runfolder
from ..config import Config
from ..trainer import train
from .core import TOY, Recorder, Timing, row

TOY_RUN = dict(TOY, depth=1, steps=100_000, eval_every=2)


def _evaluated(metrics: Path) -> bool:
    """Whether the run has written its first evaluation."""
    try:
        return metrics.stat().st_size > 0
    except OSError:
        return False


def run(device: torch.device, rec: Recorder, *, quick: bool = False, compile: str = "main", toy: bool = False,
        seconds: float = 180.0, eval_every: int = 500, backend: str = "fused", preset: str = "paper") -> None:
    """Train `preset` on `device` for about `seconds`, then record its evaluations."""
    if threading.current_thread() is not threading.main_thread():
        raise ValueError("the paper-run suite stops training with SIGINT, so it must run in the main thread")
    over = dict(backend=backend, device=str(device), compile="auto" if compile != "off" else "off",
                eval_every=eval_every)
    cfg = Config.preset("tiny", **{**TOY_RUN, **over, "eval_every": min(eval_every, TOY_RUN["eval_every"])}) if toy \
        else Config.preset(preset, **over)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    provider = backend + ("-compiled" if compile != "off" and (device.type == "cuda") else "")
    tmp = Path(tempfile.mkdtemp(prefix="fastgrok-paper-run-"))
    cfg = cfg.override(out_dir=str(tmp), run_name="run")
    rec.log(f"paper-run: {preset if not toy else 'toy'} {provider} on {device} for {seconds:g} s, "
            f"evaluating every {cfg.train.eval_every} steps, run folder {tmp / 'run'}")
    metrics = tmp / "run" / runfolder.METRICS
    done = threading.Event()

    def stop() -> None:  # at `seconds`, or once the first evaluation is written (at most max(seconds, 60) later)
        deadline = time.monotonic() + max(seconds, 60.0)
        while not done.is_set() and time.monotonic() < deadline and not _evaluated(metrics):
            done.wait(0.5)
        if not done.is_set():
            os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(seconds, stop)
    t0 = time.perf_counter()
    timer.start()
    stopped = "finished"
    try:
        train(cfg, quiet=False)
    except KeyboardInterrupt as e:  # the timer's SIGINT: the trainer saved and stopped after a whole step
        stopped = str(e) or "interrupted"
    finally:
        done.set()
        timer.cancel()
    rec.log(f"paper-run: {stopped} after {time.perf_counter() - t0:.1f} s")
    history = runfolder.read_history(tmp / "run")
    if not history:
        rec.note("paper-run: no evaluation was reached in the time given")
    elif rec.path is not None:
        dst = rec.path.parent / f"paper_run-{stamp}.jsonl"
        shutil.copyfile(metrics, dst)
        rec.log(f"paper-run: {len(history)} evaluations copied to {dst}")
    rows = []
    prev_step, prev_t = 0, 0.0
    mode = "toy" if toy else preset
    for h in history:
        step, t = h["step"], h["time_s"]
        ms = (t - prev_t) / max(1, step - prev_step) * 1e3
        figures = [(ms, "ms"), (h["train_loss"], "train loss")] + [(s["acc"], f"{k} acc") for k, s in h["sets"].items()]
        rows += [row("paper_run", provider, mode, "step", step, Timing(v, v, v), unit, device) for v, unit in figures]
        prev_step, prev_t = step, t
    rec.add(rows, log=False)
    for h in history:
        rec.log(f"  step {h['step']:6d} | {h['time_s']:8.1f} s | loss {h['train_loss']:.4f} | "
                + " | ".join(f"{k} {v['acc']:.3f}" for k, v in h["sets"].items()) + f" | {h['phase']}")
    shutil.rmtree(tmp, ignore_errors=True)
