"""A run folder, out_dir/run_name/: what a run writes, how it is read back, and who may write it.

Files:
    config.json      the resolved config, written once before any step
    env.json         versions, device, commit, command line (env-resume-<step>.json per resume)
    metrics.jsonl    one JSON record per evaluation, appended
    last.pt          model, optimizer, step, best, pending interval losses; replaced atomically
    best.pt          the best o.o.d.-test model, replaced atomically
    summary.json     written when the run finishes
    tensorboard/, wandb/, tracking.json   the experiment trackers' files (log = ...; fastgrok/tracking.py)
    .lock            the pid of the process that owns the folder (an advisory fcntl.flock)

The write protocol that makes a resume exact (trainer.py follows it):
    1. an evaluation's record is appended to metrics.jsonl before the checkpoint of its step is saved,
       so every record up to last.pt's step is in the file, whole;
    2. a checkpoint taken at an evaluation step whose record is missing (the evaluation was
       interrupted) is evaluated again on resume;
    3. on resume, records past last.pt's step, whole or torn, are dropped; no last.pt means step 0;
    4. one process owns a folder from creation or resume to its end (`lock`); stale temporary files
       of killed writers are removed when a process takes it over.

This module is the one place that names these files and the one reader of them: the trainer, a
sweep, its results and figures, and the benchmarks all go through it.

States, one vocabulary for a run folder and a sweep's point (a sweep adds pending, queued, failed):
    new          config.json, no checkpoint: resumable from step 0
    interrupted  a checkpoint and no owner: resumable from its step
    running      a live process owns the folder
    done         summary.json: every step run
    settled      summary.json: stopped early, once settled (a sweep's stop_when_settled)

Public API (what a sweep driver or a plot uses; nothing here imports the training loop):
    create(cfg) -> RunFolder              a new folder, locked, config.json written
    open_run(run_dir) -> RunFolder        an existing folder to resume: locked, stale *.tmp removed
    lock(run_dir) -> RunLock              own a folder (a context manager); RunFolderBusy if taken
    state(run_dir) -> str                 its state, from which files exist and the lock (cheap)
    status(run_dir) -> dict               its state, checkpoint step and records, checked: read-only, no lock
    read_history(run_dir, upto=None)      its evaluation records (a torn last line skipped)
    read_summary(run_dir) -> dict | None  summary.json, None while the run has not ended
    load_config(run_dir) -> Config
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from .checkpoint import CheckpointError, atomic_save, atomic_write_text, load_file, read_json_object
from .config import Config

try:
    import fcntl
except ImportError:  # pragma: no cover  (not POSIX: folders are not locked)
    fcntl = None

CONFIG, METRICS, LAST, BEST, SUMMARY, LOCK = "config.json", "metrics.jsonl", "last.pt", "best.pt", "summary.json", ".lock"
ENV = "env.json"
TENSORBOARD, WANDB, TRACKING = "tensorboard", "wandb", "tracking.json"  # written by fastgrok/tracking.py


def env_file(resumed_at: int | None = None) -> str:
    """env.json for a run's start, env-resume-<step>.json for each resume."""
    return ENV if resumed_at is None else f"env-resume-{resumed_at}.json"


MISSING, NEW, INTERRUPTED, RUNNING, DONE, SETTLED = "missing", "new", "interrupted", "running", "done", "settled"
NOT_A_RUN, CORRUPT = "not_a_run", "corrupt"   # status() only: a folder without config.json, a damaged one
RESUMABLE = (NEW, INTERRUPTED)
FINISHED = (DONE, SETTLED)
_TMP = re.compile(r"^\..+\.tmp$")            # what checkpoint._atomic_write leaves when killed
_STEP = re.compile(r'^\{"step": (\d+)[,}]')  # the first key of a record, readable in a torn line


class RunFolderError(CheckpointError):
    """A run folder that is missing, corrupt, owned by another process or cannot be written."""


class RunFolderBusy(RunFolderError):
    """Another live process owns the run folder."""


def default_run_name(cfg: Config) -> str:
    t, m = cfg.task, cfg.model
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}_p{t.p}_nid{t.n_pretrain}_a{t.alpha:g}_d{m.depth}_w{m.n_embd}_s{cfg.train.seed}"


def _why(e: OSError) -> str:
    return f"{e.strerror or type(e).__name__} (errno {e.errno})" if e.errno else str(e)


