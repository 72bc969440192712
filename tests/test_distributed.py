"""DDP: a rank's rows of the global batch, and 2-rank torchrun runs (gloo, CPU) against one process."""
import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastgrok import Config, train
from fastgrok import distributed
from fastgrok.backends import get_op
from fastgrok.bench.core import read_rows
from fastgrok.data import generate_batch, split_source
from fastgrok.distributed import SINGLE, Dist
from fastgrok.tasks import make_tasks

ROOT = Path(__file__).resolve().parent.parent
SETS = ("train", "id_test", "ood_train", "ood_test")


def _dist(rank: int, world: int, **kw) -> Dist:
    return Dist(rank=rank, world_size=world, local_rank=rank, backend="gloo", **kw)


# ---- a rank's rows, without a process group -------------------------------------------------------
@pytest.mark.parametrize("sampling", ["iid", "distinct", "paper"])
@pytest.mark.parametrize("world", [1, 2, 4])
def test_rank_rows_are_the_global_batch(sampling, world):
    cfg = Config.preset("tiny", sampling=sampling, batch_size=24)
    tasks = make_tasks(cfg.task)
    for src in (split_source(cfg, tasks, "train", "cpu", training=True), split_source(cfg, tasks, "ood_test", "cpu")):
        for step in (0, 7, 123_457):
            whole = generate_batch(src, step)
            parts = [_dist(r, world).batch(generate_batch, src, step) for r in range(world)]
            assert all(p.shape == (24 // world, whole.shape[1]) for p in parts)
            assert torch.equal(torch.cat(parts), whole)
            tasks_of_rows = torch.cat([_dist(r, world).shard(src.row_tasks(step)) for r in range(world)])
            assert torch.equal(tasks_of_rows, src.row_tasks(step))


@pytest.mark.parametrize("sampling", ["iid", "distinct", "paper"])
def test_rank_rows_with_the_batch_kernel(sampling):
    """The fused batchgen (Triton's interpreter here) gives each rank the same rows as the reference."""
    fused = get_op("batchgen", "fused")
    cfg = Config.preset("tiny", sampling=sampling, batch_size=16)
    src = split_source(cfg, make_tasks(cfg.task), "train", "cpu", training=True)
    whole = generate_batch(src, 5)
    assert torch.equal(torch.cat([_dist(r, 2).batch(fused, src, 5) for r in range(2)]), whole)


def test_one_process_is_the_identity():
    cfg = Config.preset("tiny")
    src = split_source(cfg, make_tasks(cfg.task), "train", "cpu", training=True)
    assert not SINGLE.enabled and SINGLE.is_main
    assert torch.equal(SINGLE.batch(generate_batch, src, 3), generate_batch(src, 3))
    t = torch.arange(5.0)
    assert SINGLE.shard(t) is t and SINGLE.mean(t) is t
    assert SINGLE.on_main(lambda: 7) == 7 and SINGLE.gather("x") == ["x"]
    SINGLE.check_batch(7)
    assert SINGLE.report(ValueError("bad")) == "bad"


def test_batch_must_divide_over_the_ranks():
    with pytest.raises(ValueError, match=r"batch_size=15 does not divide over 2 ranks"):
        _dist(0, 2).check_batch(15)
    assert _dist(1, 4).rows(16) == slice(4, 8)


def test_device_errors():
    with pytest.raises(ValueError, match="dist_backend='nccl' needs CUDA devices"):
        _dist(0, 2, requested="nccl").device("cpu")
    with pytest.raises(ValueError, match="pins every rank to one GPU"):
        _dist(1, 2).device("cuda:0")
    assert _dist(1, 2).device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert _dist(1, 2).device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            _dist(1, 2).device("cuda")


def test_launch_outside_torchrun(monkeypatch):
    for v in distributed.ENV_VARS:
        monkeypatch.delenv(v, raising=False)
    with distributed.launched() as d:
        assert d is SINGLE and distributed.current() is SINGLE
    with pytest.raises(ValueError, match="is for runs launched with torchrun"):
        with distributed.launched("gloo"):
            pass
    with pytest.raises(ValueError, match="dist_backend='mpi' is not one of"):
        with distributed.launched("mpi"):
            pass
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match="runs under torchrun"):
        train(Config.preset("tiny"), quiet=True)
    monkeypatch.setenv("RANK", "two")
    with pytest.raises(ValueError, match="must be integers"):
        distributed.torchrun_env()


# ---- torchrun, 2 ranks, gloo ----------------------------------------------------------------------
def _torchrun(script: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def _tiny(out: Path, **kw) -> Config:
    return Config.preset("tiny", out_dir=str(out), steps=30, **kw)


LAUNCHER = """
import json, sys
from datetime import timedelta
from pathlib import Path
from fastgrok import Config, distributed, train

out = Path(sys.argv[1])
cfg = lambda **kw: Config.preset("tiny", out_dir=str(out), steps=30, **kw)
res = {}
with distributed.launched(error_timeout=timedelta(seconds=3)) as d:
    res["full"] = train(cfg(run_name="ddp-full"), quiet=True).losses
    res["half"] = train(cfg(run_name="ddp-half"), stop_at=15, quiet=True).losses
    res["rest"] = train(resume=out / "one-half", quiet=True).losses  # a 1-process run, resumed on 2 ranks
    # stop_when: rank 0's answer holds on every rank (rank 1's own would never stop)
    stopped = train(cfg(run_name="ddp-stop", eval_every=10), quiet=True,
                    stop_when=lambda h: d.is_main and h[-1]["step"] >= 10)
    res["stop"] = [len(stopped.losses), stopped.summary["stopped_early"]]
    for name, call in [("odd", lambda: train(cfg(run_name="odd", batch_size=15), quiet=True)),
                       ("missing", lambda: train(resume=out / "no-such-run", quiet=True))]:
        try:
            call()
        except ValueError as e:  # every rank raises it; rank 0 alone reports it
            res[name] = [type(e).__name__, str(e), d.report(e)]
    # rank 0 alone owns a run folder: one owned elsewhere (here by rank 0 itself) is refused on every rank alike
    from fastgrok import runfolder
    held = runfolder.lock(out / "ddp-half") if d.is_main else None
    try:
        train(resume=out / "ddp-half", quiet=True)
    except ValueError as e:
        res["busy"] = [type(e).__name__, str(e)]
    if held is not None:
        held.release()
    # the training benchmark under torchrun: rank 0 records the rows
    from fastgrok.bench import train as bench_train
    from fastgrok.bench.core import Recorder
    rec = Recorder(out / "bench" / "train.csv" if d.is_main else None, log=None)
    bench_train.run(d.device("cpu"), rec, quick=True, compile="off", providers=("reference",))
    if d.rank == 1:  # an error on one rank only: after the timeout that rank reports it itself
        res["lone"] = d.report(ValueError("only rank 1 failed"))
    d.gather(None)  # rank 0 waits here meanwhile
    res["after"] = d.report(ValueError("then both failed"))  # the lone error left the ranks' reports in step
    everything = d.gather(res)
    if d.is_main:
        (out / "results.json").write_text(json.dumps(everything))
"""


def test_two_ranks_train_the_one_process_run(tmp_path):
    one_half = train(_tiny(tmp_path, run_name="one-half"), stop_at=15, quiet=True)
    script = tmp_path / "launch.py"
    script.write_text(LAUNCHER)
    r = _torchrun(script, str(tmp_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ranks = json.loads((tmp_path / "results.json").read_text())
    one_full = train(_tiny(tmp_path, run_name="one-full"), quiet=True)

    # Two short trajectories (30 steps at lr 1e-3) compared: two ranks average two half-batch gradients, one
    # process takes the mean over the whole batch, so they differ by rounding, and 30 such steps stay close on
    # any CPU (measured: losses 1.5e-7 relative, parameters 6e-8, on ATen's default, AVX2 and AVX-512 paths);
    # the bounds sit far below what one step changes (parameters by up to 1e-3 at this lr).
    def close(a, b, rel=1e-6):
        assert len(a) == len(b) and all(abs(x - y) <= rel * abs(y) for x, y in zip(a, b)), (a, b)

    for res in ranks:  # every rank reports the global batch's loss
        close(res["full"], one_full.losses)
        close(res["half"], one_full.losses[:15])
        close(one_half.losses + res["rest"], one_full.losses)  # 1 rank → 2 ranks
    rest = train(resume=tmp_path / "ddp-half", quiet=True)  # 2 ranks → 1 rank
    close(ranks[0]["half"] + rest.losses, one_full.losses)

    one = torch.load(tmp_path / "one-full" / "last.pt")["model"]
    for run in ("ddp-full", "ddp-half", "one-half"):  # 2 ranks; 2 ranks then 1; 1 then 2
        got = torch.load(tmp_path / run / "last.pt")
        assert got["step"] == 30
        for k, v in one.items():
            torch.testing.assert_close(got["model"][k], v, atol=1e-5, rtol=0)

    # evaluation: split over the ranks and summed; counts and accuracies exact, losses to float rounding
    hist = lambda run: [json.loads(l) for l in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    h1, h2 = hist("one-full"), hist("ddp-full")
    assert [r["step"] for r in h2] == [r["step"] for r in h1] == [10, 20, 30]
    for a, b in zip(h1, h2):
        assert a["phase"] == b["phase"] and a["lr"] == b["lr"] and a["tokens"] == b["tokens"]
        for s in SETS:
            ma, mb = a["sets"][s], b["sets"][s]
            for k in ("acc", "acc_last", "task_mean_acc", "task_mean_acc_last", "kshot", "task_acc", "task_acc_last",
                      "n_seqs"):
                assert ma[k] == mb[k], (s, k)
            close([ma["loss"], ma["loss_last"]], [mb["loss"], mb["loss_last"]])
    close([r["train_loss"] for r in h2], [r["train_loss"] for r in h1])

    # rank 0 alone wrote (and locked: a second rank taking the lock would fail as RunFolderBusy) the run
    # folder; env.json says how it ran
    env = json.loads((tmp_path / "ddp-full" / "env.json").read_text())
    assert env["world_size"] == 2 and env["dist_backend"] == "gloo"
    assert {p.name for p in (tmp_path / "ddp-full").iterdir()} == \
        {".lock", "config.json", "env.json", "metrics.jsonl", "last.pt", "best.pt", "summary.json"}
    assert json.loads((tmp_path / "one-half" / "env-resume-15.json").read_text())["world_size"] == 2

    # bad input: the same error on both ranks, one line (rank 0's); an error on one rank alone: its own line
    for res in ranks:
        assert res["odd"][:2] == ["ValueError", "batch_size=15 does not divide over 2 ranks (WORLD_SIZE): the global "
                                                "batch is split evenly, so use a multiple of 2"]
        assert res["missing"][0] == "RunFolderError" and "does not exist" in res["missing"][1]
        assert res["busy"][0] == "RunFolderBusy" and "ddp-half" in res["busy"][1]
        assert res["stop"] == [10, True]
    assert ranks[0]["odd"][2] == ranks[0]["odd"][1] and ranks[1]["odd"][2] is None
    assert ranks[0]["missing"][2] == ranks[0]["missing"][1] and ranks[1]["missing"][2] is None
    assert ranks[1]["lone"] == "rank 1: only rank 1 failed" and "lone" not in ranks[0]
    assert [res["after"] for res in ranks] == ["then both failed", None]
    assert not (tmp_path / "odd").exists()

    rows = read_rows(tmp_path / "bench" / "train.csv")
    assert [(r["provider"], r["unit"]) for r in rows] == [("reference-ddp2", u) for u in ("ms", "steps/s", "tokens/s",
                                                                                           "TFLOP/s")]


THREADS = """
import json, os, sys
from fastgrok import distributed
threads = lambda: len(os.listdir("/proc/self/task"))
before = threads()
with distributed.launched() as d:
    inside = threads()
    for i in range(5):
        d.gather(i)
print(json.dumps([d.rank, before, inside, threads()]), flush=True)
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_leaving_the_group_joins_its_threads(tmp_path):
    """Nothing of gloo's outlives `launched()`: a worker thread dropping a finished collective while the
    interpreter shuts down aborts the process (it did, 1 run in 10, before the groups were destroyed here)."""
    script = tmp_path / "threads.py"
    script.write_text(THREADS)
    r = _torchrun(script)
    assert r.returncode == 0, r.stderr[-3000:]
    # each rank prints one JSON list; two ranks writing at once can share a line ("[0, …][1, …]")
    rows = sorted(json.loads(m) for m in re.findall(r"\[[^\[\]]*\]", r.stdout))
    assert [row[0] for row in rows] == [0, 1]
    for rank, before, inside, after in rows:
        assert inside > before and after == before, (rank, before, inside, after)


FAILING = """
import importlib, sys, time
from pathlib import Path
import torch.distributed as dist
from fastgrok.cli import main

train_mod = importlib.import_module("fastgrok.trainer")
step_fn = train_mod.train_step

def train_step(sess, step, *args):  # a test-only failure on rank 1 at step 5
    if dist.get_rank() == 1 and step == 5:
        Path(sys.argv[1], "failed_at").write_text(repr(time.time()))
        raise RuntimeError("forced failure on rank 1 at step 5")
    return step_fn(sess, step, *args)

train_mod.train_step = train_step
sys.exit(main(["train", "--preset", "tiny", "--steps", "100000", "--eval-every", "100000", "--quiet",
               "--out-dir", sys.argv[1], "--run-name", "boom"]))
"""


def test_a_failing_rank_ends_the_run(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(FAILING)
    r = _torchrun(script, str(tmp_path))
    ended = time.time()
    assert r.returncode != 0
    assert "forced failure on rank 1 at step 5" in r.stdout + r.stderr
    failed_at = float((tmp_path / "failed_at").read_text())
    assert ended - failed_at < 30, f"the run took {ended - failed_at:.1f}s to end after rank 1 failed"
    assert not (tmp_path / "boom" / "summary.json").exists()


INTERRUPTED = """
import importlib, sys
from pathlib import Path
import torch.distributed as dist
from fastgrok.cli import main

train_mod = importlib.import_module("fastgrok.trainer")
step_fn = train_mod.train_step

def train_step(sess, step, *args):  # tells the test when training runs
    if dist.get_rank() == 0 and step == 20:
        Path(sys.argv[1], "running").write_text("")
    return step_fn(sess, step, *args)

train_mod.train_step = train_step
sys.exit(main(["train", "--preset", "tiny", "--steps", "100000", "--eval-every", "100000", "--quiet",
               "--out-dir", sys.argv[1], "--run-name", "stopped"]))
"""


def test_ctrl_c_under_torchrun_saves_the_same_step_on_every_rank(tmp_path):
    """Ctrl-C reaches torchrun, which passes SIGINT on to each rank: the ranks agree at their next flush
    (every train.LOG_EVERY steps) and stop after the same step; rank 0 saves it and says so once."""
    from fastgrok.trainer import LOG_EVERY
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(script), str(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.time() + 180
        while not (tmp_path / "running").exists():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    said = [l for l in (out + err).splitlines() if l.startswith("fastgrok: interrupted")]
    assert len(said) == 1, err[-3000:]
    ckpt = torch.load(tmp_path / "stopped" / "last.pt")
    step = ckpt["step"]
    assert step >= 20 and step % LOG_EVERY == 0 and f"interrupted at step {step}; saved" in said[0]
    one = train(Config.preset("tiny", out_dir=str(tmp_path), run_name="one", steps=100000, eval_every=100000),
                stop_at=step, quiet=True)
    # the saved state is that step's: a neighbouring step differs by up to 1e-3 (measured, step 50 → 51); two
    # ranks against one process, by rounding only (see test_two_ranks_train_the_one_process_run)
    for k, v in torch.load(one.run_dir / "last.pt")["model"].items():
        torch.testing.assert_close(ckpt["model"][k], v, atol=1e-5, rtol=0)


def test_cli_bad_input_is_one_line_from_rank_0(tmp_path):
    script = tmp_path / "cli.py"
    script.write_text("import sys\nfrom fastgrok.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    r = _torchrun(script, "train", "--preset", "tiny", "--batch-size", "15", "--out-dir", str(tmp_path / "runs"))
    assert r.returncode != 0
    lines = [l for l in (r.stdout + r.stderr).splitlines() if "fastgrok: error" in l]
    assert lines == ["fastgrok: error: batch_size=15 does not divide over 2 ranks (WORLD_SIZE): the global batch "
                     "is split evenly, so use a multiple of 2"], r.stderr[-3000:]
    # torchrun's report: rank 0 exited with 2 (rank 1 too, unless torchrun's SIGTERM came first) …
    assert "rank      : 0" in r.stderr and "exitcode  : 2" in r.stderr and "exitcode  : 1 " not in r.stderr
    assert str(ROOT / "fastgrok") not in r.stderr  # … and no traceback of ours (torchrun prints its own)
    assert not (tmp_path / "runs").exists()
