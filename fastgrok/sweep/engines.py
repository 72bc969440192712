"""Sweep engines: who runs the points. Plugged in the way `fastgrok.backends` plugs ops — a dict of
name → engine | "module:attr", one resolver, one error that lists what exists.

An engine has two methods:
    run(sweep, launch, busy, call)   start `launch`; wait for `busy` (points another worker holds now), then
                                     look at them again; call.on_change() after any point ends
    queued(sweep, names) -> dict     the engine's own state of points it holds that no run folder shows yet
                                     (name → "queued"): what fastgrok.sweep.results is given
Both engines run `worker.PointJob` through submitit (https://github.com/facebookincubator/submitit):

- local: submitit's LocalExecutor, one subprocess per point, `jobs` at a time, one GPU each where there
  are GPUs (CUDA_VISIBLE_DEVICES), the CPU threads split evenly otherwise; waits until all are done.
- slurm: one SLURM job array (`array_parallelism` at a time); submitit's checkpoint protocol requeues a
  timed-out or preempted job, which resumes its point from last.pt. Submits and returns.
"""
from __future__ import annotations

import importlib
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import runfolder
from ..checkpoint import atomic_write_text
from ..config import FieldError
from .spec import Sweep
from .state import FINISHED, QUEUED, RUNNING, TO_LAUNCH, point_status, record_failure, state_file
from .worker import PointJob

POLL_S = 0.2
ACTIVE_SLURM = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
                "REQUEUE_HOLD", "REQUEUE_FED", "STAGE_OUT", "SIGNALING")


def _submitit() -> Any:
    try:
        return importlib.import_module("submitit")
    except ImportError:
        raise ValueError("sweeps run through submitit, which is not installed: pip install submitit") from None


def _gpu_ids() -> list[int]:
    """The GPUs this process may use (CUDA_VISIBLE_DEVICES respected), as the ids children should see."""
    import torch
    n = torch.cuda.device_count()
    if not n:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [s.strip() for s in visible.split(",") if s.strip()]
    if ids and all(s.isdigit() for s in ids):
        return [int(s) for s in ids][:n]
    return list(range(n))


@dataclass
class EngineCall:
    """What the driver hands an engine: how many points at once (local), when a run may stop, the SLURM
    options, and the driver's callbacks."""

    jobs: int
    stop_when_settled: int | None
    slurm: "SlurmOptions"
    on_change: Callable[[], None]
    log: Callable[[str], None]


