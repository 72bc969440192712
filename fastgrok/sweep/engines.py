"""Sweep engines: who runs the points. Plugged in the way `fastgrok.backends` plugs ops — a dict of
name → engine | "module:attr", one resolver, one error that lists what exists.

An engine has two methods:
    run(sweep, launch, busy, call)   start `launch`; wait for `busy` (points another worker holds now), then
                                     look at them again; call.on_change() after any point ends
    held(sweep, names) -> dict       points it holds that their run folders do not show yet: name → queued |
                                     running | unknown (what fastgrok.sweep.results is given; never resubmitted)
Both engines run `worker.PointJob` through submitit (https://github.com/facebookincubator/submitit):

- local: submitit's LocalExecutor, one subprocess per point, `jobs` at a time, one GPU each where there
  are GPUs (CUDA_VISIBLE_DEVICES), the CPU threads split evenly otherwise; waits until all are done.
- slurm: one SLURM job array (`array_parallelism` at a time); a job signalled before its time limit or
  preempted saves its run and submitit requeues it, to resume from last.pt. Submits and returns. Job
  states come from squeue (no accounting needed), then sacct through submitit where accounting is on.
"""
from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import runfolder
from ..checkpoint import atomic_write_text
from ..config import FieldError
from .plot import PlotUnavailable, plot_sweep
from .results import write_results
from .spec import Sweep, load_sweep
from .state import FAILED, FINISHED, QUEUED, RUNNING, TO_LAUNCH, UNKNOWN, point_status, record_failure, state_file
from .worker import PointJob

POLL_S = 0.2


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
    plots: bool = True


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

    def held(self, sweep: Sweep, names: list[str], record: bool = True) -> dict[str, str]:
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
    """The SLURM engine's options: one job array on `partition`, each job `gpus_per_job` GPUs (None: 1 where
    the partition has GPUs, else 0), `cpus_per_job` CPUs (None: SLURM's default) and `time`; `array_parallelism`
    jobs at once (SLURM's default: all); a job that reaches its time limit is requeued up to `max_requeues`
    times and resumes from last.pt; `extra`: more sbatch parameters (submitit's names)."""

    partition: str | None = None
    gpus_per_job: int | None = None
    cpus_per_job: int | None = None
    time: str = "6:00:00"
    array_parallelism: int | None = None
    max_requeues: int = 100
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> int:
        """The time limit in minutes, after checking every field."""
        if not self.partition:
            raise FieldError("partition", "the slurm engine needs a partition (SlurmOptions.partition)")
        for name in ("gpus_per_job", "cpus_per_job", "array_parallelism", "max_requeues"):
            value, least = getattr(self, name), 0 if name in ("gpus_per_job", "max_requeues") else 1
            if value is not None and (not isinstance(value, int) or value < least):
                raise FieldError(name, f"{name}={value!r} must be an integer ≥ {least}")
        try:
            minutes = parse_time(self.time)
        except ValueError as e:
            raise FieldError("time", str(e)) from None
        if minutes * 60 <= SIGNAL_DELAY_S:
            raise FieldError("time", f"time={self.time!r} is not longer than the {SIGNAL_DELAY_S} s before the limit at "
                             "which SLURM signals a job to save and requeue: every job would requeue at once")
        return minutes


# SLURM's job states (squeue, sacct) as a point's: waiting for a node, on one, or ended in a failure.
SLURM_QUEUED = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED", "RESIZING",
                "RESV_DEL_HOLD", "SPECIAL_EXIT")
