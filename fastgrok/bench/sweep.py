"""Sweep overhead: what `fastgrok sweep` costs beyond the runs themselves.

A grid of tiny points (a few training steps each) runs through the real command (`python -m fastgrok
sweep`, local engine) in a temporary folder; each point's attempt record (state/<point>.attempts.jsonl)
gives the times the overheads come from:

- `to_first_step`: from starting the command to the point's first training step (includes waiting for
  the points before it when they outnumber the jobs),
- `launch`: from the driver's submit to the worker calling train() (submitit's process, Python and torch
  imports, unpickling) — the sweep's own cost per point,
- `launch_cpu`: the CPU seconds the worker spent before train() (a load-independent view of `launch`
  on a busy machine),
- `startup`: the run's own start-up inside train() (tasks, model, optimizer), for comparison,
- `overhead`: first training step − submit − the run's own start-up (goal: < 2 s on CPU),
- `gap`: from one point's end to the next point's first step in the same job slot, less the next run's
  own start-up.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .core import Recorder, row


def _attempts(root: Path) -> list[dict[str, Any]]:
    """Every point's finished attempts (the sweep's own records: fastgrok.sweep.state)."""
    from ..sweep import load_sweep, read_attempts
    from ..sweep.state import FINISHED
    return [rec for name in sorted(load_sweep(root).names()) for rec in read_attempts(root, name)
            if rec.get("status") in FINISHED]


def measure_sweep(points: int, jobs: int, steps: int = 10) -> dict[str, list[float]]:
    """Run a `points`-point tiny sweep with `jobs` at a time; the overheads' samples in seconds."""
    with tempfile.TemporaryDirectory(prefix="fastgrok-bench-sweep-") as tmp:
        root = Path(tmp) / "sw"
        seeds = ",".join(str(s) for s in range(1, points + 1))
        cmd = [sys.executable, "-m", "fastgrok", "sweep", str(root), "--preset", "tiny", "--steps", str(steps),
               "--eval-every", str(steps), "--seeds", seeds, "--jobs", str(jobs), "--no-plots", "--quiet"]
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // jobs)))
        t0 = time.time()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"the sweep failed: {done.stderr.strip().splitlines()[-1:]}")
        recs = _attempts(root)
    if len(recs) != points:
        raise RuntimeError(f"{len(recs)} of {points} points recorded a finished attempt")
    first = {id(r): r["train_called"] + r["startup_s"] for r in recs}
    out: dict[str, list[float]] = {
        "to_first_step": [first[id(r)] - t0 for r in recs],
        "launch": [r["train_called"] - r["submitted"] for r in recs],
        "launch_cpu": [r["cpu_before_train_s"] for r in recs],
        "startup": [r["startup_s"] for r in recs],
        "overhead": [first[id(r)] - r["submitted"] - r["startup_s"] for r in recs],
        "gap": [],
    }
    # consecutive points of one slot: a point is submitted when an earlier one ends
    ends = sorted(r["end"] for r in recs)
    for r in sorted(recs, key=lambda r: r["submitted"]):
        before = [e for e in ends if e <= r["submitted"]]
        if before:
            out["gap"].append(first[id(r)] - max(before) - r["startup_s"])
    return out


def run(device: torch.device, rec: Recorder, *, quick: bool = False, compile: str = "off") -> None:
    """The sweep-overhead rows (the runs are tiny CPU runs whatever the device: the driver is measured)."""
    cases = [(3, 2)] if quick else [(8, 1), (8, 2)]
    cpu = torch.device("cpu")
    for points, jobs in cases:
        try:
            samples = measure_sweep(points, jobs)
        except (RuntimeError, subprocess.SubprocessError, OSError) as e:
            rec.note(f"sweep {points} points × {jobs} jobs failed: {e}")
            continue
        rec.add(row("sweep_overhead", f"local-jobs{jobs}", mode, "points", points, vals, "s", cpu)
                for mode, vals in samples.items() if vals)
