"""Faults injected into a training run (issue 9): interrupts at chosen points, a full disk, a kill
before the first checkpoint, a second owner. Each run must end in one clear error, lose nothing and
resume to the uninterrupted result bit for bit (CPU)."""
import errno
import os
import signal
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from fastgrok import Config, runfolder, train
from fastgrok.cli import main
from fastgrok.runfolder import RunFolderBusy, RunFolderError
from fastgrok.trainer import TrainingError

import fastgrok.trainer as train_mod  # noqa: E402
ROOT = Path(__file__).resolve().parent.parent
STEPS, EVERY = 24, 8


def _cfg(out, name, **kw):
    return Config.preset("tiny", out_dir=str(out), run_name=name, steps=STEPS, eval_every=EVERY, **kw)


def _strip(history):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in history]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The uninterrupted run everything is compared with."""
    return train(_cfg(tmp_path_factory.mktemp("full"), "full"), quiet=True)


def _same_as_full(run_dir, full, losses_tail=None):
    rest = train(resume=run_dir, quiet=True)
    assert _strip(runfolder.read_history(run_dir)) == _strip(full.history)
    assert _strip(rest.history) == _strip(full.history)
    if losses_tail is not None:
        assert rest.losses == full.losses[-len(rest.losses):] and len(rest.losses) == losses_tail
    a = torch.load(Path(run_dir) / "last.pt")["model"]
    b = torch.load(full.run_dir / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)
    return rest


def _sigint():
    os.kill(os.getpid(), signal.SIGINT)


# ---- item 1: an evaluation is recorded with its checkpoint, or redone on resume ----------------------
def test_interrupt_inside_an_evaluation_is_redone_on_resume(tmp_path, full, monkeypatch):
    real, calls = train_mod.evaluate, {"n": 0}

    def cut(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the evaluation of step 16
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "evaluate", cut)
    with pytest.raises(KeyboardInterrupt, match="interrupted at step 16"):
        train(_cfg(tmp_path, "cut"), quiet=True)
    monkeypatch.setattr(train_mod, "evaluate", real)
    assert torch.load(tmp_path / "cut" / "last.pt")["step"] == 16
    assert [r["step"] for r in runfolder.read_history(tmp_path / "cut")] == [8]
    _same_as_full(tmp_path / "cut", full, losses_tail=8)


def test_two_ctrl_c_during_an_evaluation(tmp_path, full, monkeypatch):
    real, calls = train_mod.evaluate, {"n": 0}

    def twice(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            _sigint()
            _sigint()  # the second stops the evaluation at once
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "evaluate", twice)
    with pytest.raises(KeyboardInterrupt, match="interrupted at step 16"):
        train(_cfg(tmp_path, "cut"), quiet=True)
    monkeypatch.setattr(train_mod, "evaluate", real)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    _same_as_full(tmp_path / "cut", full)


def test_two_ctrl_c_while_writing_wait_for_the_record_and_checkpoint(tmp_path, full, monkeypatch):
    real, calls = runfolder._append_bytes, {"n": 0}

    def append(path, data):
        calls["n"] += 1
        if calls["n"] == 2:
            _sigint()
            _sigint()
        return real(path, data)

    monkeypatch.setattr(runfolder, "_append_bytes", append)
    with pytest.raises(KeyboardInterrupt, match="interrupted at step 16"):
        train(_cfg(tmp_path, "cut"), quiet=True)
    monkeypatch.setattr(runfolder, "_append_bytes", real)
    assert [r["step"] for r in runfolder.read_history(tmp_path / "cut")] == [8, 16]
    assert torch.load(tmp_path / "cut" / "last.pt")["step"] == 16
    _same_as_full(tmp_path / "cut", full, losses_tail=8)


def test_two_ctrl_c_after_the_update_never_save_a_half_counted_step(tmp_path, full, monkeypatch):
    real, calls = torch.optim.Optimizer.zero_grad, {"n": 0}

    def zero_grad(self, *a, **k):  # after opt.step(), before the loop counts the step
        calls["n"] += 1
        if calls["n"] == 5:
            _sigint()
            _sigint()
        return real(self, *a, **k)

    monkeypatch.setattr(torch.optim.Optimizer, "zero_grad", zero_grad)
    with pytest.raises(KeyboardInterrupt, match="interrupted at step 5"):
        train(_cfg(tmp_path, "cut"), quiet=True)
    monkeypatch.setattr(torch.optim.Optimizer, "zero_grad", real)
    _same_as_full(tmp_path / "cut", full, losses_tail=STEPS - 5)


# ---- item 2: a folder without a checkpoint resumes from step 0 -------------------------------------
def test_killed_while_writing_the_first_checkpoint(tmp_path, full, monkeypatch):
    real = runfolder.atomic_save

    def killed(obj, path):
        if Path(path).name == "last.pt":
            Path(path).with_name(".last.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")
            raise OSError(errno.EIO, "simulated kill")
        return real(obj, path)

    monkeypatch.setattr(runfolder, "atomic_save", killed)
    with pytest.raises(RunFolderError, match="last.pt"):
        train(_cfg(tmp_path, "cut"), quiet=True)
    monkeypatch.setattr(runfolder, "atomic_save", real)
    d = tmp_path / "cut"
    assert not (d / "last.pt").exists() and (d / ".last.pt.k1ll3d.tmp").exists()
    assert runfolder.status(d)["state"] == "new"
    _same_as_full(d, full, losses_tail=STEPS)
    assert not (d / ".last.pt.k1ll3d.tmp").exists()  # item 5: stale temporary files go on resume
    with pytest.raises(ValueError, match="already holds a run: resume it with"):
        train(_cfg(tmp_path, "cut"), quiet=True)


def test_nan_before_the_first_checkpoint_then_resume(tmp_path, full, monkeypatch):
    real, calls = train_mod.z_loss, {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(train_mod, "z_loss", poisoned)
    with pytest.raises(TrainingError, match=r"at step 3.*no checkpoint .*starts at step 0"):
        train(_cfg(tmp_path, "nan"), quiet=True)
    monkeypatch.setattr(train_mod, "z_loss", real)
    _same_as_full(tmp_path / "nan", full, losses_tail=STEPS)


# ---- item 3 and 6: a full disk -------------------------------------------------------------------
def test_disk_full_during_the_metrics_append(tmp_path, full, monkeypatch):
    real, calls = runfolder._append_bytes, {"n": 0}

    def full_disk(path, data):
        calls["n"] += 1
        if calls["n"] == 2:
            real(path, data[: len(data) // 3])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, data)

    monkeypatch.setattr(runfolder, "_append_bytes", full_disk)
    with pytest.raises(RunFolderError, match=r"metrics.jsonl: No space left on device.*checkpoint at step 8 is kept"):
        train(_cfg(tmp_path, "cut"), quiet=True)
    monkeypatch.setattr(runfolder, "_append_bytes", real)
    d = tmp_path / "cut"
    assert not (d / "metrics.jsonl").read_text().endswith("\n")  # the torn line is there …
    _same_as_full(d, full, losses_tail=STEPS - 8)  # … and dropped on resume


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous(tmp_path, full, monkeypatch):
    real, calls = torch.save, {"n": 0}

    def full_disk(obj, f, *a, **k):
        if isinstance(obj, dict) and "optimizer" in obj:
            calls["n"] += 1
            if calls["n"] == 2:
                f.write(b"partial")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(RunFolderError, match=r"last.pt: No space left on device.*the checkpoint at step 8 is kept"):
        train(_cfg(tmp_path, "cut"), quiet=True)
    monkeypatch.setattr(torch, "save", real)
    d = tmp_path / "cut"
    assert torch.load(d / "last.pt")["step"] == 8 and not [p for p in d.iterdir() if p.suffix == ".tmp"]
    _same_as_full(d, full, losses_tail=STEPS - 8)


@pytest.fixture
def small_disk(tmp_path):
    """Real full disks: tmpfs mounts of a given size (root only; skipped where mounting is not allowed)."""
    mounts = []

    def mount(size: str) -> Path:
        where = Path(tempfile.mkdtemp(prefix="fgd", dir="/tmp"))  # a short path: the files' sizes as a user's
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip() or done.returncode}")
        mounts.append(where)
        return where

    yield mount
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
        shutil.rmtree(where, ignore_errors=True)


@pytest.mark.parametrize("size", [f"{k}k" for k in range(72, 129, 8)])
def test_a_really_full_disk_is_one_line(small_disk, size, capsys):
    """The disk fills at a different write for each size (best.pt, last.pt, their end); torch's zip writer
    reports some of those as a RuntimeError ("unexpected pos"): each is one line, exit 2 (#21)."""
    disk = small_disk(size)
    code = main(["train", "--preset", "tiny", "--steps", "20", "--eval-every", "10", "--out-dir", str(disk),
                 "--run-name", "r", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("fastgrok: error: cannot write") and "No space left on device" in err, err
    assert len(err.strip().splitlines()) == 1
    assert not [p for p in (disk / "r").iterdir() if p.name.endswith(".tmp")]


# ---- item 4: one process per run folder ------------------------------------------------------------
def test_a_second_resume_of_a_folder_in_use_is_refused(tmp_path, capsys):
    half = train(_cfg(tmp_path, "half"), stop_at=5, quiet=True)
    code = ("import sys, time; from fastgrok import runfolder; lk = runfolder.open_run(sys.argv[1]); "
            "print('owned', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(half.run_dir)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == "owned"
        with pytest.raises(RunFolderBusy, match=f"in use by process {proc.pid}"):
            train(resume=half.run_dir, quiet=True)
        assert main(["train", "--resume", str(half.run_dir), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"in use by process {proc.pid}" in err[0]
    finally:
        proc.kill()
        proc.wait()
    assert train(resume=half.run_dir, quiet=True).summary["finished"]  # the dead owner's lock is taken over


# ---- item 7 and 8: nothing is left by a run that never started ---------------------------------------
def test_a_run_that_fails_before_its_first_step_leaves_no_folder(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="needs about"):
        train(Config.preset("quick", p=100003, out_dir=str(tmp_path / "o")), quiet=True)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())

    def env_fails(device):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(train_mod, "environment", env_fails)
    with pytest.raises(OSError):
        train(_cfg(tmp_path, "x"), quiet=True)
    assert not (tmp_path / "x").exists()


def test_ctrl_c_during_start_up(tmp_path, monkeypatch, capsys):
    def slow_build(cfg, dist=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "build", slow_build)
    with pytest.raises(KeyboardInterrupt, match="^interrupted before training started$"):
        train(_cfg(tmp_path, "a"), quiet=True)
    assert main(["train", "--preset", "tiny", "--out-dir", str(tmp_path), "--quiet"]) == 130
    assert capsys.readouterr().err == "fastgrok: interrupted before training started\n"
    assert not any(tmp_path.iterdir())
