"""The run folder: creation, the one-owner lock, history reading with torn lines, status, clean-up."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastgrok import Config, runfolder
from fastgrok.runfolder import RunFolderBusy, RunFolderError

ROOT = Path(__file__).resolve().parent.parent


def _cfg(tmp_path, **kw):
    return Config.preset("tiny", out_dir=str(tmp_path), **kw)


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process that owns the folder until killed; returns once it holds the lock."""
    code = ("import sys, time; from fastgrok import runfolder; lk = runfolder.lock(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_create_writes_config_and_locks(tmp_path):
    cfg = _cfg(tmp_path, run_name="a")
    with runfolder.create(cfg) as run:
        assert run.path == tmp_path / "a" and run.created
        assert runfolder.load_config(run.path) == cfg
        assert runfolder.owner(run.path) == os.getpid()
        assert runfolder.status(run.path)["state"] == "running"
        with pytest.raises(RunFolderBusy, match=f"in use by process {os.getpid()}"):
            runfolder.lock(run.path)
    assert runfolder.owner(tmp_path / "a") is None
    st = runfolder.status(tmp_path / "a")
    assert st["state"] == "new" and st["step"] == 0 and st["steps"] == cfg.train.steps


def test_named_folder_holding_a_run_is_refused_but_an_empty_one_is_reused(tmp_path):
    runfolder.create(_cfg(tmp_path, run_name="a")).close()
    with pytest.raises(RunFolderError, match="already holds a run: resume it with `fastgrok train --resume"):
        runfolder.create(_cfg(tmp_path, run_name="a"))
    left = tmp_path / "b"
    left.mkdir()
    (left / ".config.json.x1.tmp").write_text("{")  # a kill between mkdir and the first write
    with runfolder.create(_cfg(tmp_path, run_name="b")) as run:
        assert run.stale_removed == [".config.json.x1.tmp"]
    auto = runfolder.create(_cfg(tmp_path))
    auto2 = runfolder.create(_cfg(tmp_path))  # same second, same config: a suffix
    assert auto2.path != auto.path and auto2.path.name.startswith(auto.path.name)
    auto.close(), auto2.close()


def test_second_owner_is_refused_and_a_dead_owner_is_taken_over(tmp_path):
    run = runfolder.create(_cfg(tmp_path, run_name="a"))
    run.close()
    proc = _hold_lock(run.path)
    try:
        with pytest.raises(RunFolderBusy, match=f"in use by process {proc.pid}"):
            runfolder.open_run(run.path)
        assert runfolder.status(run.path) | {"owner": proc.pid} == runfolder.status(run.path)
        assert runfolder.status(run.path)["state"] == "running"
    finally:
        proc.send_signal(signal.SIGKILL)  # kill -9: the lock file stays, its flock goes with the process
        proc.wait()
    assert (run.path / ".lock").read_text().strip() == str(proc.pid)
    with runfolder.open_run(run.path) as again:
        assert (run.path / ".lock").read_text().strip() == str(os.getpid()) and again.cfg == run.cfg


def test_open_run_removes_stale_tmp_files(tmp_path):
    run = runfolder.create(_cfg(tmp_path, run_name="a"))
    run.close()
    for name in (".last.pt.abc123.tmp", ".metrics.jsonl.q.tmp"):
        (run.path / name).write_bytes(b"\0" * 10)
    (run.path / "notes.tmp").write_text("mine")  # not one of ours: kept
    with runfolder.open_run(run.path) as again:
        assert sorted(again.stale_removed) == [".last.pt.abc123.tmp", ".metrics.jsonl.q.tmp"]
    assert sorted(p.name for p in run.path.iterdir()) == [".lock", "config.json", "notes.tmp"]


def _write_metrics(run_dir: Path, text: str) -> None:
    (run_dir / "metrics.jsonl").write_text(text)


def test_read_history_torn_lines(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    rec = lambda s: json.dumps({"step": s, "x": 1.0}) + "\n"  # noqa: E731
    _write_metrics(d, rec(10) + rec(20) + rec(30)[:9])  # a torn append of step 30
    assert [r["step"] for r in runfolder.read_history(d)] == [10, 20]
    assert [r["step"] for r in runfolder.read_history(d, upto=20)] == [10, 20]
    assert [r["step"] for r in runfolder.read_history(d, upto=10)] == [10]
    _write_metrics(d, rec(10) + rec(20) + '{"st')  # torn before its step is readable: still the last line
    assert [r["step"] for r in runfolder.read_history(d, upto=20)] == [10, 20]
    _write_metrics(d, rec(10) + rec(20)[:12] + "\n" + rec(30))  # torn line 2, before the checkpoint
    with pytest.raises(RunFolderError, match=r"metrics.jsonl line 2 is corrupt .* at or before the checkpoint's step 30"):
        runfolder.read_history(d, upto=30)
    assert [r["step"] for r in runfolder.read_history(d, upto=10)] == [10]  # step 20 > 10: dropped anyway
    with pytest.raises(RunFolderError, match="line 2"):
        runfolder.read_history(d)
    _write_metrics(d, "")
    assert runfolder.read_history(d) == [] and runfolder.read_history(tmp_path / "none") == []


def test_write_errors_name_the_file_and_what_is_kept(tmp_path, monkeypatch):
    run = runfolder.create(_cfg(tmp_path, run_name="a"))

    def full(path, data):
        with open(path, "ab") as f:
            f.write(data[: len(data) // 2])  # a half line, as a full disk leaves it
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runfolder, "_append_bytes", full)
    with pytest.raises(RunFolderError, match=r"cannot write .*metrics.jsonl: No space left on device \(errno 28\); "
                                             r"no checkpoint was written yet"):
        run.append({"step": 10, "sets": {}})
    assert runfolder.read_history(run.path) == []  # the torn line is skipped
    run.close()


def test_out_dir_that_is_a_file_and_unwritable(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunFolderError, match="cannot create out_dir .*f/sub"):
        runfolder.create(Config.preset("tiny", out_dir=str(tmp_path / "f" / "sub")))
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        runfolder.create(Config.preset("tiny", out_dir=str(tmp_path / "f")))

    def read_only(self, *a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(RunFolderError, match="Read-only file system"):
        runfolder.create(Config.preset("tiny", out_dir=str(tmp_path / "ro")))


def test_open_run_errors(tmp_path):
    with pytest.raises(ValueError, match="names no run folder"):
        runfolder.open_run("")
    with pytest.raises(RunFolderError, match="does not exist"):
        runfolder.open_run(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="is a file"):
        runfolder.open_run(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFolderError, match="no config.json"):
        runfolder.open_run(tmp_path / "empty")
    assert not (tmp_path / "empty" / ".lock").exists()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{")
    with pytest.raises(RunFolderError, match="corrupt"):
        runfolder.open_run(tmp_path / "bad")
    assert runfolder.status(tmp_path / "bad")["state"] == "corrupt"
    assert runfolder.status(tmp_path / "missing")["state"] == "missing"
    assert runfolder.status(tmp_path / "empty")["state"] == "not_a_run"


def test_discard_removes_only_a_run_that_never_started(tmp_path):
    run = runfolder.create(_cfg(tmp_path, run_name="a"))
    run.discard()
    assert not (tmp_path / "a").exists()
    run = runfolder.create(_cfg(tmp_path, run_name="b"))
    run.close()
    again = runfolder.open_run(run.path)  # not created by this process: discard keeps it
    again.discard()
    assert (run.path / "config.json").is_file()


def test_lock_is_quick(tmp_path):
    run = runfolder.create(_cfg(tmp_path, run_name="a"))
    run.close()
    t = time.perf_counter()
    for _ in range(100):
        runfolder.lock(run.path).release()
    assert time.perf_counter() - t < 5.0  # generous: a shared machine; ≈ 20 µs each


def test_one_vocabulary_of_states_through_a_run(tmp_path):
    """state() (cheap) and status() agree at each stage: new → interrupted → done or settled (#20)."""
    from fastgrok import train
    cfg = Config.preset("tiny", steps=20, eval_every=10, out_dir=str(tmp_path), run_name="r")
    d = tmp_path / "r"
    assert runfolder.state(d) == runfolder.status(d)["state"] == runfolder.MISSING
    with runfolder.create(cfg):
        assert runfolder.state(d) == runfolder.RUNNING
    assert runfolder.state(d) == runfolder.status(d)["state"] == runfolder.NEW
    train(resume=d, stop_at=10, quiet=True)
    st = runfolder.status(d)
    assert runfolder.state(d) == st["state"] == runfolder.INTERRUPTED and st["step"] == 10 and st["records"] == 1
    res = train(resume=d, quiet=True)
    assert runfolder.state(d) == runfolder.status(d)["state"] == runfolder.DONE
    assert runfolder.read_summary(d) == res.summary
    assert [r["step"] for r in runfolder.read_history(d, slim=True)] == [10, 20]
    assert "task_acc" not in runfolder.read_history(d, slim=True)[0]["sets"]["train"]
    assert "task_acc" in runfolder.read_history(d)[0]["sets"]["train"]
    (d / runfolder.SUMMARY).write_text(json.dumps({**res.summary, "stopped_early": True}))
    assert runfolder.state(d) == runfolder.status(d)["state"] == runfolder.SETTLED
    (d / runfolder.SUMMARY).write_text("{")  # half written: not ended yet
    assert runfolder.read_summary(d) is None and runfolder.state(d) == runfolder.INTERRUPTED