SLURM_RUNNING = ("RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING")
SLURM_FAILED = ("FAILED", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE")


class SlurmUnavailable(ValueError):
    """The SLURM tools are missing or the controller does not answer."""


def _slurm(*args: str, timeout: float = 30) -> str:
    """A SLURM command's stdout; SlurmUnavailable with its first error line when it fails."""
    if shutil.which(args[0]) is None:
        raise SlurmUnavailable(f"{args[0]} is not on PATH (run on a SLURM login node)")
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(f"{args[0]} did not answer in {timeout:g} s (is the SLURM controller up?)") from None
    except OSError as e:
        raise SlurmUnavailable(f"{args[0]} cannot run: {e.strerror or e}") from None
    if done.returncode != 0:
        err = (done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}").splitlines()[0]
        if "unable to contact slurm controller" in err.lower():
            raise SlurmUnavailable(f"the SLURM controller does not answer ({args[0]}: {err})")
        raise SlurmUnavailable(f"{args[0]} failed: {err}")
    return done.stdout


def job_history(sweep: Sweep, name: str) -> list[str]:
    """Every SLURM job id submitted for a point, oldest first (state/<point>.job, one a line)."""
    path = state_file(sweep.root, name, "job")
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []


def _record_job(sweep: Sweep, name: str, job_id: str) -> None:
    path = state_file(sweep.root, name, "job")
    atomic_write_text("".join(j + "\n" for j in [*job_history(sweep, name), job_id]), path)


def _accounting() -> bool:
    """Whether sacct can answer (SLURM's accounting storage is on)."""
    try:
        config = _slurm("scontrol", "show", "config")
    except SlurmUnavailable:
        return False
    m = re.search(r"^AccountingStorageType\s*=\s*(\S+)", config, re.M)
    return bool(m) and m.group(1) != "accounting_storage/none" and shutil.which("sacct") is not None


def slurm_states(job_ids: list[str], folder: Any = None) -> dict[str, str]:
    """SLURM's state of each job: squeue for the jobs it still lists (it needs no accounting), then, for the
    others, sacct through submitit's job-state API where accounting is on. A job neither knows is
    missing from the answer (it ended and was forgotten); SlurmUnavailable when squeue cannot answer."""
    if not job_ids:
        return {}
    import getpass
    out = {}
    for line in _slurm("squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-u", getpass.getuser()).splitlines():
        job, _, state = line.strip().partition("|")
        if job in job_ids and state:
            out[job] = state.split()[0].upper()
    rest = [j for j in job_ids if j not in out]
    if rest and _accounting():
        submitit = _submitit()
        handles = {j: submitit.SlurmJob(folder=folder or ".", job_id=j) for j in rest}
        for j, job in handles.items():  # the first asks sacct about every registered job at once
            state = job.state.split()[0].upper() if job.state else ""
            if state and state != "UNKNOWN":
                out[j] = state
    return out


def point_jobs(sweep: Sweep, names: list[str]) -> tuple[dict[str, str], dict[str, str], str | None]:
    """(point → its latest job id, job id → SLURM's state, why SLURM could not answer or None)."""
    latest = {n: h[-1] for n in names if (h := job_history(sweep, n))}
    try:
        return latest, slurm_states(list(latest.values()), sweep.root / ".submitit" / "%j"), None
    except SlurmUnavailable as e:
        return latest, {}, str(e)


class SlurmEngine:
    """One SLURM job array of what is left; a job that reaches its time limit or is preempted saves its run
    (the worker) and submitit requeues it, to resume from last.pt. Submits and returns; each worker
    rewrites results.csv and the figures when its point ends."""

    def held(self, sweep: Sweep, names: list[str], record: bool = True) -> dict[str, str]:
        """Points whose latest job SLURM still holds (queued, running) or that cannot be checked (unknown);
        a job SLURM reports failed makes its point failed, with the reason (with `record`)."""
        return self._held(sweep, *point_jobs(sweep, names), record=record)

    def _held(self, sweep: Sweep, latest: dict[str, str], states: dict[str, str], trouble: str | None,
              record: bool) -> dict[str, str]:
        out = {}
        for name, job in latest.items():
            st = point_status(sweep.root, name)
            if st in FINISHED or st == FAILED:
                continue
            slurm = states.get(job)
            if trouble is not None:
                out[name] = UNKNOWN
            elif slurm in SLURM_QUEUED:
                out[name] = QUEUED
            elif slurm in SLURM_RUNNING:
                out[name] = RUNNING
            elif slurm in SLURM_FAILED and record:
                record_failure(sweep.root, name, f"SLURM job {job} ended {slurm}")
        return out

    def run(self, sweep: Sweep, launch: list[str], busy: list[str], call: EngineCall) -> None:
        submitit = _submitit()
        opts, log = call.slurm, call.log
        minutes = opts.check()
        for tool in ("sbatch", "srun"):
            if shutil.which(tool) is None:
                raise ValueError("the slurm engine needs sbatch and srun on PATH (run it on a SLURM login node)")
        try:
            gpus = _partition_gpus(opts.partition, opts.gpus_per_job)
        except SlurmUnavailable as e:
            raise SlurmUnavailable(f"{e}: nothing submitted") from None
        warning = local_folder_warning(sweep.root, opts.partition)
        if warning:
            log(f"  warning: {warning}")
        latest, states, trouble = point_jobs(sweep, launch)
        if trouble is not None and latest:
            raise SlurmUnavailable(f"cannot tell whether the points' earlier jobs still run ({trouble}): nothing "
                                   "submitted, so that none runs twice; try again when SLURM answers")
        held = self._held(sweep, latest, states, trouble, record=False)  # the driver recorded failures already
        submit = [n for n in launch if n not in held]
        if held:
            log(f"  {len(held)} point(s) already queued or running in SLURM: not submitted again")
        if not submit:
            log("nothing to submit")
            return
        ex = submitit.SlurmExecutor(folder=sweep.root / ".submitit" / "%j", max_num_timeout=opts.max_requeues)
        params: dict[str, Any] = dict(partition=opts.partition, time=minutes, job_name="fastgrok-sweep", nodes=1,
                                      ntasks_per_node=1, signal_delay_s=SIGNAL_DELAY_S, stderr_to_stdout=True)
        if gpus:
            params["gpus_per_node"] = gpus
        if opts.cpus_per_job:
            params["cpus_per_task"] = opts.cpus_per_job
        if opts.array_parallelism:
            params["array_parallelism"] = opts.array_parallelism
        params.update(opts.extra)
        ex.update_parameters(**params)
        try:
            with ex.batch():
                after = refresh if call.plots else refresh_results
                jobs = [ex.submit(PointJob(sweep.root, name, None, call.stop_when_settled, after=after))
                        for name in submit]
        except Exception as e:  # noqa: BLE001 — submitit's FailedJobError holds sbatch's whole answer
            lines = [ln.strip() for ln in str(e).splitlines() if "error" in ln.lower()] or str(e).splitlines() or [""]
            raise ValueError(f"sbatch refused the job array: {lines[0]}") from None
        for name, job in zip(submit, jobs):
            _record_job(sweep, name, job.job_id)
        array = jobs[0].job_id.split("_")[0]
        log(f"submitted SLURM array {array}: {len(jobs)} point(s), {gpus} GPU(s) and {opts.time} each, "
            f"partition {opts.partition}; follow with `fastgrok sweep {sweep.root} --status`")
        call.on_change()


SIGNAL_DELAY_S = 120   # SLURM signals a job (USR2) this long before its time limit: the worker saves, then requeues


def _partition_gpus(partition: str, asked: int | None) -> int:
    """GPUs a job asks for: `asked`, or 1 where the partition has GPUs and 0 where it has none; one line
    for a partition SLURM does not know."""
    out = _slurm("sinfo", "-h", "-p", partition, "-o", "%G")
    if not out.strip():
        try:
            names = sorted({p.strip().rstrip("*") for p in _slurm("sinfo", "-h", "-o", "%P").split()})
        except SlurmUnavailable:
            names = []
        raise FieldError("partition", f"SLURM has no partition {partition!r}"
                         + (f"; partitions: {', '.join(names)}" if names else ""))
    has_gpus = any("gpu" in g for g in out.split())
    if asked is None:
        return 1 if has_gpus else 0
    if asked > 0 and not has_gpus:
        raise FieldError("gpus_per_job", f"partition {partition!r} has no GPUs (gres {out.split()[0]}) but "
                         f"gpus_per_job={asked}: ask for 0")
    return asked


LOCAL_FS = ("ext2/ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlayfs", "zfs", "f2fs")  # `stat -f -c %T` names


def local_folder_warning(root: Path, partition: str) -> str | None:
    """A warning when the sweep folder lies on a local file system while the partition has nodes other
    than this host: their jobs could not read the folder."""
    try:
        fs = subprocess.run(["stat", "-f", "-c", "%T", str(root)], capture_output=True, text=True,
                            timeout=10).stdout.strip()
        nodes = _slurm("sinfo", "-h", "-p", partition, "-N", "-o", "%N").split()
    except (OSError, subprocess.SubprocessError, SlurmUnavailable):
        return None
    import socket
    here = {socket.gethostname(), socket.gethostname().split(".")[0]}
    others = sorted(set(nodes) - here)
    if fs in LOCAL_FS and others:
        return (f"{root} is on a local file system ({fs}) but partition {partition!r} has other nodes "
                f"({', '.join(others[:3])}{' …' if len(others) > 3 else ''}): put the sweep folder on one they share")
    return None


def refresh_results(root: str | Path) -> None:
    """Rewrite a sweep's results.csv/.jsonl (a SLURM worker, when its point ends)."""
    sweep = load_sweep(root)
    write_results(sweep, engine_states(sweep))


def refresh(root: str | Path) -> None:
    """Rewrite a sweep's results.csv/.jsonl and redraw its figures (a SLURM worker, when its point ends)."""
    refresh_results(root)
    try:
        plot_sweep(root, quiet=True)
    except PlotUnavailable:
        pass


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


def engine_states(sweep: Sweep) -> dict[str, str]:
    """Points an engine holds that their run folders do not show (a SLURM job waiting for a node: queued;
    SLURM not answering: unknown), asking every engine."""
    names = sweep.names()
    out: dict[str, str] = {}
    for name in ENGINES:
        out.update(get_engine(name).held(sweep, names))
    return out