def local_slots(jobs: int) -> tuple[list[list[int]], int]:
    """The GPU ids of each of `jobs` slots (one GPU each; none on a CPU) and the threads each gets."""
    gpus = _gpu_ids()
    if gpus and jobs > len(gpus):
        raise FieldError("jobs", f"jobs={jobs} but this machine shows {len(gpus)} GPU(s): one point per GPU, so at "
                         f"most jobs={len(gpus)}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // jobs)
    return [[gpus[i]] if gpus else [] for i in range(jobs)], threads


class LocalEngine:
    """submitit's LocalExecutor: one subprocess per point, `jobs` at a time; returns when all have ended."""

    def queued(self, sweep: Sweep, names: list[str]) -> dict[str, str]:
        return {}  # a point it runs holds its run folder's lock: the folder says "running"

    def run(self, sweep: Sweep, launch: list[str], busy: list[str], call: EngineCall) -> None:
        _run_local(sweep, launch, busy, call)


def _run_local(sweep: Sweep, launch: list[str], busy: list[str], call: EngineCall) -> None:
    submitit = _submitit()
    log, on_change = call.log, call.on_change
    slots, threads = local_slots(call.jobs)
    ex = submitit.LocalExecutor(folder=sweep.root / ".submitit" / "%j")
    queue, waiting = list(launch), list(busy)
    free = list(range(len(slots)))
    active: dict[int, tuple[Any, str]] = {}
    try:
        while queue or active or waiting:
            while queue and free:
                slot, name = free.pop(0), queue.pop(0)
                gpus = slots[slot]
                ex.update_parameters(timeout_min=60 * 24 * 30, signal_delay_s=60, gpus_per_node=len(gpus),
                                     visible_gpus=gpus, stderr_to_stdout=True)
                job = ex.submit(PointJob(sweep.root, name, threads, call.stop_when_settled))
                active[slot] = (job, name)
                where = f"GPU {gpus[0]}" if gpus else f"{threads} thread(s)"
                log(f"  start {name} ({where}, pid {job.job_id})")
            for slot, (job, name) in list(active.items()):
                if not job.done():
                    continue
                del active[slot]
                free.append(slot)
                try:
                    status = job.result()
                except Exception as e:  # the worker died (killed, out of memory): nothing it could record
                    status = point_status(sweep.root, name)
                    if status not in FINISHED:
                        reason = str(e).strip().splitlines()
                        record_failure(sweep.root, name, f"worker died: {reason[-1] if reason else type(e).__name__}")
                        status = "failed"
                if status == RUNNING:  # another worker took it first: wait for that one
                    waiting.append(name)
                log(f"  {status:>11} {name}")
                on_change()
            for name in list(waiting):
                if runfolder.owner(sweep.runs / name) is None:
                    waiting.remove(name)
                    status = point_status(sweep.root, name)
                    if status in TO_LAUNCH:
                        queue.append(name)
                    else:
                        log(f"  {status:>11} {name} (by another worker)")
                        on_change()
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        log("interrupted: running points save their last evaluation; run the same command to resume")
        for job, _ in active.values():
            job.cancel(check=False)
        raise


# ---- SLURM ------------------------------------------------------------------------------------------
def parse_time(text: str) -> int:
    """SLURM time ('6:00:00', '90', '1-12:00:00', '30:00') → whole minutes."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise ValueError(f"time={text!r} is not a SLURM time (minutes, MM:SS, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = (int(g) if g else 0 for g in m.groups())
    if m.group(4) is not None:
        minutes = a * 60 + b + c / 60
    elif m.group(3) is not None:
        minutes = (a * 60 + b) if m.group(1) else a + b / 60
    else:
        minutes = a * 60 if m.group(1) else a
    minutes += days * 24 * 60
    if minutes < 1:
        raise ValueError(f"time={text!r} is under a minute")
    return int(round(minutes))


@dataclass
class SlurmOptions:
    """The SLURM engine's options: one job array on `partition`, `gpus_per_job` GPUs and `time` each,
    `array_parallelism` jobs at once (SLURM's default: all), `extra` more sbatch parameters (submitit's names)."""

    partition: str | None = None
    gpus_per_job: int = 1
    time: str = "6:00:00"
    array_parallelism: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> int:
        """The time limit in minutes, after checking every field."""
        if not self.partition:
            raise FieldError("partition", "the slurm engine needs a partition (SlurmOptions.partition)")
        if self.gpus_per_job < 0:
            raise FieldError("gpus_per_job", f"gpus_per_job={self.gpus_per_job} must be ≥ 0")
        if self.array_parallelism is not None and self.array_parallelism < 1:
            raise FieldError("array_parallelism", f"array_parallelism={self.array_parallelism} must be ≥ 1")
        try:
            return parse_time(self.time)
        except ValueError as e:
            raise FieldError("time", str(e)) from None


def _job_ids(sweep: Sweep, names: list[str]) -> dict[str, str]:
    """The SLURM job id recorded for each of these points that has one."""
    jobs = {}
    for name in names:
        path = state_file(sweep.root, name, "job")
        if path.is_file():
            jobs[name] = path.read_text().strip()
    return jobs


def slurm_states(sweep: Sweep, names: list[str]) -> dict[str, str]:
    """SLURM's state of the jobs recorded for these points (name → state, for points with a job), through
    submitit's job-state API (one sacct call for all of them)."""
    jobs = _job_ids(sweep, names)
    if not jobs or shutil.which("sacct") is None:
        return {}
    submitit = _submitit()
    handles = {name: submitit.SlurmJob(folder=sweep.root / ".submitit" / "%j", job_id=j) for name, j in jobs.items()}
    states = {name: job.state for name, job in handles.items()}  # the first asks sacct for all registered jobs
    return {name: st.split()[0] for name, st in states.items() if st and st.upper() != "UNKNOWN"}


class SlurmEngine:
    """One SLURM job array of what is left; submitit's checkpoint protocol requeues a timed-out or
    preempted job, which resumes its point from last.pt. Submits and returns."""

    def queued(self, sweep: Sweep, names: list[str]) -> dict[str, str]:
        return {n: QUEUED for n, st in slurm_states(sweep, names).items() if st.upper() in ACTIVE_SLURM}

    def run(self, sweep: Sweep, launch: list[str], busy: list[str], call: EngineCall) -> None:
        submitit = _submitit()
        opts, log = call.slurm, call.log
        minutes = opts.check()
        if shutil.which("srun") is None or shutil.which("sbatch") is None:
            raise ValueError("the slurm engine needs sbatch and srun on PATH (run it on a SLURM login node)")
        queued = list(self.queued(sweep, launch))
        submit = [n for n in launch if n not in queued]
        if queued:
            log(f"  {len(queued)} point(s) already queued or running in SLURM: not submitted again")
        if not submit:
            log("nothing to submit")
            return
        ex = submitit.SlurmExecutor(folder=sweep.root / ".submitit" / "%j")
        params: dict[str, Any] = dict(partition=opts.partition, time=minutes, job_name="fastgrok-sweep", nodes=1,
                                      ntasks_per_node=1, signal_delay_s=120, stderr_to_stdout=True)
        if opts.gpus_per_job:
            params["gpus_per_node"] = opts.gpus_per_job
        if opts.array_parallelism:
            params["array_parallelism"] = opts.array_parallelism
        params.update(opts.extra)
        ex.update_parameters(**params)
        with ex.batch():
            jobs = [ex.submit(PointJob(sweep.root, name, None, call.stop_when_settled)) for name in submit]
        for name, job in zip(submit, jobs):
            atomic_write_text(job.job_id + "\n", state_file(sweep.root, name, "job"))
        array = jobs[0].job_id.split("_")[0]
        log(f"submitted SLURM array {array}: {len(jobs)} point(s), {opts.gpus_per_job} GPU(s) and {opts.time} each, "
            f"partition {opts.partition}; follow with `fastgrok sweep {sweep.root} --status`")
        call.on_change()


# name → an engine, or "module:attribute" imported on first use.
ENGINES: dict[str, Any] = {
    "local": LocalEngine(),
    "slurm": SlurmEngine(),
}


def get_engine(name: str) -> Any:
    """The engine called `name` (see ENGINES)."""
    impl = ENGINES.get(name)
    if impl is None:
        raise FieldError("engine", f"unknown sweep engine {name!r}; engines: {', '.join(ENGINES)}")
    if isinstance(impl, str):
        module, _, attr = impl.partition(":")
        impl = getattr(importlib.import_module(module), attr)
        ENGINES[name] = impl
    return impl
