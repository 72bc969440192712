"""A sweep's results: one row per point (grid values, status, steps, time, final and best-o.o.d. metrics of
the four sets, phases; `run_dir` relative to the sweep folder), written to SWEEP_DIR/results.csv and .jsonl,
and the `--status` table.

Everything is read from the run folders (through fastgrok.runfolder) and the sweep's state/ files, so the
rows can be rebuilt at any time, while runs go on or after a crash.
"""
from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any, Mapping

from .. import runfolder
from ..checkpoint import atomic_write_text
from ..sets import LEARNED_PHASES, PHASES, SPLITS
from .grid import format_value, point_name
from .spec import Sweep
from .state import STATES, TO_LAUNCH, UNKNOWN, failure_reason, point_status, read_attempts

RESULTS_CSV, RESULTS_JSONL = "results.csv", "results.jsonl"


def _whole(rec: dict[str, Any]) -> bool:
    sets = rec.get("sets")
    return (isinstance(sets, dict) and isinstance(rec.get("phase"), str)
            and all(isinstance(sets.get(s), dict) and isinstance(sets[s].get("acc"), (int, float)) for s in SPLITS))


def usable_history(run_dir: Path) -> tuple[list[dict[str, Any]], str | None]:
    """A run's records without the per-task lists (cached: fastgrok.runfolder), or none and why: a damaged
    metrics.jsonl, or a record without the four sets' metrics (written by hand, or by another program)."""
    try:
        history = runfolder.read_history(run_dir, slim=True)
    except runfolder.RunFolderError as e:
        return [], str(e)
    bad = next((r for r in history if not _whole(r)), None)
    if bad is not None:
        return [], f"{Path(run_dir) / runfolder.METRICS}: the record of step {bad['step']} lacks the four sets' metrics"
    return history, None


def _finished_damage(run_dir: Path, status: str, history: list[dict[str, Any]]) -> str | None:
    """A summary.json that is not a JSON object (the point reads as interrupted and resumes from last.pt), or a
    finished run with no evaluation on file (its metrics.jsonl emptied)."""
    summary = Path(run_dir) / runfolder.SUMMARY
    if summary.is_file() and runfolder.read_summary(run_dir) is None:
        return f"{summary} is damaged (not a JSON object): the point resumes from last.pt when the sweep runs again"
    if status in runfolder.FINISHED and not history:
        return f"{Path(run_dir) / runfolder.METRICS} holds no evaluation, yet the run finished: its records are lost"
    return None


