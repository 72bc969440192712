"""The reliability battery of issue 9, rerun: bad CLI input, bad API calls, injected faults, kill -9s
and concurrent resumes against `fastgrok train` (tiny preset, CPU). Prints one line per case that
is not clean and the counts: tried, clean, tracebacks, silent, lost.

    python benchmarks/battery_reliability.py [--kills N]      # a few minutes on 2 CPU cores

clean: the expected outcome (bad input: one line on stderr, exit 2, nothing written; a fault: one
clear error and a resume that reproduces the uninterrupted run); traceback: an exception that is not
one clean line (or an unexpected exception type from the API); silent: accepted where it should
have been refused, or a wrong result; lost: a resumed run whose history or weights differ from the
uninterrupted one.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import fastgrok  # noqa: E402
from fastgrok import Config, GPT, eval_batch, make_tasks, runfolder, sample_batch, train  # noqa: E402
from fastgrok.cli import main  # noqa: E402

import fastgrok.trainer as train_mod  # noqa: E402
COUNTS: Counter = Counter()
SECTION = {"name": ""}
BY_SECTION: Counter = Counter()


def note(kind: str, case: str, detail: str = "") -> None:
    COUNTS["tried"] += 1
    COUNTS[kind] += 1
    BY_SECTION[SECTION["name"], kind] += 1
    if kind != "clean":
        print(f"  [{kind}] {case}: {detail[:300]}")


# ---- bad CLI input -------------------------------------------------------------------------------------
BAD_FLAGS = [
    *[[f"--{f}", v] for f in ("p", "n-var", "n-pl", "n-rd", "max-ood", "n-shots", "depth", "n-embd", "n-head", "widen",
                              "batch-size", "steps", "eval-every", "eval-batches", "seed", "data-seed", "warmup")
      for v in ("0", "-1", "x", "1.5", "nan") if not (v == "0" and f in ("n-rd", "seed", "data-seed", "warmup"))],
    *[[f"--{f}={v}"] for f in ("alpha", "lr", "beta1", "beta2", "eps", "weight-decay", "grad-clip", "init-lr-ratio",
                               "min-lr-ratio", "phase-threshold", "rope-theta")
      for v in ("nan", "inf", "-inf", "-1", "abc")],
    ["--alpha", "1.0"], ["--alpha", "0"], ["--beta1", "1"], ["--phase-threshold", "0"],
    ["--selection", "nope"], ["--sampling", "nope"], ["--mlp", "tanh"], ["--backend", "cuda"], ["--attention", "x"],
    ["--device", "tpu"], ["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "cuda:99"],
    ["--dtype", "fp8"], ["--dtype", "fp16", "--device", "cpu"], ["--compile", "maybe"],
    ["--run-name", "../../x"], ["--run-name", "/abs/path"], ["--run-name", ".."], ["--run-name", "a/b"],
    ["--out-dir", ""], ["--vocab-size", "3"], ["--n-embd", "30", "--n-head", "4"], ["--n-embd", "36", "--n-head", "4"],
    ["--n-pl", "20"], ["--batch-size", "4"], ["--preset", "huge"], ["--alpah", "0.3"], ["--n-id", "10"],
    ["--n-var", "3"], ["--p", "3"], ["--sampling", "distinct", "--alpha", "0.99"],
    ["--data-seed", "99999999999999999999"], ["--seed", "99999999999999999999"],
    ["--p", "100003"], ["--n-shots", "100000"], ["--batch-size", "100000000"], ["--depth", "100000"],
    ["--n-embd", "1000000", "--n-head", "2"], ["--stop-at", "0"], ["--stop-at", "x"],
    ["--resume", ""], ["--resume", "/nonexistent/run"], ["--config", "/"], ["--config", "/nonexistent.toml"],
]


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 2
    return rc, err.getvalue()


def classify_cli(case: str, argv: list[str], out_dir: Path) -> None:
    try:
        rc, err = run_cli(argv)
    except BaseException as e:  # escaped main(): a traceback for a user
        note("traceback", case, f"{type(e).__name__}: {e}")
        return
    lines = err.strip().splitlines()
    written = out_dir.exists() and any(out_dir.iterdir())
    if rc == 0:
        note("silent", case, "accepted")
    elif rc == 2 and len(lines) == 1 and "Traceback" not in err and not written:
        note("clean", case)
    else:
        note("traceback", case, f"rc={rc} lines={len(lines)} written={written}: {err[-200:]}")


def battery_cli(tmp: Path) -> None:
    print("bad CLI input")
    SECTION["name"] = "bad CLI input"
    for i, flags in enumerate(BAD_FLAGS):
        out = tmp / f"cli{i}"
        preset = [] if "--preset" in flags or "--resume" in flags or "--config" in flags else ["--preset", "tiny"]
        extra = [] if "--resume" in flags else ["--out-dir", str(out)]
        if "--out-dir" in flags:
            extra = []
        classify_cli(" ".join(flags), ["train", *preset, *extra, "--quiet", *flags], out)
    files = {"empty dir as config": tmp / "adir", "latin-1 toml": tmp / "l.toml", "bad toml": tmp / "b.toml",
             "toml unknown field": tmp / "u.toml", "toml bad preset": tmp / "p.toml", "toml section mixup": tmp / "s.toml"}
    (tmp / "adir").mkdir()
    (tmp / "l.toml").write_bytes("seed = 1 # caf\xe9".encode("latin-1"))
    (tmp / "b.toml").write_text("alpha = = 1")
    (tmp / "u.toml").write_text("alpah = 0.3")
    (tmp / "p.toml").write_text("preset = [1]")
    (tmp / "s.toml").write_text("[model]\nalpha = 0.5")
    for case, path in files.items():
        classify_cli(case, ["train", "--config", str(path), "--out-dir", str(tmp / "cfgout"), "--quiet"], tmp / "cfgout")
    (tmp / "afile").write_text("x")
    classify_cli("out-dir is a file", ["train", "--preset", "tiny", "--out-dir", str(tmp / "afile"), "--quiet"], tmp / "nothing")
    classify_cli("resume a file", ["train", "--resume", str(tmp / "afile")], tmp / "nothing")
    classify_cli("resume an empty dir", ["train", "--resume", str(tmp / "adir")], tmp / "nothing")


# ---- bad API calls -------------------------------------------------------------------------------------
def battery_api() -> None:
    print("bad API calls")
    SECTION["name"] = "bad API calls"
    cfg = Config.preset("tiny")
    tasks = make_tasks(cfg.task)
    calls = {
        "Config.preset(None)": lambda: Config.preset(None), "Config.preset(3)": lambda: Config.preset(3),
        "Config.preset('x')": lambda: Config.preset("x"), "preset depth=None": lambda: Config.preset("tiny", depth=None),
        "preset depth='two'": lambda: Config.preset("tiny", depth="two"), "preset lr=nan": lambda: Config.preset("tiny", lr=float("nan")),
        "preset unknown": lambda: Config.preset("tiny", foo=1), "from_dict(None)": lambda: Config.from_dict(None),
        "from_dict list": lambda: Config.from_dict([1]), "from_flat('x')": lambda: Config.from_flat("x"),
        "from_toml(dir)": lambda: Config.from_toml("/"), "override bad": lambda: cfg.override(alpha=2),
        "train('tiny')": lambda: train("tiny"), "train({})": lambda: train({}), "train(cfg.task)": lambda: train(cfg.task),
        "stop_at='5'": lambda: train(cfg, stop_at="5"), "stop_at=1.5": lambda: train(cfg, stop_at=1.5),
        "stop_at=-3": lambda: train(cfg, stop_at=-3), "stop_at=True": lambda: train(cfg, stop_at=True),
        "resume=3": lambda: train(resume=3), "resume=''": lambda: train(resume=""),
        "resume missing": lambda: train(resume="/nonexistent"), "device cuda": lambda: train(cfg.override(device="cuda"), quiet=True),
        "sample step -1": lambda: sample_batch(cfg, tasks, -1), "sample step 1.0": lambda: sample_batch(cfg, tasks, 1.0),
        "sample step '3'": lambda: sample_batch(cfg, tasks, "3"), "sample step 2**63": lambda: sample_batch(cfg, tasks, 2**63),
        "sample step None": lambda: sample_batch(cfg, tasks, None), "sample float tensor": lambda: sample_batch(cfg, tasks, torch.tensor(1.0)),
        "sample other tasks": lambda: sample_batch(Config.preset("quick"), tasks, 0),
        "sample tasks None": lambda: sample_batch(cfg, None, 0), "sample cfg.task": lambda: sample_batch(cfg.task, tasks, 0),
        "sample split": lambda: sample_batch(cfg, tasks, 0, split="test"),
        "sample device cuda": lambda: sample_batch(cfg, tasks, 0, device="cuda") if not torch.cuda.is_available() else sample_batch(cfg, tasks, 0, device="cuda:99"),
        "sample device tpu": lambda: sample_batch(cfg, tasks, 0, device="tpu"), "sample device 7": lambda: sample_batch(cfg, tasks, 0, device=7),
        "eval_batch -1": lambda: eval_batch(cfg, tasks, -1, "ood_test"), "eval_batch split": lambda: eval_batch(cfg, tasks, 0, "x"),
        "make_tasks(None)": lambda: make_tasks(None), "make_tasks(cfg)": lambda: make_tasks(cfg),
        "GPT(cfg)": lambda: GPT(cfg), "GPT(None)": lambda: GPT(None),
        "GPT idx 3-d": lambda: GPT(cfg.model)(torch.zeros(1, 2, 3, dtype=torch.long)),
        "GPT positions": lambda: GPT(cfg.model)(torch.zeros(1, 2, dtype=torch.long), positions=3),
        "load_reference_checkpoint missing": lambda: fastgrok.load_reference_checkpoint("/nonexistent.pt"),
        "runfolder.open_run('')": lambda: runfolder.open_run(""), "runfolder.read_history file": lambda: runfolder.read_history("/etc/passwd"),
    }
    for case, call in calls.items():
        try:
            call()
        except (TypeError, ValueError) as e:
            note("clean" if str(e) else "traceback", case, str(e))
        except BaseException as e:
            note("traceback", case, f"{type(e).__name__}: {e}")
        else:
            note("clean" if case == "runfolder.read_history file" else "silent", case, "no error")


# ---- faults ----------------------------------------------------------------------------------------------
def _strip(h):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in h]


def _cfg(out: Path, name: str, **kw) -> Config:
    return Config.preset("tiny", out_dir=str(out), run_name=name, steps=40, eval_every=8, **kw)


def _compare(case: str, run_dir: Path, full, resume: bool = True) -> None:
    try:
        if resume:
            train(resume=run_dir, quiet=True)
    except BaseException as e:
        note("lost", case, f"resume failed: {type(e).__name__}: {e}")
        return
    hist = runfolder.read_history(run_dir)
    a = torch.load(run_dir / runfolder.LAST)["model"]
    b = torch.load(full.run_dir / runfolder.LAST)["model"]
    same = _strip(hist) == _strip(full.history) and all(torch.equal(a[k], b[k]) for k in b)
    note("clean" if same else "lost", case, "" if same else f"steps {[r['step'] for r in hist]}")


@contextlib.contextmanager
def patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def battery_faults(tmp: Path, full) -> None:
    print("injected faults")
    SECTION["name"] = "injected faults"
    sig = lambda: os.kill(os.getpid(), signal.SIGINT)  # noqa: E731

    def inject(case, obj, name, when, action, expect):
        calls = {"n": 0}
        real = getattr(obj, name)

        def wrapper(*a, **k):
            calls["n"] += 1
            if calls["n"] == when:
                r = action(real, a, k)
                if r is not None:
                    return r
            return real(*a, **k)

        d = tmp / case.replace(" ", "_")
        try:
            with patched(obj, name, wrapper):
                train(_cfg(tmp, d.name), quiet=True)
            note("silent", case, "no error")
            return
        except expect as e:
            if not str(e) or "\n" in str(e):
                note("traceback", case, repr(e))
                return
        except BaseException as e:
            note("traceback", case, f"{type(e).__name__}: {e}")
            return
        _compare(case, d, full)

    def raise_ki(real, a, k):
        raise KeyboardInterrupt

    def two_sigints(real, a, k):
        sig(), sig()

    def one_sigint(real, a, k):
        sig()

    def enospc_half(real, a, k):
        path, data = a
        real(path, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def enospc(real, a, k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def erofs(real, a, k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    def nan(real, a, k):
        return real(*a, **k) * float("nan")

    from fastgrok.trainer import TrainingError
    for when in (1, 2, 3):
        inject(f"KeyboardInterrupt in evaluation {when}", train_mod, "evaluate", when, raise_ki, KeyboardInterrupt)
        inject(f"two Ctrl-C in evaluation {when}", train_mod, "evaluate", when, two_sigints, KeyboardInterrupt)
    for when in (1, 3):
        inject(f"two Ctrl-C during metrics append {when}", runfolder, "_append_bytes", when, two_sigints, KeyboardInterrupt)
        inject(f"disk full in metrics append {when}", runfolder, "_append_bytes", when, enospc_half, runfolder.RunFolderError)
        inject(f"disk full writing a checkpoint {when}", runfolder, "atomic_save", when, enospc, runfolder.RunFolderError)
        inject(f"read-only while writing {when}", runfolder, "atomic_save", when, erofs, runfolder.RunFolderError)
    for when in (3, 13):
        inject(f"two Ctrl-C after an update {when}", torch.optim.Optimizer, "zero_grad", when, two_sigints, KeyboardInterrupt)
        inject(f"one Ctrl-C in a step {when}", train_mod, "z_loss", when, one_sigint, KeyboardInterrupt)
        inject(f"KeyboardInterrupt in forward {when}", train_mod, "z_loss", when, raise_ki, KeyboardInterrupt)
        inject(f"NaN loss at step {when}", train_mod, "z_loss", when, nan, TrainingError)


def battery_kills(tmp: Path, full, n: int) -> None:
    print(f"kill -9 at random times ({n})")
    SECTION["name"] = "kill -9"
    rng = random.Random(9)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for i in range(n):
        d = tmp / f"kill{i}"
        cmd = [sys.executable, "-m", "fastgrok", "train", "--preset", "tiny", "--steps", "40", "--eval-every", "8",
               "--out-dir", str(tmp), "--run-name", d.name, "--quiet"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if i % 4 == 0:  # during start-up
            time.sleep(rng.uniform(0.1, 2.0))
        else:  # during training: from its config.json on, over the uninterrupted run's time
            deadline = time.time() + 60
            while not (d / runfolder.CONFIG).exists() and time.time() < deadline and proc.poll() is None:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 1.2 * (full.summary["wall_s"] + full.summary["startup_s"])))
        proc.kill()
        proc.wait()
        case = f"kill -9 #{i}"
        if not (d / runfolder.CONFIG).is_file():
            note("clean" if not d.exists() or not any(p.name[0] != "." for p in d.iterdir()) else "lost", case + " (before start)")
            continue
        if runfolder.status(d)["state"] == runfolder.DONE:
            _compare(case + " (after the end)", d, full, resume=False)
            continue
        st = runfolder.status(d)
        print(f"  {case}: killed at checkpoint step {st['step']} with {st['records']} records on file")
        _compare(case + f" (at {st['step']})", d, full)


def battery_concurrent(tmp: Path, full) -> None:
    print("two resumes at once")
    SECTION["name"] = "two resumes at once"
    half = train(_cfg(tmp, "conc"), stop_at=3, quiet=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "fastgrok", "train", "--resume", str(half.run_dir), "--quiet"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    res = [(p.wait(), p.stderr.read()) for p in procs]
    codes = sorted(r[0] for r in res)
    refused = [e for c, e in res if c == 2]
    ok = codes == [0, 2] and len(refused[0].strip().splitlines()) == 1 and "in use by" in refused[0]
    if ok:
        _compare("two resumes at once", half.run_dir, full, resume=False)
    else:
        note("lost", "two resumes at once", f"{res}")


def main_battery() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        os.chdir(tmp)
        battery_cli(tmp)
        battery_api()
        full = train(_cfg(tmp / "ref", "full"), quiet=True)
        battery_faults(tmp, full)
        battery_kills(tmp, full, args.kills)
        battery_concurrent(tmp, full)
        shutil.rmtree(tmp, ignore_errors=True)
    for sec in dict.fromkeys(k[0] for k in BY_SECTION):
        print(f"{sec}: " + ", ".join(f"{k} {BY_SECTION[sec, k]}" for k in ("clean", "traceback", "silent", "lost")
                                     if BY_SECTION[sec, k]))
    print(", ".join(f"{k} {COUNTS[k]}" for k in ("tried", "clean", "traceback", "silent", "lost")))
    return 0


if __name__ == "__main__":
    sys.exit(main_battery())
