import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from fastgrok import Config, train
from fastgrok.cli import main
from fastgrok.sweep import (PointJob, SweepOptions, get_engine, load_sweep, open_sweep, parse_grid, parse_time,
                            point_name, point_status, engine_states, run_row, run_sweep, settled, sweep_rows,
                            write_results)

TINY = dict(steps=40, eval_every=10)


def _rec(step, phase, ood=0.1, kshot=None):
    acc = {"not_learned": (0.1, 0.1, 0.1, 0.1), "id_memorization": (1, 0.1, 0.1, 0.1),
           "ood_generalization": (1, 1, 1, 1)}.get(phase, (1, 1, 0.1, 0.1))
    sets = {s: {"acc": a, "acc_last": a, "kshot": kshot or [a] * 4} for s, a in
            zip(("train", "id_test", "ood_train", "ood_test"), acc)}
    sets["ood_test"]["acc"] = ood
    return {"step": step, "phase": phase, "sets": sets}


# ---- grid ------------------------------------------------------------------------------------------
def test_grid_ranges_lists_and_seeds():
    g = parse_grid(["alpha=0.2:0.8:0.1", "n-id=8:512:*2", "mlp=relu,gelu"], seeds="1,2")
    assert g["alpha"] == [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]  # exact decimals, stop included
    assert g["n_id"] == [8, 16, 32, 64, 128, 256, 512] and g["mlp"] == ["relu", "gelu"] and g["seed"] == [1, 2]
    assert list(g) == ["alpha", "n_id", "mlp", "seed"]
    assert parse_grid(table={"depth": [2, 4], "lr": "1e-3,3e-3"}) == {"depth": [2, 4], "lr": [1e-3, 3e-3]}
    assert point_name({"n_id": 8, "alpha": 0.3, "seed": 1}) == "n_id-8_alpha-0.3_seed-1"


@pytest.mark.parametrize("spec, match", [
    (["alhpa=0.1,0.2"], "unknown config field 'alhpa'.*alpha"),
    (["alpha=0.8:0.2:0.1"], "empty"),
    (["alpha=0.2:0.8"], "start:stop:step"),
    (["alpha=0.2:0.8:0"], "step > 0"),
    (["alpha=0.2:x:0.1"], "not a number"),
    (["depth=2,2"], "repeated"),
    (["depth=2.5"], "depth=.*not an integer"),
    (["alpha"], "field=v1"),
    (["run_name=a,b"], "set by the sweep"),
    (["n_id=8", "n_pl=2"], "one axis"),
])
def test_grid_errors_name_the_problem(spec, match):
    with pytest.raises((ValueError, TypeError), match=match):
        parse_grid(spec)


def test_sweep_folder_refuses_another_base_or_grid_and_extends(tmp_path):
    root = tmp_path / "sw"
    cfg = Config.preset("tiny", **TINY)
    sweep, new = open_sweep(root, cfg, parse_grid(["alpha=0.4,0.6"], "1"))
    assert new == ["alpha-0.4_seed-1", "alpha-0.6_seed-1"]
    assert json.loads((root / "sweep.json").read_text())["grid"] == {"alpha": [0.4, 0.6], "seed": [1]}
    # same command: nothing new; a grid alone continues the saved base
    assert open_sweep(root, cfg, parse_grid(["alpha=0.4,0.6"], "1"))[1] == []
    assert open_sweep(root, None, parse_grid(["alpha=0.6,0.4"], "1"))[1] == []
    with pytest.raises(ValueError, match="another base config.*lr"):
        open_sweep(root, cfg.override(lr=1e-2), parse_grid(["alpha=0.4,0.6"], "1"))
    with pytest.raises(ValueError, match="axes"):
        open_sweep(root, cfg, parse_grid(["alpha=0.4,0.6"]))
    with pytest.raises(ValueError, match="leaves out"):
        open_sweep(root, cfg, parse_grid(["alpha=0.4"], "1"))
    sweep, new = open_sweep(root, cfg, parse_grid(["alpha=0.4,0.6,0.8"], "1,2"))
    assert sorted(new) == ["alpha-0.4_seed-2", "alpha-0.6_seed-2", "alpha-0.8_seed-1", "alpha-0.8_seed-2"]
    assert load_sweep(root).grid == {"alpha": [0.4, 0.6, 0.8], "seed": [1, 2]}
    c = sweep.config({"alpha": 0.8, "seed": 2})
    assert (c.task.alpha, c.train.seed, c.train.steps) == (0.8, 2, 40)
    assert c.train.out_dir == str(root / "runs") and c.train.run_name == "alpha-0.8_seed-2"


