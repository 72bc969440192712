"""A sweep's results: one row per point (grid values, status, steps, time, final and best-o.o.d. metrics of
the four sets, phases; `run_dir` relative to the sweep folder), written to SWEEP_DIR/results.csv and .jsonl,
and the `--status` table.

Everything is read from the run folders (config.json, metrics.jsonl, summary.json) and the sweep's
state/ files, so the rows can be rebuilt at any time, while runs go on or after a crash.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from .sweep import Sweep, failure_reason, format_value, point_name, point_status, read_attempts, read_json

SETS = ("train", "id_test", "ood_train", "ood_test")
PHASE_ORDER = ("id_memorization", "id_generalization", "ood_memorization", "ood_generalization")
STATUS_ORDER = ("done", "stopped", "running", "queued", "interrupted", "pending", "failed")


_SLIM_DROP = ("task_acc", "task_acc_last")
_HISTORY_CACHE: dict[Path, tuple[tuple[int, int], list[dict[str, Any]]]] = {}


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The evaluation records of a run folder without the per-task lists (a torn last line, from a kill
    mid-write, is skipped). Cached on the file's size and mtime: a sweep of paper-sized runs rereads only
    the runs that moved (each line holds hundreds of per-task accuracies)."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        st = path.stat()
    except OSError:
        return []
    key = (st.st_mtime_ns, st.st_size)
    hit = _HISTORY_CACHE.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        for m in rec.get("sets", {}).values():
            for k in _SLIM_DROP:
                m.pop(k, None)
        out.append(rec)
    _HISTORY_CACHE[path] = (key, out)
    return out


def best_record(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The evaluation with the best o.o.d.-test accuracy (the first such: best.pt keeps the first)."""
    best = None
    for rec in history:
        if best is None or rec["sets"]["ood_test"]["acc"] > best["sets"]["ood_test"]["acc"]:
            best = rec
    return best


def run_row(run_dir: Path) -> dict[str, Any]:
    """Metrics of one run folder: steps, time, final and best-o.o.d. accuracies, phases, first step of each phase."""
    history = read_history(run_dir)
    summary = read_json(run_dir / "summary.json") or {}
    cfg = read_json(run_dir / "config.json") or {}
    last, best = (history[-1] if history else None), best_record(history)
    row: dict[str, Any] = {
        "steps": last["step"] if last else 0,
        "steps_total": cfg.get("train", {}).get("steps"),
        "stopped_early": bool(summary.get("stopped_early", False)),
        "phase_threshold": cfg.get("train", {}).get("phase_threshold"),
        "phase_final": last["phase"] if last else None,
        "phase_best": best["phase"] if best else None,
        "best_step": best["step"] if best else None,
    }
    for tag, rec in (("final", last), ("best", best)):
        for s in SETS:
            m = rec["sets"][s] if rec else {}
            row[f"{tag}_{s}_acc"] = m.get("acc")
            row[f"{tag}_{s}_acc_last"] = m.get("acc_last")
    for phase in PHASE_ORDER:
        row[f"first_step_{phase}"] = next((r["step"] for r in history if r["phase"] == phase), None)
    return row


def sweep_rows(sweep: Sweep, slurm: bool = True) -> list[dict[str, Any]]:
    """One row per point of the sweep, in grid order."""
    names = sweep.names()
    queued: dict[str, str] = {}
    if slurm and (sweep.state.is_dir() and any(sweep.state.glob("*.job"))):
        from .engines import ACTIVE_SLURM, slurm_states
        queued = {n: s for n, s in slurm_states(sweep, names).items() if s.upper() in ACTIVE_SLURM}
    rows = []
    for point in sweep.points():
        name = point_name(point)
        run_dir = sweep.runs / name
        status = point_status(sweep.root, name)
        if status in ("pending", "interrupted") and name in queued:
            status = "queued"
        attempts = [a for a in read_attempts(sweep.root, name) if "end" in a and "train_called" in a]
        wall = sum(a["end"] - a["train_called"] for a in attempts)
        row: dict[str, Any] = {"name": name, **point, "status": status,
                               "reason": failure_reason(sweep.root, name) if status == "failed" else None}
        row.update(run_row(run_dir))
        summary = read_json(run_dir / "summary.json") or {}
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


def write_results(sweep: Sweep) -> list[dict[str, Any]]:
    """Rewrite SWEEP_DIR/results.csv and results.jsonl from the folders; returns the rows."""
    from .checkpoint import atomic_write_text
    rows = sweep_rows(sweep)
    if not rows:
        return rows
    cols = list(rows[0])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(r.get(k)) for k in cols})
    atomic_write_text(buf.getvalue(), sweep.root / "results.csv")
    atomic_write_text("".join(json.dumps(r) + "\n" for r in rows), sweep.root / "results.jsonl")
    for name in ("results.csv", "results.jsonl"):
        (sweep.root / name).chmod(0o644)  # readable by the cluster's other users, like the run folders
    return rows


SHORT = {"not_learned": "—", "id_memorization": "id mem", "id_generalization": "id gen",
         "ood_memorization": "ood mem", "ood_generalization": "ood gen", "mixed": "mixed"}
_STYLE = {"done": "green", "stopped": "green", "running": "cyan", "queued": "blue", "interrupted": "yellow",
          "pending": "dim", "failed": "red"}


def status_table(sweep: Sweep, rows: list[dict[str, Any]] | None = None) -> Any:
    """A rich table: each point's status, phase, best o.o.d. accuracy, steps and steps/s."""
    from rich.table import Table
    rows = sweep_rows(sweep) if rows is None else rows
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUS_ORDER}
    title = f"sweep {sweep.root} — " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    table = Table(title=title)
    for axis in sweep.grid:
        table.add_column(axis, justify="right")
    for col in ("status", "phase (end)", "phase (best)", "best ood", "steps", "steps/s", "note"):
        table.add_column(col, justify="left" if col in ("status", "note") or col.startswith("phase") else "right")
    for r in rows:
        best = r["best_ood_test_acc"]
        steps = f"{r['steps']}/{r['steps_total']}" if r["steps_total"] else str(r["steps"])
        note = r["reason"] or ("stopped once settled" if r["stopped_early"] else "")
        st = r["status"]
        table.add_row(*(format_value(r[a]) for a in sweep.grid), f"[{_STYLE.get(st, '')}]{st}[/]",
                      SHORT.get(r["phase_final"], r["phase_final"] or ""), SHORT.get(r["phase_best"], r["phase_best"] or ""), f"{best:.3f}" if best is not None else "",
                      steps, f"{r['steps_per_s']:.2f}" if r["steps_per_s"] else "", note)
    return table


def print_status(sweep: Sweep) -> list[dict[str, Any]]:
    from rich.console import Console
    rows = write_results(sweep)
    console = Console(highlight=False)
    if not console.is_terminal:  # piped or logged: room for every column
        console = Console(highlight=False, width=max(console.width, 140))
    console.print(status_table(sweep, rows))
    return rows
