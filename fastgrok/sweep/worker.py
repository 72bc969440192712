"""The worker: one point, run (or resumed) in the engine's process through the public `train()`, its
outcome recorded in the sweep's state/ files. Never runs a point twice at once: the run folder's lock."""
from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any

from .. import runfolder
from .spec import load_sweep
from .state import FAILED, FINISHED, RUNNING, append_attempt, point_status, record_failure, settled


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".strip()


def run_point(root: str | Path, name: str, threads: int | None = None, stop_when_settled: int | None = None,
              quiet: bool = False, submitted: float | None = None) -> str:
    """Run (or resume) one point to its end; returns its status. Never raises for a failing run: the reason
    goes to state/<name>.failed.json and the sweep goes on."""
    root = Path(root)
    t_enter = time.time()
    if threads:
        import torch
        torch.set_num_threads(threads)
    sweep = load_sweep(root)
    status = point_status(root, name)
    if status in FINISHED or status in (FAILED, RUNNING):
        return status
    from ..trainer import train  # torch and the model: only in a worker that trains
    run = sweep.runs / name
    k = stop_when_settled if stop_when_settled is not None else sweep.stop_when_settled
    stop_when = (lambda h: settled(h, k)) if k else None
    attempt: dict[str, Any] = {"pid": os.getpid(), "host": os.uname().nodename, "submitted": submitted,
                               "enter": t_enter, "resumed": status == runfolder.INTERRUPTED, "threads": threads}
    try:
        attempt["train_called"] = time.time()
        attempt["cpu_before_train_s"] = round(time.process_time(), 3)  # this worker's imports and set-up
        if status in runfolder.RESUMABLE:  # train() owns the folder (its lock) and resumes it
            result = train(resume=run, quiet=quiet, stop_when=stop_when)
        else:
            result = train(sweep.config(sweep.point_of(name)), quiet=quiet, stop_when=stop_when)
        s = result.summary
        attempt.update(end=time.time(), status=runfolder.SETTLED if s.get("stopped_early") else runfolder.DONE,
                       steps=s["steps"], startup_s=s["startup_s"], wall_s=s["wall_s"])
        append_attempt(root, name, attempt)
        return attempt["status"]
    except runfolder.RunFolderBusy:
        return RUNNING  # another worker owns the folder: the driver waits for it
    except KeyboardInterrupt:
        attempt.update(end=time.time(), status=runfolder.INTERRUPTED)
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
                 stop_when_settled: int | None = None) -> None:
        self.root, self.name, self.threads, self.stop_when_settled = str(root), name, threads, stop_when_settled
        self.submitted = time.time()

    def __call__(self) -> str:
        return run_point(self.root, self.name, self.threads, self.stop_when_settled, submitted=self.submitted)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit
        return submitit.helpers.DelayedSubmission(PointJob(self.root, self.name, self.threads,
                                                           self.stop_when_settled))
