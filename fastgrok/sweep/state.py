"""A point's state: its run folder's (fastgrok.runfolder: new, interrupted, running, done, settled) and
the sweep's own bookkeeping in SWEEP_DIR/state/ — pending (no run folder yet), failed (a one-line reason
in <point>.failed.json) — and every attempt to run it (<point>.attempts.jsonl). An engine adds "queued"
(fastgrok.sweep.engines: a SLURM job waiting for a node) and "unknown" (SLURM does not answer).
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from .. import runfolder
from ..checkpoint import atomic_write_text, read_json_object
from ..sets import SETTLED_PHASE
from .spec import RUNS_DIR, STATE_DIR

PENDING, QUEUED, FAILED, UNKNOWN = "pending", "queued", "failed", "unknown"  # UNKNOWN: the engine cannot tell
RUNNING, FINISHED = runfolder.RUNNING, runfolder.FINISHED
TO_LAUNCH = (PENDING, *runfolder.RESUMABLE)     # what a driver starts: nothing on disk yet, or resumable
STATES = (*runfolder.FINISHED, RUNNING, QUEUED, UNKNOWN, *runfolder.RESUMABLE[::-1], PENDING, FAILED)  # a table's order


def state_file(root: str | Path, name: str, kind: str) -> Path:
    """SWEEP_DIR/state/<point>.<kind>: failed.json, attempts.jsonl, job (the SLURM engine's)."""
    return Path(root) / STATE_DIR / f"{name}.{kind}"


def point_status(root: Path, name: str) -> str:
    """done | settled | failed | running | interrupted | new | pending (queued comes from the engine)."""
    root = Path(root)
    st = runfolder.state(root / RUNS_DIR / name)
    if st in FINISHED:
        return st
    if state_file(root, name, "failed.json").is_file():
        return FAILED
    return PENDING if st == runfolder.MISSING else st


def failure_reason(root: Path, name: str) -> str | None:
    rec = read_json_object(state_file(root, name, "failed.json"))
    return rec.get("reason") if rec else None


def record_failure(root: Path, name: str, reason: str) -> None:
    line = " ".join(reason.split())[:300] or "unknown error"
    atomic_write_text(json.dumps({"reason": line, "time": time.time()}) + "\n",
                      state_file(root, name, "failed.json"))


def clear_failure(root: Path, name: str) -> None:
    (state_file(root, name, "failed.json")).unlink(missing_ok=True)


def append_attempt(root: Path, name: str, rec: dict[str, Any]) -> None:
    path = state_file(root, name, "attempts.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def read_attempts(root: Path, name: str) -> list[dict[str, Any]]:
    path = state_file(root, name, "attempts.jsonl")
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


def settled(history: list[dict[str, Any]], k: int) -> bool:
    """Whether the last k evaluations all show o.o.d. generalization (all four sets solved)."""
    return k >= 1 and len(history) >= k and all(r.get("phase") == SETTLED_PHASE for r in history[-k:])