def test_impossible_point_is_refused_before_anything_starts(tmp_path, capsys):
    # p = 5 has 25 tasks: n_id = 24 leaves no o.o.d. task
    code = main(["sweep", str(tmp_path / "sw"), "--preset", "tiny", "--batch-size", "32", "--grid", "n_id=8,24"])
    err = capsys.readouterr().err
    assert code == 2 and "grid point n_id=24" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "sw").exists()
    # p = 7: the parallelogram construction cannot reach n_id = 32
    assert main(["sweep", str(tmp_path / "sw"), "--preset", "tiny", "--p", "7", "--batch-size", "32",
                 "--grid", "n_id=8,32", "--grid", "alpha=0.5,0.6"]) == 2
    assert "grid point n_id=32, alpha=0.5: parallelogram construction failed" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "none")]) == 2
    assert "not a sweep folder" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "sw2"), "--preset", "tiny", "--grid", "alpha=0.5", "--jobs", "0"]) == 2


def test_engines_registry_and_time():
    assert all(callable(get_engine(n).run) and callable(get_engine(n).held) for n in ("local", "slurm"))
    with pytest.raises(ValueError, match="unknown sweep engine 'lsf'; engines: local, slurm"):
        get_engine("lsf")
    assert [parse_time(t) for t in ("6:00:00", "90", "30:00", "1-12", "1-00:30:00")] == [360, 90, 30, 2160, 1470]
    with pytest.raises(ValueError, match="SLURM time"):
        parse_time("6h")


# ---- early stop and results on hand-made metrics ---------------------------------------------------
def test_settled_on_hand_made_metrics():
    h = [_rec(10, "id_memorization"), _rec(20, "ood_generalization"), _rec(30, "ood_generalization")]
    assert settled(h, 2) and not settled(h, 3) and settled(h, 1) and not settled(h[:2] + [_rec(30, "mixed")], 1)
    assert not settled([], 1) and not settled(h, 0)