def best_record(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The evaluation with the best o.o.d.-test accuracy (the first such: best.pt keeps the first)."""
    best = None
    for rec in history:
        if best is None or rec["sets"]["ood_test"]["acc"] > best["sets"]["ood_test"]["acc"]:
            best = rec
    return best


def run_row(run_dir: Path, history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Metrics of one run folder: steps, time, final and best-o.o.d. accuracies, phases, first step of each phase."""
    if history is None:
        history, _ = usable_history(run_dir)
    summary = runfolder.read_summary(run_dir) or {}
    try:
        train = runfolder.load_config(run_dir).train
    except runfolder.RunFolderError:
        train = None
    last, best = (history[-1] if history else None), best_record(history)
    row: dict[str, Any] = {
        "steps": last["step"] if last else 0,
        "steps_total": train.steps if train else None,
        "stopped_early": bool(summary.get("stopped_early", False)),
        "phase_threshold": train.phase_threshold if train else None,
        "phase_final": last["phase"] if last else None,
        "phase_best": best["phase"] if best else None,
        "best_step": best["step"] if best else None,
    }
    for tag, rec in (("final", last), ("best", best)):
        for s in SPLITS:
            m = rec["sets"][s] if rec else {}
            row[f"{tag}_{s}_acc"] = m.get("acc")
            row[f"{tag}_{s}_acc_last"] = m.get("acc_last")
    for phase in LEARNED_PHASES:
        row[f"first_step_{phase}"] = next((r["step"] for r in history if r["phase"] == phase), None)
    return row


def sweep_rows(sweep: Sweep, held: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per point of the sweep, in grid order; `held`: the points an engine holds that their run
    folders do not show yet, name → queued | running | unknown (fastgrok.sweep.engine_states asks them)."""
    held = held or {}
    rows = []
    for point in sweep.points():
        name = point_name(point)
        run_dir = sweep.runs / name
        status = point_status(sweep.root, name)
        if status in TO_LAUNCH and name in held:
            status = held[name]
        attempts = [a for a in read_attempts(sweep.root, name) if "end" in a and "train_called" in a]
        wall = sum(a["end"] - a["train_called"] for a in attempts)
        row: dict[str, Any] = {"name": name, **point, "status": status,
                               "reason": failure_reason(sweep.root, name) if status == "failed" else None}
        history, damage = usable_history(run_dir)
        row.update(run_row(run_dir, history))
        if row["reason"] is None:
            row["reason"] = damage or _finished_damage(run_dir, status, history)  # a damaged file, named
        summary = runfolder.read_summary(run_dir) or {}
        row["wall_s"] = round(wall, 2) if attempts else summary.get("wall_s")
        row["steps_per_s"] = summary.get("steps_per_s")
        row["attempts"] = len(attempts)
        row["run_dir"] = str(run_dir.relative_to(sweep.root))
        rows.append(row)
    return rows


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return format_value(round(v, 6))
    return v


def _remove_stale_tmp(root: Path, age_s: float = 60.0) -> None:
    """Temporary files a killed writer of results.csv/.jsonl left (a live one's are younger than `age_s`)."""
    now = time.time()
    for p in root.glob(".results.*.tmp"):
        try:
            if now - p.stat().st_mtime > age_s:
                p.unlink()
        except OSError:
            pass


def write_results(sweep: Sweep, held: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Rewrite SWEEP_DIR/results.csv and results.jsonl from the folders; returns the rows."""
    rows = sweep_rows(sweep, held)
    if not rows:
        return rows
    _remove_stale_tmp(sweep.root)
    cols = list(rows[0])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(r.get(k)) for k in cols})
    atomic_write_text(buf.getvalue(), sweep.root / RESULTS_CSV)
    atomic_write_text("".join(json.dumps(r) + "\n" for r in rows), sweep.root / RESULTS_JSONL)
    for name in (RESULTS_CSV, RESULTS_JSONL):
        (sweep.root / name).chmod(0o644)  # readable by the cluster's other users, like the run folders
    return rows


SHORT = dict(zip(PHASES, ("—", "id mem", "id gen", "ood mem", "ood gen", "mixed")))
_STYLE = dict(zip(STATES, ("green", "green", "cyan", "blue", "magenta", "yellow", "yellow", "dim", "red")))


def status_table(sweep: Sweep, rows: list[dict[str, Any]] | None = None) -> Any:
    """A rich table: each point's status, phase, best o.o.d. accuracy, steps and steps/s."""
    from rich.table import Table
    rows = sweep_rows(sweep) if rows is None else rows
    counts = {s: sum(r["status"] == s for r in rows) for s in STATES}
    title = f"sweep {sweep.root} — " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    table = Table(title=title)
    for axis in sweep.grid:
        table.add_column(axis, justify="right")
    for col in ("status", "phase (end)", "phase (best)", "best ood", "steps", "steps/s", "note"):
        table.add_column(col, justify="left" if col in ("status", "note") or col.startswith("phase") else "right")
    for r in rows:
        best = r["best_ood_test_acc"]
        steps = f"{r['steps']}/{r['steps_total']}" if r["steps_total"] else str(r["steps"])
        note = r["reason"] or ("stopped once settled" if r["stopped_early"] else
                               "SLURM does not answer: its job may still run" if r["status"] == UNKNOWN else "")
        st = r["status"]
        table.add_row(*(format_value(r[a]) for a in sweep.grid), f"[{_STYLE.get(st, '')}]{st}[/]",
                      SHORT.get(r["phase_final"], r["phase_final"] or ""), SHORT.get(r["phase_best"], r["phase_best"] or ""), f"{best:.3f}" if best is not None else "",
                      steps, f"{r['steps_per_s']:.2f}" if r["steps_per_s"] else "", note)
    return table


def print_table(sweep: Sweep, rows: list[dict[str, Any]]) -> None:
    """The status table on stdout (fastgrok.sweep.print_status writes results.csv first)."""
    from rich.console import Console
    console = Console(highlight=False)
    if not console.is_terminal:  # piped or logged: room for every column
        console = Console(highlight=False, width=max(console.width, 140))
    console.print(status_table(sweep, rows))
