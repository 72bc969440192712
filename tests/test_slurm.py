"""`fastgrok sweep --engine slurm` on a real one-node SLURM cluster (tests/slurm_cluster.sh: munged,
slurmctld and slurmd from Debian's packages, partition `debug`, no accounting). `.ci/run` starts it and
sets FASTGROK_SLURM_DIR; without it these tests are skipped, saying how to start one.

Every job here is a tiny run on the CPU; what is tested is the path through SLURM: submission, squeue's
states, a requeue, SLURM's signal before the time limit (the worker saves, submitit requeues), a
cancelled job, a killed worker, and the errors of a bad partition and of a controller that does not answer.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fastgrok import runfolder
from fastgrok.cli import main
from fastgrok.sweep import load_sweep, point_status, read_attempts
from fastgrok.sweep.engines import job_history

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 240


@pytest.fixture(scope="module")
def cluster():
    where = os.environ.get("FASTGROK_SLURM_DIR")
    if not where:
        pytest.skip("no SLURM cluster: `tests/slurm_cluster.sh start DIR` (root) starts one; then set "
                    "FASTGROK_SLURM_DIR=DIR (.ci/run does both)")
    why = Path(where) / "failed.txt"
    if why.is_file():
        pytest.skip(f"the SLURM cluster did not start: {why.read_text().strip()}")
    conf = Path(where) / "slurm.conf"
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and "debug" in out.stdout, f"the cluster does not answer: {out.stderr.strip()}"
        yield Path(where)
    finally:
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved


def _sweep(root: Path, *extra: str, grid: tuple[str, ...] = ("--seeds", "1")) -> list[str]:
    return ["sweep", str(root), "--preset", "tiny", *grid, "--engine", "slurm", "--partition", "debug",
            "--no-plots", "--quiet", *extra]


def _debug(root: Path) -> str:
    sq = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i %T %r"], capture_output=True, text=True)
    logs = sorted((root / ".submitit").glob("*/*_log.out"))
    tail = "\n".join(f"--- {p}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:]) for p in logs[-3:])
    return f"squeue:\n{sq.stdout}{sq.stderr}\n{tail}"


def _wait(root: Path, done, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if done():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{_debug(root)}")


def _all_ended(root: Path) -> bool:
    sweep = load_sweep(root)
    return all(point_status(root, n) in ("done", "settled", "failed") for n in sweep.names())


def _recorded(root: Path, names: list[str]) -> bool:
    """Each point's worker has written its attempt record. The run folder says "done" when train() returns,
    a moment before the worker appends to attempts.jsonl: a test that reads the attempts waits for this too
    (seen once in CI: the requeue test read ["interrupted"] while the "done" record was being written)."""
    return all((a := read_attempts(root, n)) and a[-1].get("status") == point_status(root, n) for n in names)


def _steps(run: Path) -> list[int]:
    return [r["step"] for r in runfolder.read_history(run)]


def _scontrol(*args: str) -> None:
    subprocess.run(["scontrol", *args], check=True, capture_output=True, text=True, timeout=30)


def _slurm_ended(job: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", job.split("_")[0], "-o", "%i %T"],
                         capture_output=True, text=True).stdout.split("\n")
    state = next((line.split()[1] for line in out if line.split() and line.split()[0] == job), "")
    return state in ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def _release(root: Path, job: str) -> None:
    """SLURM holds a requeued job back for two minutes (Reason=BeginTime); start it now, to keep the test short."""
    def held() -> bool:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %r"], capture_output=True, text=True).stdout
        return "PENDING BeginTime" in out
    _wait(root, held, f"job {job} to be requeued", timeout=60)
    _scontrol("update", f"JobId={job}", "StartTime=now")


def test_a_grid_runs_through_slurm_with_results_and_threads_from_the_allocation(cluster, tmp_path, capsys):
    root = tmp_path / "sw"
    args = _sweep(root, "--steps", "40", "--eval-every", "20", grid=("--grid", "alpha=0.4,0.6", "--seeds", "1,2"))
    t0 = time.time()
    assert main(args) == 0, capsys.readouterr().err
    sweep = load_sweep(root)
    assert all(len(job_history(sweep, n)) == 1 for n in sweep.names())
    _wait(root, lambda: _all_ended(root) and _recorded(root, sweep.names()), "the 4 points and their records")
    elapsed = time.time() - t0
    # the last worker to end rewrote results.csv: no --status needed
    _wait(root, lambda: (root / "results.jsonl").is_file() and all(
        json.loads(line)["status"] == "done" for line in (root / "results.jsonl").read_text().splitlines()),
        "results.jsonl to say done", timeout=30)
    rows = [json.loads(line) for line in (root / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["phase_final"] and r["steps"] == 40 for r in rows)
    for name in sweep.names():
        assert _steps(sweep.runs / name) == [20, 40]
        (attempt,) = read_attempts(root, name)
        assert attempt["threads"] == 1 and attempt["status"] == "done"  # SLURM's default: one CPU a task
    assert main(args) == 0  # again: nothing left to do, nothing submitted
    assert all(len(job_history(sweep, n)) == 1 for n in sweep.names())
    print(f"4 points through SLURM in {elapsed:.1f} s")


def test_requeue_and_the_time_limit_signal_resume_each_evaluation_once(cluster, tmp_path, capsys):
    root = tmp_path / "sw"
    # 4800 steps: after the third evaluation ≥ 3600 steps (≈ 10 s at a quiet CPU's 2.8 ms/step) are left for
    # `scontrol requeue` to land in; with 2400 the run could finish first on a quiet machine (seen: 4 of 4)
    assert main(_sweep(root, "--steps", "4800", "--eval-every", "400")) == 0, capsys.readouterr().err
    sweep = load_sweep(root)
    (name,) = sweep.names()
    run = sweep.runs / name
    (job,) = job_history(sweep, name)
    _wait(root, lambda: len(_steps(run)) >= 1, "the first evaluation")
    # SLURM's signal before the time limit (what --signal=USR2@120 sends; submitit's own test does this):
    # the worker finishes its step, saves last.pt, and submitit requeues the job
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
    _wait(root, lambda: any(a.get("reason", "").startswith("SLURM signalled") for a in read_attempts(root, name)),
          "the signalled attempt's record")
    _release(root, job)
    _wait(root, lambda: any(run.glob("env-resume-*.json")), "the requeued job to resume")
    saved_at = sorted(int(p.stem.split("-")[-1]) for p in run.glob("env-resume-*.json"))
    assert saved_at and saved_at[0] % 400 != 0  # saved at the signal, not only at the last evaluation
    # scontrol requeue: SLURM kills the task and runs it again; it resumes from last.pt
    _wait(root, lambda: runfolder.owner(run) is not None and len(_steps(run)) >= 3, "a later evaluation")
    _scontrol("requeue", job)
    _release(root, job)
    _wait(root, lambda: _all_ended(root) and _recorded(root, [name]), "the point to finish after the requeue")
    assert point_status(root, name) == "done"
    assert _steps(run) == list(range(400, 4801, 400))  # each evaluation exactly once
    assert len(list(run.glob("env-resume-*.json"))) >= 2
    statuses = [a["status"] for a in read_attempts(root, name)]
    assert statuses[0] == "interrupted" and statuses[-1] == "done"


def test_a_cancelled_point_is_submitted_again_and_a_killed_one_fails_then_retries(cluster, tmp_path, capsys):
    root = tmp_path / "sw"
    # 4800 steps: both points still running when the second one starts, on a quiet CPU too (2.8 ms/step;
    # with 2400 the first could finish before scancel landed)
    args = _sweep(root, "--steps", "4800", "--eval-every", "400", grid=("--seeds", "1,2"))
    assert main(args) == 0, capsys.readouterr().err
    sweep = load_sweep(root)
    a, b = sweep.names()
    _wait(root, lambda: all(runfolder.owner(sweep.runs / n) is not None for n in (a, b)), "both points to run")
    subprocess.run(["scancel", job_history(sweep, a)[-1]], check=True, timeout=30)
    os.kill(runfolder.owner(sweep.runs / b), signal.SIGKILL)  # a worker that dies: SLURM says FAILED
    _wait(root, lambda: all(_slurm_ended(job_history(sweep, n)[-1]) for n in (a, b)), "SLURM to end both jobs")
    capsys.readouterr()
    assert main(args[:2] + ["--status"]) == 0
    out = capsys.readouterr().out
    assert "failed" in out and f"SLURM job {job_history(sweep, b)[-1]} ended FAILED" in (root / "results.csv").read_text()
    assert main(args) == 1  # the cancelled point again; the failed one stays failed (exit 1 says so)
    assert len(job_history(sweep, a)) == 2 and len(job_history(sweep, b)) == 1
    assert main(args + ["--retry-failed"]) == 0  # the failed point; the cancelled one's new job is not doubled
    assert len(job_history(sweep, a)) == 2 and len(job_history(sweep, b)) == 2
    _wait(root, lambda: _all_ended(root) and point_status(root, b) == "done", "the failed point to finish")
    for n in (a, b):
        assert _steps(sweep.runs / n) == list(range(400, 4801, 400))


def test_bad_partition_and_gpus_are_one_line_and_submit_nothing(cluster, tmp_path, capsys):
    root = tmp_path / "sw"
    args = _sweep(root, "--steps", "20")
    args[args.index("debug")] = "nope"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("fastgrok: error: SLURM has no partition 'nope'; partitions: debug "
                           "(on the command line: --partition NAME)")
    assert not list((root / "state").glob("*.job"))
    assert main(_sweep(root, "--steps", "20", "--gpus-per-job", "1")) == 2
    err = capsys.readouterr().err
    assert "has no GPUs" in err and "--gpus-per-job" in err and len(err.strip().splitlines()) == 1
    assert not list((root / "state").glob("*.job"))


def test_a_controller_that_does_not_answer_is_unknown_and_nothing_is_submitted_twice(cluster, tmp_path, capsys,
                                                                                    monkeypatch):
    root = tmp_path / "sw"
    args = _sweep(root, "--steps", "1200", "--eval-every", "400", "--array-parallelism", "1",
                  grid=("--seeds", "1,2"))
    assert main(args) == 0, capsys.readouterr().err
    sweep = load_sweep(root)
    jobs = {n: job_history(sweep, n) for n in sweep.names()}
    # the same cluster seen through a config whose controller port nothing listens on
    dead = tmp_path / "dead.conf"
    text = re.sub(r"SlurmctldPort=\d+", "SlurmctldPort=1", (cluster / "slurm.conf").read_text())
    dead.write_text(text + "MessageTimeout=2\n")
    monkeypatch.setenv("SLURM_CONF", str(dead))
    t0 = time.time()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastgrok: error: the SLURM controller does not answer") and "nothing submitted" in err
    assert len(err.strip().splitlines()) == 1
    assert main(args[:2] + ["--status"]) == 0
    rows = [json.loads(line) for line in (root / "results.jsonl").read_text().splitlines()]
    assert {r["status"] for r in rows} <= {"unknown", "running"} and "unknown" in {r["status"] for r in rows}
    assert {n: job_history(sweep, n) for n in sweep.names()} == jobs
    print(f"controller down: answered in {time.time() - t0:.1f} s")
    monkeypatch.setenv("SLURM_CONF", str(cluster / "slurm.conf"))
    for job in {j[-1].split("_")[0] for j in jobs.values()}:
        subprocess.run(["scancel", job], timeout=30)