def test_run_row_best_and_first_phase_steps(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    hist = [_rec(10, "id_memorization", 0.2), _rec(20, "ood_generalization", 0.97),
            _rec(30, "ood_memorization", 0.5), _rec(40, "id_memorization", 0.3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in hist) + '{"step": 50, "tor')
    (run / "config.json").write_text(json.dumps({"train": {"steps": 100, "phase_threshold": 0.9}}))
    row = run_row(run)
    assert row["steps"] == 40 and row["steps_total"] == 100  # the torn last line is skipped
    assert row["phase_final"] == "id_memorization" and row["phase_best"] == "ood_generalization"
    assert row["best_step"] == 20 and row["best_ood_test_acc"] == 0.97 and row["final_ood_test_acc"] == 0.3
    assert row["first_step_id_memorization"] == 10 and row["first_step_ood_generalization"] == 20
    assert row["first_step_ood_memorization"] == 30 and row["first_step_id_generalization"] is None


def test_train_stop_when_hook(tmp_path):
    cfg = Config.preset("tiny", out_dir=str(tmp_path), steps=50, eval_every=10)
    res = train(cfg, quiet=True, stop_when=lambda h: h[-1]["step"] >= 20)
    assert res.summary["stopped_early"] and res.summary["steps"] == 20 and not res.summary["finished"]
    assert json.loads((res.run_dir / "summary.json").read_text())["stopped_early"]
    assert [r["step"] for r in res.history] == [10, 20]
    full = train(cfg.override(run_name="full"), quiet=True)
    assert not full.summary["stopped_early"] and full.summary["finished"]


def test_worker_stops_a_settled_run(tmp_path):
    # a threshold every set meets at once: the run is 'settled' from its first evaluation
    sweep, _ = open_sweep(tmp_path / "sw", Config.preset("tiny", phase_threshold=1e-9, **TINY),
                          parse_grid(["seed=1"]), stop_when_settled=2)
    assert PointJob(sweep.root, "seed-1")() == "settled"
    row = sweep_rows(sweep)[0]
    assert row["status"] == "settled" and row["stopped_early"] and row["steps"] == 20
    assert row["first_step_ood_generalization"] == 10


def test_failed_point_recorded_and_resumed_point(tmp_path, monkeypatch, capsys):
    sweep, _ = open_sweep(tmp_path / "sw", Config.preset("tiny", **TINY), parse_grid(["seed=1,2"]))
    bad = sweep.runs / "seed-2"
    bad.mkdir(parents=True)
    (bad / "config.json").write_text(json.dumps(sweep.config({"seed": 2}).to_dict()))
    (bad / "last.pt").write_bytes(b"not a checkpoint")
    # seed-1 was interrupted at step 20 (as a kill would leave it)
    train(sweep.config({"seed": 1}), stop_at=20, quiet=True)
    assert point_status(sweep.root, "seed-1") == "interrupted"
    assert PointJob(sweep.root, "seed-1")() == "done"
    assert PointJob(sweep.root, "seed-2")() == "failed"
    rows = {r["name"]: r for r in write_results(sweep)}
    assert rows["seed-2"]["status"] == "failed" and "corrupt" in rows["seed-2"]["reason"]
    assert "\n" not in rows["seed-2"]["reason"]
    lines = [json.loads(l) for l in (sweep.runs / "seed-1" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [10, 20, 30, 40]
    attempts = [json.loads(l) for l in (sweep.state / "seed-1.attempts.jsonl").read_text().splitlines()]
    assert len(attempts) == 1 and attempts[0]["resumed"] and attempts[0]["status"] == "done"
    assert rows["seed-1"]["status"] == "done" and rows["seed-1"]["steps"] == 40
    csv = (sweep.root / "results.csv").read_text().splitlines()
    assert len(csv) == 3 and csv[0].startswith("name,seed,status,reason,steps")
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["sweep", str(sweep.root), "--status"]) == 0
    table = capsys.readouterr().out
    assert "1 done, 1 failed" in table and "40/40" in table and "corrupt" in table
    # a held lock: the point is running elsewhere and a second worker leaves it alone
    from fastgrok import runfolder
    (sweep.root / "state" / "seed-2.failed.json").unlink()
    with runfolder.lock(sweep.runs / "seed-2"):
        assert point_status(sweep.root, "seed-2") == "running"
        assert PointJob(sweep.root, "seed-2")() == "running"


# ---- end to end: the local executor, a killed driver -----------------------------------------------
def _sweep_cmd(root, *extra):
    return [sys.executable, "-m", "fastgrok", "sweep", str(root), "--preset", "tiny", "--steps", "300",
            "--eval-every", "20", "--grid", "alpha=0.4,0.6", "--seeds", "1,2", "--jobs", "2", "--no-plots", *extra]


def _wait_for(pred, timeout):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("kill", ["driver", "everything"])
def test_sweep_survives_sigkill(tmp_path, kill):
    """2 × 2 points, one corrupt (fails, recorded); SIGKILL the driver (its workers go on) or the whole
    process group (a reboot) mid-sweep; the same command again: every point finished exactly once."""
    root = tmp_path / "sw"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    names = [point_name({"alpha": a, "seed": s}) for a in (0.4, 0.6) for s in (1, 2)]
    drv = subprocess.Popen(_sweep_cmd(root), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           start_new_session=True)
    # corrupt one point once the folder exists: its worker finds a broken checkpoint
    assert _wait_for(lambda: (root / "sweep.json").is_file(), 120)
    bad = root / "runs" / names[3]
    bad.mkdir(parents=True, exist_ok=True)
    (bad / "config.json").write_text(json.dumps(load_sweep(root).config({"alpha": 0.6, "seed": 2}).to_dict()))
    (bad / "last.pt").write_bytes(b"garbage")
    started = lambda: any((root / "runs" / n / "last.pt").is_file() for n in names[:3])  # noqa: E731
    assert _wait_for(started, 120), drv.stderr.read().decode() if drv.poll() is not None else "no run started"
    if kill == "driver":
        os.kill(drv.pid, signal.SIGKILL)
    else:
        os.killpg(drv.pid, signal.SIGKILL)
    drv.wait()
    mid = {n: point_status(root, n) for n in names}
    assert not all(s in ("done", "failed") for s in mid.values()), mid  # killed mid-sweep
    again = subprocess.run(_sweep_cmd(root), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1, again.stderr  # one failed point
    assert "--retry-failed" in again.stderr
    for n in names[:3]:
        run = root / "runs" / n
        steps = [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(20, 301, 20)), (n, steps)  # none repeated, none lost
        assert torch.load(run / "last.pt", weights_only=True)["step"] == 300
        attempts = [json.loads(l) for l in (root / "state" / f"{n}.attempts.jsonl").read_text().splitlines()]
        assert [a["status"] for a in attempts].count("done") == 1, attempts
        assert json.loads((run / "summary.json").read_text())["finished"]
    rows = {r["name"]: r for r in sweep_rows(load_sweep(root))}
    assert [rows[n]["status"] for n in names] == ["done", "done", "done", "failed"]
    assert "corrupt" in rows[names[3]]["reason"]
    if kill == "everything":  # the workers died too: at least one point resumed from its checkpoint
        assert any(a.get("resumed") for n in names[:3]
                   for a in map(json.loads, (root / "state" / f"{n}.attempts.jsonl").read_text().splitlines()))
        return
    # fix the broken point and retry it: only it runs
    for f in bad.iterdir():
        f.unlink()
    retry = subprocess.run(_sweep_cmd(root, "--retry-failed"), env=env, capture_output=True, text=True, timeout=300)
    assert retry.returncode == 0, retry.stderr
    assert "launching 1 on local" in retry.stdout
    assert point_status(root, names[3]) == "done"


@pytest.mark.slow
def test_local_sweep_end_to_end_in_process(tmp_path):
    sweep, _ = open_sweep(tmp_path / "sw", Config.preset("tiny", **TINY), parse_grid(["alpha=0.4,0.6"], "1,2"))
    logs = []
    final = run_sweep(sweep, SweepOptions(jobs=2, plots=False), log=logs.append)
    assert set(final.values()) == {"done"} and len(final) == 4
    assert sum("start " in line for line in logs) == 4
    rows = [json.loads(l) for l in (sweep.root / "results.jsonl").read_text().splitlines()]
    assert [(r["alpha"], r["seed"]) for r in rows] == [(0.4, 1), (0.4, 2), (0.6, 1), (0.6, 2)]
    for r in rows:
        assert r["status"] == "done" and r["steps"] == 40 and r["steps_per_s"] > 0 and r["wall_s"] > 0
        assert 0 <= r["final_ood_test_acc_last"] <= 1 and r["phase_final"]
    logs.clear()
    assert run_sweep(sweep, SweepOptions(jobs=2, plots=False), log=logs.append) == final
    assert "launching 0" in logs[0]
    assert main(["sweep", str(sweep.root), "--status"]) == 0


# ---- SLURM without a cluster: the script submitit writes (tests/test_slurm.py has a real cluster) -----
FAKE = """#!/bin/sh
echo "$0 $@" >> "{log}"
case "$(basename $0)" in
  sbatch) cp "$1" "{rec}/script.sh"; echo "Submitted batch job 4242";;
  squeue) cat "{rec}/squeue.txt" 2>/dev/null;;
  sinfo) echo "gpu:4";;
  scontrol) echo "AccountingStorageType   = accounting_storage/none";;
esac
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    rec = tmp_path / "slurm"
    (rec / "bin").mkdir(parents=True)
    for tool in ("sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel"):
        p = rec / "bin" / tool
        p.write_text(FAKE.format(log=rec / "calls.log", rec=rec))
        p.chmod(0o755)
    monkeypatch.setenv("PATH", f"{rec / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return rec


def test_slurm_array_script_and_resume(tmp_path, fake_slurm, capsys):
    root = tmp_path / "sw"
    args = ["sweep", str(root), "--preset", "tiny", "--steps", "40", "--grid", "alpha=0.4,0.6", "--seeds", "1,2",
            "--engine", "slurm", "--partition", "gpu", "--gpus-per-job", "1", "--time", "6:00:00",
            "--array-parallelism", "2", "--no-plots"]
    assert main(args) == 0, capsys.readouterr().err
    assert "submitted SLURM array 4242: 4 point(s)" in capsys.readouterr().out
    script = (fake_slurm / "script.sh").read_text()
    for line in ("#SBATCH --array=0-3%2", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --time=360", "#SBATCH --signal=USR2@120", "#SBATCH --nodes=1"):
        assert line in script, line
    assert "-m submitit.core._submit" in script and str(root / ".submitit") in script and "srun" in script
    sweep = load_sweep(root)
    names = sweep.names()
    assert [(sweep.state / f"{n}.job").read_text().strip() for n in names] == [f"4242_{i}" for i in range(4)]
    # each array task runs one point; requeued (timeout, preemption) it runs the same point again
    from submitit.core.utils import DelayedSubmission
    pickles = sorted((root / ".submitit").glob("4242_*/*_submitted.pkl"))
    assert len(pickles) == 4
    jobs = [DelayedSubmission.load(p).function for p in pickles]
    assert sorted(j.name for j in jobs) == sorted(names)
    requeued = jobs[0].checkpoint()
    assert isinstance(requeued.function, PointJob) and requeued.function.name == jobs[0].name
    assert requeued.function() == "done"  # the array task's work, in process: trains the point
    # again while the rest is queued: nothing is submitted twice
    (fake_slurm / "squeue.txt").write_text("".join(f"4242_{i}|PENDING\n" for i in range(4)))
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "3 point(s) already queued" in out and "nothing to submit" in out
    assert (fake_slurm / "calls.log").read_text().count("sbatch") == 1
    rows = {r["name"]: r["status"] for r in sweep_rows(sweep, engine_states(sweep))}
    assert rows[jobs[0].name] == "done" and sorted(rows.values()) == ["done", "queued", "queued", "queued"]
    # jobs cancelled: submitted again, as a new array of what is left, every job id kept
    (fake_slurm / "squeue.txt").write_text("".join(f"4242_{i}|CANCELLED\n" for i in range(4)))
    assert main(args) == 0
    assert "submitted SLURM array 4242: 3 point(s)" in capsys.readouterr().out
    assert "#SBATCH --array=0-2%2" in (fake_slurm / "script.sh").read_text()
    assert [len((sweep.state / f"{n}.job").read_text().split()) for n in names] == [1, 2, 2, 2]


def test_slurm_needs_partition_and_tools(tmp_path, monkeypatch, capsys):
    root = tmp_path / "sw"
    code = main(["sweep", str(root), "--preset", "tiny", "--grid", "seed=1", "--engine", "slurm", "--no-plots"])
    assert code == 2 and "--partition" in capsys.readouterr().err
    assert not root.exists()  # a bad option leaves no sweep folder behind
    code = main(["sweep", str(root), "--preset", "tiny", "--grid", "seed=1", "--engine", "slurm", "--partition", "x",
                 "--time", "2", "--no-plots"])
    assert code == 2 and "requeue at once" in capsys.readouterr().err and not root.exists()
    from fastgrok.config import FieldError
    with pytest.raises(FieldError, match=r"needs a partition \(SlurmOptions.partition\)") as e:  # a Python caller
        run_sweep(open_sweep(root, Config.preset("tiny"), parse_grid(["seed=1"]))[0],
                  SweepOptions(engine="slurm", plots=False), log=lambda _: None)
    assert e.value.field == "partition" and "--" not in str(e.value)
    monkeypatch.setenv("PATH", str(tmp_path))
    code = main(["sweep", str(root), "--preset", "tiny", "--grid", "seed=1", "--engine", "slurm", "--partition", "x",
                 "--no-plots"])
    assert code == 2 and "sbatch and srun" in capsys.readouterr().err


def test_toml_grid(tmp_path):
    toml = tmp_path / "fig.toml"
    toml.write_text('preset = "tiny"\nsteps = 30\n[train]\nlr = 2e-3\n[grid]\nalpha = "0.4:0.6:0.1"\nseed = [1, 2]\n')
    assert main(["sweep", str(tmp_path / "sw"), "--config", str(toml), "--eval-every", "15", "--status"]) == 2
    from fastgrok.config import config_and_grid_from_toml
    cfg, table = config_and_grid_from_toml(toml, {"eval_every": 15})
    assert (cfg.train.steps, cfg.train.lr, cfg.train.eval_every, cfg.task.p) == (30, 2e-3, 15, 5)
    sweep, new = open_sweep(tmp_path / "sw", cfg, parse_grid(table=table))
    assert sweep.grid == {"alpha": [0.4, 0.5, 0.6], "seed": [1, 2]} and len(new) == 6
    toml.write_text('preset = "tiny"\ngrid = 3\n')
    with pytest.raises(ValueError, match="grid must be a table"):
        config_and_grid_from_toml(toml, {})
    toml.write_text('preset = "tiny"\n[model]\nlr = 1\n')
    with pytest.raises(ValueError, match="belongs in"):
        config_and_grid_from_toml(toml, {})


def test_unwritable_sweep_folder_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["sweep", str(blocker / "sw"), "--preset", "tiny", "--grid", "seed=1", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastgrok: error:") and str(blocker) in err and len(err.strip().splitlines()) == 1


def test_local_slots_one_gpu_each_or_threads_split(monkeypatch):
    from fastgrok.sweep import engines
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert engines.local_slots(2)[0] == [[3], [5]]
    with pytest.raises(ValueError, match="at most jobs=2"):
        engines.local_slots(3)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert engines.local_slots(2) == ([[], []], 4) and engines.local_slots(16) == ([[]] * 16, 1)


@pytest.mark.slow
def test_killed_worker_is_recorded_and_retried(tmp_path):
    """kill -9 of a run (not the driver): the point is recorded as failed with a one-line reason, the
    driver goes on; --retry-failed resumes it from its last.pt."""
    import threading
    sweep, _ = open_sweep(tmp_path / "sw", Config.preset("tiny", steps=300, eval_every=10), parse_grid(["seed=1"]))
    run = sweep.runs / "seed-1"
    lock = run / ".lock"  # the run folder's lock holds the training process's pid

    def kill_worker():
        if _wait_for(lambda: (run / "last.pt").is_file() and lock.is_file() and lock.read_text().strip(), 120):
            os.kill(int(lock.read_text().split()[0]), signal.SIGKILL)

    killer = threading.Thread(target=kill_worker)
    killer.start()
    final = run_sweep(sweep, SweepOptions(jobs=1, plots=False), log=lambda _: None)
    killer.join()
    assert final == {"seed-1": "failed"}
    reason = sweep_rows(sweep)[0]["reason"]
    assert reason.startswith("worker died") and "\n" not in reason
    step = torch.load(run / "last.pt", weights_only=True)["step"]
    assert 0 < step < 300
    final = run_sweep(sweep, SweepOptions(jobs=1, plots=False, retry_failed=True), log=lambda _: None)
    assert final == {"seed-1": "done"}
    steps = [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(10, 301, 10))
    attempts = [json.loads(l) for l in (sweep.state / "seed-1.attempts.jsonl").read_text().splitlines()]
    assert [a["status"] for a in attempts] == ["done"] and attempts[0]["resumed"]


def test_bad_grids_and_options_are_one_line_and_leave_nothing(tmp_path, capsys):
    """#21's battery: each a one-line error, exit 2, and no sweep folder made."""
    root = tmp_path / "sw"
    cases = [
        (["--grid", "alpha=nan:1:0.1"], "'nan' is not a finite number"),
        (["--grid", "alpha=0:1:inf"], "'inf' is not a finite number"),
        (["--grid", "lr=0:1:0.00001"], "gives more than 10,000 values"),
        (["--grid", "seed=1:200:1", "--grid", "alpha=0.01:1:0.01"], "the grid has 20,000 points (200 × 100)"),
        (["--grid", "seed=1,2", "--seed", "3"], "seed is given a fixed value and made a grid axis"),
        (["--grid", "n_id=8,16", "--n-pl", "4"], "n_id is given a fixed value and made a grid axis"),
        (["--grid", "seed=1", "--jobs", "0"], "jobs=0 must be an integer ≥ 1"),
        (["--grid", "seed=1", "--engine", "lsf"], "unknown sweep engine 'lsf'"),
        (["--grid", "seed=1", "--stop-when-settled", "0"], "stop_when_settled=0 must be an integer ≥ 1"),
    ]
    for extra, message in cases:
        assert main(["sweep", str(root), "--preset", "tiny", "--no-plots", *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and err.startswith("fastgrok: error:"), err
        assert not root.exists(), extra
    toml = tmp_path / "g.toml"
    toml.write_text('preset = "tiny"\nseed = 4\n[grid]\nseed = [1, 2]\n')
    assert main(["sweep", str(root), "--config", str(toml)]) == 2
    assert "seed is both fixed and in [grid]" in capsys.readouterr().err and not root.exists()
    # an existing sweep: a bad --stop-when-settled is refused and not saved
    assert main(["sweep", str(root), "--preset", "tiny", "--steps", "10", "--eval-every", "10", "--seeds", "1",
                 "--no-plots", "--quiet"]) == 0
    assert main(["sweep", str(root), "--stop-when-settled", "0"]) == 2
    assert load_sweep(root).stop_when_settled is None
    capsys.readouterr()
    assert main(["sweep", str(root), "--no-plots", "--quiet"]) == 0


def test_damaged_metrics_and_stale_results_files(tmp_path, capsys):
    """A record without sets, a garbage line in the middle, a non-object line: the table and the figures
    name the file instead of crashing; a killed writer's old temporary files are cleaned up (#21)."""
    sweep, _ = open_sweep(tmp_path / "sw", Config.preset("tiny", **TINY), parse_grid(["seed=1,2,3"]))
    lines = {"seed-1": json.dumps({"step": 10, "x": 1}) + "\n",
             "seed-2": json.dumps(_rec(10, "mixed")) + "\nnot json\n" + json.dumps(_rec(20, "mixed")) + "\n",
             "seed-3": "[1, 2]\n" + json.dumps(_rec(10, "mixed")) + "\n"}
    for name, text in lines.items():
        run = sweep.runs / name
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps(sweep.config(sweep.point_of(name)).to_dict()))
        (run / "metrics.jsonl").write_text(text)
    stale = sweep.root / ".results.csv.abc123.tmp"
    stale.write_text("half")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    fresh = sweep.root / ".results.jsonl.def456.tmp"  # a live writer's
    fresh.write_text("half")
    assert main(["sweep", str(sweep.root), "--status"]) == 0
    rows = {r["name"]: r for r in write_results(sweep)}
    assert "the record of step 10 lacks the four sets' metrics" in rows["seed-1"]["reason"]
    assert "line 2 is corrupt" in rows["seed-2"]["reason"] and "line 1 is corrupt" in rows["seed-3"]["reason"]
    assert not stale.exists() and fresh.exists()
    assert main(["plot", str(sweep.runs / "seed-1")]) == 2
    err = capsys.readouterr().err
    assert "lacks the four sets' metrics" in err and len(err.strip().splitlines()) == 1


def test_a_local_sweep_folder_on_a_partition_of_other_nodes_is_warned(tmp_path, fake_slurm, monkeypatch):
    from fastgrok.sweep import engines
    (fake_slurm / "bin" / "sinfo").write_text('#!/bin/sh\necho "node1"\necho "node2"\n')
    warning = engines.local_folder_warning(tmp_path, "gpu")
    if warning is None:  # tmp_path on a shared (network) file system: nothing to warn about
        import subprocess
        fs = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True, text=True).stdout.strip()
        assert fs not in engines.LOCAL_FS
    else:
        assert "is on a local file system" in warning and "node1, node2" in warning
    monkeypatch.setattr("socket.gethostname", lambda: "node1")
    (fake_slurm / "bin" / "sinfo").write_text('#!/bin/sh\necho "node1"\n')
    assert engines.local_folder_warning(tmp_path, "gpu") is None  # one node, this one: nothing to share