@contextlib.contextmanager
def _writing(path: Path, kept: Callable[[], str]) -> Iterator[None]:
    """OS errors of a write become one RunFolderError naming the file and what survived (`kept()`,
    worked out only then)."""
    try:
        yield
    except OSError as e:
        raise RunFolderError(f"cannot write {path}: {_why(e)}; {kept()}") from None


# ---- the lock ------------------------------------------------------------------------------------
class RunLock:
    """Exclusive ownership of a run folder: fcntl.flock on run_dir/.lock, which holds the owner's pid.

    The kernel drops a flock when its process dies, so a folder left by a killed run is taken over
    without any clean-up. A second owner gets RunFolderBusy naming the first one's pid."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None
        if fcntl is None:  # pragma: no cover
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunFolderError(f"cannot lock run folder {str(self.path.parent)!r}: {_why(e)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = _read_pid(self.path)
            for _ in range(20):  # the owner may have locked the file a moment ago and not yet written its pid
                if pid:
                    break
                time.sleep(0.01)
                pid = _read_pid(self.path)
            who = f"process {pid}" if pid else "another process"
            raise RunFolderBusy(f"run folder {str(self.path.parent)!r} is in use by {who} (a fastgrok run "
                                "writes it): wait for that run to end or stop it, then resume") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock(run_dir: str | Path) -> RunLock:
    """Own a run folder (use as `with lock(run_dir): ...`); raises RunFolderBusy if a live process does."""
    return RunLock(run_dir)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def owner(run_dir: str | Path) -> int | None:
    """The pid of the live process that owns the folder, or None; takes no lock."""
    path = Path(run_dir) / LOCK
    if fcntl is None or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return _read_pid(path) or -1
    finally:
        os.close(fd)


# ---- reading -------------------------------------------------------------------------------------
def load_config(run_dir: str | Path) -> Config:
    """The config saved in a run folder, with one clear error for a missing or corrupt one."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunFolderError(f"run folder {str(run_dir)!r} does not exist")
    if not run_dir.is_dir():
        raise RunFolderError(f"{str(run_dir)!r} is a file, not a run folder")
    path = run_dir / CONFIG
    if not path.is_file():
        raise RunFolderError(f"{str(run_dir)!r} is not a fastgrok run folder (no {CONFIG})")
    try:
        return Config.from_dict(json.loads(path.read_text()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunFolderError(f"{path} is corrupt or unreadable: {e}") from None
    except (ValueError, TypeError) as e:
        raise RunFolderError(f"{path} is not a valid config: {e}") from None


def _parse_history(path: Path, upto: int | None) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    try:
        lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    except OSError as e:
        raise RunFolderError(f"cannot read {path}: {_why(e)}") from None
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    out = []
    for k, (no, line) in enumerate(numbered):
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
                raise ValueError
        except ValueError:
            m = _STEP.match(line)
            step = int(m.group(1)) if m else None
            if upto is None and k == len(numbered) - 1:
                continue  # a torn last line: an append the run did not finish
            if upto is not None and (step is not None and step > upto or step is None and k == len(numbered) - 1):
                continue  # torn, past the checkpoint (a record is appended before its checkpoint is saved)
            raise RunFolderError(f"{path} line {no} is corrupt (torn or edited)"
                                 + (f" and lies at or before the checkpoint's step {upto}" if upto is not None else "")
                                 + ": repair or delete that line") from None
        if upto is None or rec["step"] <= upto:
            out.append(rec)
    return out


_SLIM_DROP = ("task_acc", "task_acc_last")
_SLIM_CACHE: dict[Path, tuple[tuple[int, int], list[dict[str, Any]]]] = {}


def read_history(run_dir: str | Path, upto: int | None = None, slim: bool = False) -> list[dict[str, Any]]:
    """The evaluation records of a run folder, in order; with `upto`, only those at or before that step.

    A torn last line (an append cut by a kill or a full disk) is skipped; a damaged line elsewhere, or one
    at or before `upto`, raises RunFolderError naming the file and line.

    slim=True drops the per-task lists (hundreds of accuracies a line at the paper's size) and caches the
    records on the file's size and mtime, so a sweep's table rereads only the runs that moved: the lists
    returned are shared, not to be changed."""
    path = Path(run_dir) / METRICS
    if not slim:
        return _parse_history(path, upto)
    try:
        st = path.stat()
    except OSError:
        return []
    key = (st.st_mtime_ns, st.st_size)
    hit = _SLIM_CACHE.get(path)
    if hit is None or hit[0] != key:
        records = _parse_history(path, None)
        for rec in records:
            for m in rec.get("sets", {}).values():
                for k in _SLIM_DROP:
                    m.pop(k, None)
        hit = _SLIM_CACHE[path] = (key, records)
    return hit[1] if upto is None else [r for r in hit[1] if r["step"] <= upto]


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """summary.json (written when a run ends), or None where it is missing or half written."""
    return read_json_object(Path(run_dir) / SUMMARY)


def state(run_dir: str | Path) -> str:
    """The folder's state from which of its files exist and from its lock: missing | new | interrupted |
    running | done | settled. Cheap (no checkpoint is read): what a sweep polls."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    if summary is not None:
        return SETTLED if summary.get("stopped_early") else DONE
    if owner(run_dir) is not None:
        return RUNNING
    if not (run_dir / CONFIG).is_file():
        return MISSING
    return INTERRUPTED if (run_dir / LAST).is_file() else NEW


def status(run_dir: str | Path) -> dict[str, Any]:
    """What a run folder holds, read-only and lock-free:

    {"state": "missing" | "not_a_run" | "corrupt" | one of state()'s,
     "step": checkpoint step (0 without one), "steps": the config's total, "records": evaluations on file,
     "owner": pid of the process writing it or None, "error": why it is corrupt or None}.
    Unlike state(), the config, the records and the checkpoint's step are read: a damaged one is "corrupt"."""
    run_dir = Path(run_dir)
    out: dict[str, Any] = dict(state=MISSING, step=None, steps=None, records=0, owner=None, error=None)
    if not run_dir.is_dir():
        return out
    if not (run_dir / CONFIG).is_file():
        return out | dict(state=NOT_A_RUN)
    out["owner"] = owner(run_dir)
    try:
        cfg = load_config(run_dir)
        out["steps"] = cfg.train.steps
        out["records"] = len(read_history(run_dir))
        out["step"] = _checkpoint_step(run_dir / LAST)
    except (RunFolderError, CheckpointError) as e:
        return out | dict(state=CORRUPT, error=str(e))
    out["state"] = state(run_dir)
    return out


def _checkpoint_step(path: Path) -> int:
    if not path.is_file():
        return 0
    import torch
    try:  # mmap: only the small step field is read, not the weights
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(ckpt["step"])
    except Exception as e:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or not a torch file ({type(e).__name__})") from None


# ---- a folder in use -----------------------------------------------------------------------------
def _remove_stale_tmp(run_dir: Path) -> list[str]:
    removed = []
    for p in run_dir.iterdir():
        if _TMP.match(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


def _holds_run(run_dir: Path) -> bool:
    return any(p.name != LOCK and not _TMP.match(p.name) for p in run_dir.iterdir())


@dataclass
class RunFolder:
    """An owned (locked) run folder and the files a training run writes into it."""

    path: Path
    cfg: Config
    _lock: RunLock = field(repr=False)
    created: bool = False                      # made by this process (discard() may remove it)
    stale_removed: list[str] = field(default_factory=list)

    # -- reading
    def checkpoint(self) -> dict[str, Any] | None:
        """The last checkpoint, or None when the run has none yet (it starts again from step 0)."""
        path = self.path / LAST
        if not path.exists():
            return None
        ckpt = load_file(path)
        if not isinstance(ckpt, dict) or any(k not in ckpt for k in ("model", "optimizer", "step")):
            raise RunFolderError(f"{path} is not a fastgrok training checkpoint")
        return ckpt

    def checkpoint_step(self) -> int | None:
        """The step of last.pt, None without a readable one (cheap: the weights are not read)."""
        try:
            return _checkpoint_step(self.path / LAST) if (self.path / LAST).is_file() else None
        except CheckpointError:
            return None

    def history(self, upto: int | None = None) -> list[dict[str, Any]]:
        return read_history(self.path, upto)

    # -- writing (each raises RunFolderError naming the file on an OS error, keeping what was there)
    def _kept(self) -> str:
        step = self.checkpoint_step()
        where = f"the checkpoint at step {step} is kept" if step is not None else "no checkpoint was written yet"
        return f"{where}; free the cause and resume with `fastgrok train --resume {self.path}`"

    def write_json(self, name: str, obj: Any) -> None:
        path = self.path / name
        with _writing(path, self._kept):
            atomic_write_text(json.dumps(obj, indent=2) + "\n", path)

    def rewrite_history(self, records: list[dict[str, Any]]) -> None:
        """metrics.jsonl := these records (atomically): drops what lies past a resumed checkpoint."""
        path = self.path / METRICS
        with _writing(path, lambda: "metrics.jsonl is unchanged"):
            atomic_write_text("".join(json.dumps(r) + "\n" for r in records), path)

    def append(self, record: dict[str, Any]) -> None:
        """Append one evaluation record (flushed to disk); a torn append is dropped on resume."""
        path = self.path / METRICS
        with _writing(path, self._kept):
            _append_bytes(path, (json.dumps(record) + "\n").encode())

    def save_last(self, state: dict[str, Any]) -> None:
        path = self.path / LAST
        with _writing(path, self._kept):
            atomic_save(state, path)

    def save_best(self, state: dict[str, Any]) -> None:
        path = self.path / BEST
        with _writing(path, self._kept):
            atomic_save(state, path)

    # -- ownership
    def close(self) -> None:
        """Release the folder (the lock); the files stay."""
        self._lock.release()

    def discard(self) -> None:
        """Remove a folder this process created for a run that never started; release it."""
        if self.created:
            for name in (CONFIG, ENV, METRICS, LOCK):
                with contextlib.suppress(OSError):
                    (self.path / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                _remove_stale_tmp(self.path)
        self.close()
        if self.created:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only if now empty

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _append_bytes(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def create(cfg: Config) -> RunFolder:
    """A new run folder out_dir/run_name (run_name '' → derived, with -1, -2 … if taken), locked, with
    config.json written. A named folder that already holds a run is refused."""
    root = Path(cfg.train.out_dir)
    name = cfg.train.run_name or default_run_name(cfg)
    if root.exists() and not root.is_dir():
        raise RunFolderError(f"out_dir {str(root)!r} is a file, not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunFolderError(f"cannot create out_dir {str(root)!r}: {_why(e)}") from None
    i = 0
    while True:
        run_dir = root / (name if i == 0 else f"{name}-{i}")
        i += 1
        made = not run_dir.exists()
        try:
            run_dir.mkdir(exist_ok=True)
        except FileExistsError:  # a file of that name
            if cfg.train.run_name:
                raise RunFolderError(f"{str(run_dir)!r} is a file, not a run folder: pick another run_name") from None
            continue
        except OSError as e:
            raise RunFolderError(f"cannot create run folder {str(run_dir)!r}: {_why(e)}") from None
        try:
            folder = _claim(run_dir, cfg)
        except BaseException as e:  # Ctrl-C included: leave no folder behind (unless another process owns it)
            if made and not isinstance(e, RunFolderBusy):
                with contextlib.suppress(OSError):
                    (run_dir / LOCK).unlink(missing_ok=True)
                    run_dir.rmdir()
            raise
        if folder is not None:
            return folder


def _claim(run_dir: Path, cfg: Config) -> RunFolder | None:
    """Lock an empty folder and write config.json; None if it is taken (only for derived names)."""
    try:
        lk = RunLock(run_dir)
    except RunFolderBusy:
        if cfg.train.run_name:
            raise
        return None
    if _holds_run(run_dir):
        lk.release()
        if cfg.train.run_name:
            raise RunFolderError(f"run folder {str(run_dir)!r} already holds a run: resume it with "
                                 f"`fastgrok train --resume {run_dir}`, or pick another run_name")
        return None
    # the folder is new or was empty (at most a stale lock or temporary files): ours to remove
    folder = RunFolder(run_dir, cfg, lk, created=True, stale_removed=_remove_stale_tmp(run_dir))
    try:
        folder.write_json(CONFIG, cfg.to_dict())
    except BaseException:
        folder.discard()
        raise
    return folder


def open_run(run_dir: str | Path) -> RunFolder:
    """An existing run folder, to resume: its config read, the folder locked, stale *.tmp files removed."""
    if isinstance(run_dir, str) and not run_dir.strip():
        raise ValueError("resume='' names no run folder: give the folder of the run to continue")
    run_dir = Path(run_dir)
    load_config(run_dir)  # a clear error before a .lock is made in a folder that is not a run's
    lk = RunLock(run_dir)
    try:
        cfg = load_config(run_dir)
        removed = _remove_stale_tmp(run_dir)
    except BaseException:
        lk.release()
        raise
    return RunFolder(run_dir, cfg, lk, stale_removed=removed)
