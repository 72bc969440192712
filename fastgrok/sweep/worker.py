"""The worker: one point, run (or resumed) in the engine's process through the public `train()`, its
outcome recorded in the sweep's state/ files. Never runs a point twice at once: the run folder's lock."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import runfolder
from .spec import load_sweep
from .state import FAILED, FINISHED, RUNNING, append_attempt, point_status, record_failure, settled


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".strip()


def allocated_cpus() -> int | None:
    """The CPUs SLURM gave this job (SLURM_CPUS_PER_TASK, else SLURM_JOB_CPUS_PER_NODE), None outside SLURM."""
    for var in ("SLURM_CPUS_PER_TASK", "SLURM_JOB_CPUS_PER_NODE"):
        text = os.environ.get(var, "").split("(")[0].split(",")[0].strip()
        if text.isdigit() and int(text) > 0:
            return int(text)
    return None


@contextlib.contextmanager
def _save_on_slurm_signal() -> Iterator[list[int]]:
    """Inside a SLURM job run by submitit: SLURM's signal before the time limit, or a preemption (USR2),
    first stops training the way Ctrl-C does — the step ends, last.pt is saved — and then goes to
    submitit's handler, which requeues the job. Yields the signals caught."""
    caught: list[int] = []
    sig = getattr(signal, "SIGUSR2", None)
    submitit_handler = signal.getsignal(sig) if sig is not None else None
    if sig is None or not callable(submitit_handler) or "SLURM_JOB_ID" not in os.environ:
        yield caught
        return

    def handler(signum: int, frame: Any) -> None:
        caught.append(signum)
        os.kill(os.getpid(), signal.SIGINT)  # the trainer's Ctrl-C: finish the step, save, stop

    signal.signal(sig, handler)
    try:
        yield caught
    finally:
        signal.signal(sig, submitit_handler)
    if caught:
        submitit_handler(caught[0], None)  # submitit: checkpoint() (this job again), requeue, exit


def run_point(root: str | Path, name: str, threads: int | None = None, stop_when_settled: int | None = None,
              quiet: bool = False, submitted: float | None = None) -> str:
    """Run (or resume) one point to its end; returns its status. Never raises for a failing run: the reason
    goes to state/<name>.failed.json and the sweep goes on."""
    root = Path(root)
    t_enter = time.time()
    threads = threads or allocated_cpus()
    if threads:
        import torch
        torch.set_num_threads(threads)
    sweep = load_sweep(root)
    status = point_status(root, name)
    if status in FINISHED or status in (FAILED, RUNNING):
        return status
    k = stop_when_settled if stop_when_settled is not None else sweep.stop_when_settled
    stop_when = (lambda h: settled(h, k)) if k else None
    attempt: dict[str, Any] = {"pid": os.getpid(), "host": os.uname().nodename, "submitted": submitted,
                               "enter": t_enter, "resumed": status == runfolder.INTERRUPTED, "threads": threads}
    with _save_on_slurm_signal() as caught:
        return _attempt(root, sweep, name, status, attempt, quiet, stop_when, caught)


def _attempt(root: Path, sweep: Any, name: str, status: str, attempt: dict[str, Any], quiet: bool,
             stop_when: Callable | None, caught: list[int]) -> str:
    run = sweep.runs / name
    try:
        from ..trainer import train  # torch and the model: only in a worker that trains
        attempt["train_called"] = time.time()
        attempt["cpu_before_train_s"] = round(time.process_time(), 3)  # this worker's imports and set-up
        track = {"group": sweep.root.name, "point": sweep.point_of(name)}  # a tracker's group: the sweep (#31)
        if status in runfolder.RESUMABLE:  # train() owns the folder (its lock) and resumes it
            result = train(resume=run, quiet=quiet, stop_when=stop_when, track=track)
        else:
            result = train(sweep.config(sweep.point_of(name)), quiet=quiet, stop_when=stop_when, track=track)
        s = result.summary
        attempt.update(end=time.time(), status=runfolder.SETTLED if s.get("stopped_early") else runfolder.DONE,
                       steps=s["steps"], startup_s=s["startup_s"], wall_s=s["wall_s"])
        append_attempt(root, name, attempt)
        return attempt["status"]
    except runfolder.RunFolderBusy:
        return RUNNING  # another worker owns the folder: the driver waits for it
    except KeyboardInterrupt:
        attempt.update(end=time.time(), status=runfolder.INTERRUPTED)
        if caught:
            attempt["reason"] = "SLURM signalled the job (time limit near, or preempted): saved, requeued"
        append_attempt(root, name, attempt)
        return runfolder.INTERRUPTED
    except Exception as e:  # noqa: BLE001 — any failure of one run is recorded, the sweep goes on
        st = runfolder.state(run)
        if st in FINISHED or st == RUNNING:
            return st
        record_failure(root, name, one_line(e))
        attempt.update(end=time.time(), status=FAILED, reason=one_line(e), traceback=traceback.format_exc(limit=-3))
        append_attempt(root, name, attempt)
        return FAILED


class PointJob:
    """The callable an engine runs: submitit's checkpoint protocol (timeout, preemption) resubmits it, and
    the resubmitted worker resumes the point from its last.pt."""

    def __init__(self, root: str | Path, name: str, threads: int | None = None,
                 stop_when_settled: int | None = None, after: Callable[[str], None] | None = None) -> None:
        self.root, self.name, self.threads, self.stop_when_settled = str(root), name, threads, stop_when_settled
        self.after = after  # called with the sweep folder when the point ends (a module-level function: pickled by name)
        self.submitted = time.time()

    def __call__(self) -> str:
        status = run_point(self.root, self.name, self.threads, self.stop_when_settled, submitted=self.submitted)
        if self.after is not None and status != runfolder.INTERRUPTED:
            try:
                self.after(self.root)
            except Exception as e:  # noqa: BLE001 — results and figures must never fail a finished point
                print(f"fastgrok: {self.root}: results not refreshed ({one_line(e)})", file=sys.stderr, flush=True)
        return status

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit
        return submitit.helpers.DelayedSubmission(PointJob(self.root, self.name, self.threads,
                                                           self.stop_when_settled, self.after))
