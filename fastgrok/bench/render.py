"""Render `<out_dir>/README.md` from the benchmark CSVs: the latest figure per benchmark, device and
provider, speedups against the reference, and the task-count goals. Generated, never edited by hand.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .core import FIELDS, TIME_UNITS, read_rows

PROVIDER_ORDER = ("reference", "reference-compiled", "fused", "fused-compiled", "fused-kernels-compiled",
                  "host-pipeline", "host-pipeline-compiled", "paper-code")
REFERENCE = "reference"
PAPER = "paper-code"  # the paper's own training loop (train_step rows; mode "step" its median, "step-mean" its mean)
HIDDEN_UNITS = ("steps/s",)  # 1000 / ms: the ms row says it already
GOALS_STARTUP = {"p29": 1.0, "p97": 5.0}  # seconds, at every n_id
GOAL_FLAT = 0.05  # step time spread across n_id
X_ORDER = ("shape", "config", "n_id", "max_ood", "T", "n_shots", "batch", "head_dim", "n_embd", "sampling")

Key = tuple[str, str, str, str, str, str, str]  # benchmark, device, provider, mode, x_name, x, unit


def latest(rows: list[dict[str, str]]) -> dict[Key, dict[str, str]]:
    """The newest row of every (benchmark, device, provider, mode, x_name, x, unit); later rows win ties."""
    out: dict[Key, dict[str, str]] = {}
    for r in rows:
        k = (r["benchmark"], r["device"], r["provider"], r["mode"], r["x_name"], r["x"], r["unit"])
        if k not in out or r["timestamp"] >= out[k]["timestamp"]:
            out[k] = r
    return out


def fmt(v: float) -> str:
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


def _cell(r: dict[str, str] | None) -> str:
    if r is None:
        return ""
    p50, p20, p80 = float(r["p50"]), float(r["p20"]), float(r["p80"])
    spread = (p80 - p20) / 2 / p50 * 100 if p50 else 0.0
    return fmt(p50) + (f" ±{spread:.0f}%" if spread >= 0.5 else "")


def _x_sort(x: str) -> tuple[int, float, str]:
    try:
        return (0, float(x), "")
    except ValueError:
        return (1, 0.0, x)


def _providers(present: set[str]) -> list[str]:
    """Known providers in order, each followed by its variants ("fused-compiled (embedding: reference)",
    "fused-ddp2"), then the rest."""
    def rank(p: str) -> tuple[int, int, str]:
        base = next((b for b in sorted(PROVIDER_ORDER, key=len, reverse=True) if p == b or p.startswith(b + " ")
                     or p.startswith(b + "-ddp")), None)
        return (PROVIDER_ORDER.index(base), p != base, p) if base else (len(PROVIDER_ORDER), 0, p)
    return sorted(present, key=rank)


def _table(cells: dict[Key, dict[str, str]], unit: str) -> list[str]:
    """One benchmark, device and unit: rows (mode, x), a column per provider, speedups on time units."""
    provs = _providers({k[2] for k in cells})
    others = [p for p in provs if p != REFERENCE] if REFERENCE in provs and unit in TIME_UNITS else []
    modes: dict[str, int] = {}
    for k in cells:
        modes.setdefault(k[3], len(modes))
    keys = sorted({(k[3], k[4], k[5]) for k in cells}, key=lambda m: (modes[m[0]], _x_name_rank(m[1]), _x_sort(m[2])))
    head = ["mode", "x", *provs, *(f"{p} × (median)" for p in others)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by = {(k[2], k[3], k[4], k[5]): r for k, r in cells.items()}
    for mode, x_name, x in keys:
        found = [by.get((p, mode, x_name, x)) for p in provs]
        speedups = []
        ref = by.get((REFERENCE, mode, x_name, x))
        for p in others:
            r = by.get((p, mode, x_name, x))
            ok = ref is not None and r is not None and float(r["p50"]) > 0
            speedups.append(f"{float(ref['p50']) / float(r['p50']):.2f}×" if ok else "")
        lines.append("| " + " | ".join([mode, f"{x_name}={x}", *map(_cell, found), *speedups]) + " |")
    return lines


def _x_name_rank(x_name: str) -> int:
    return X_ORDER.index(x_name) if x_name in X_ORDER else len(X_ORDER)


def _goals(cells: dict[Key, dict[str, str]]) -> list[str]:
    """Task-count goals: step time flat within 5 % across n_id; start-up under 1 s (p29) and 5 s (p97)."""
    lines = []
    steps: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for (bench, dev, prov, mode, x_name, x, unit), r in cells.items():
        if bench == "tasks_step" and unit == "ms":
            steps[(dev, prov, mode)].append(float(r["p50"]))
    for (dev, prov, mode), vals in sorted(steps.items()):
        if len(vals) > 1:
            spread = max(vals) / min(vals) - 1
            mark = "✓" if spread <= GOAL_FLAT else "✗"
            lines.append(f"- {mark} step time flat across n_id — {mode}, {prov}, {dev}: spread {100 * spread:.1f} % "
                         f"(goal ≤ {100 * GOAL_FLAT:.0f} %)")
    starts: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for (bench, dev, prov, mode, x_name, x, unit), r in cells.items():
        if bench == "tasks_startup" and unit == "s" and mode in GOALS_STARTUP:
            starts[(dev, prov, mode)].append(float(r["p50"]))
    for (dev, prov, mode), vals in sorted(starts.items()):
        goal = GOALS_STARTUP[mode]
        mark = "✓" if max(vals) < goal else "✗"
        lines.append(f"- {mark} start-up at {mode} — {prov}, {dev}: at most {max(vals):.3g} s over n_id (goal < {goal:g} s)")
    return lines


def _paper_lines(cells: dict[Key, dict[str, str]]) -> list[str]:
    """train_step against the paper's loop: its mean and its median step ÷ each provider's median, per device
    and config."""
    lines = []
    ms = {(k[1], k[2], k[3], k[5]): float(r["p50"]) for k, r in cells.items() if k[0] == "train_step" and k[6] == "ms"}
    for (dev, prov, mode, x), mean in sorted(ms.items()):
        if prov != PAPER or mode != "step-mean" or (dev, PAPER, "step", x) not in ms:
            continue
        median = ms[(dev, PAPER, "step", x)]
        ours = sorted(((p, v) for (d, p, m, xx), v in ms.items() if d == dev and xx == x and m == "step" and p != PAPER),
                      key=lambda pv: _providers({k[2] for k in cells}).index(pv[0]))
        if not ours:
            continue
        lines += [f"### train_step against the paper's loop — {dev}, {x}", "",
                  f"paper-code: mean {fmt(mean)} ms, median {fmt(median)} ms per step. Speedup = the paper's "
                  "statistic ÷ the provider's median (over windows of 10 steps' mean).", "",
                  "| provider | ms (median) | × paper mean | × paper median |", "|---|---|---|---|"]
        lines += [f"| {p} | {fmt(v)} | {mean / v:.2f}× | {median / v:.2f}× |" for p, v in ours]
        lines.append("")
    return lines


def render(out_dir: str | Path) -> str:
    """The markdown of `<out_dir>/README.md`."""
    out_dir = Path(out_dir)
    lines = ["# Benchmark results", "",
             "Generated by `fastgrok bench render` (or `python benchmarks/render.py`) from the CSVs in this folder: "
             "do not edit by hand. Each cell is the latest median (± half the 20–80 % spread, when ≥ 0.5 %) per "
             "benchmark, device, provider and point; `× (median)` columns are speedups over the `reference` provider "
             "in the time tables (ms, s): reference's median ÷ the provider's. A train_step median is over windows "
             "of 10 steps' mean step time; `paper-code` (the paper's own loop) has its per-step median (mode `step`) "
             "and mean (`step-mean`). How each benchmark is measured: docs/benchmarks.md.", ""]
    suite_order = {"kernels.csv": 0, "train.csv": 1, "tasks.csv": 2}
    csvs = sorted(Path(out_dir).glob("*.csv"), key=lambda p: (suite_order.get(p.name, 3), p.name))
    if not csvs:
        lines.append("No results yet: run `fastgrok bench`.")
    others = []  # CSVs of other columns (benchmarks/cpu_phenomenon.py's runs, say): not long-format rows
    for path in csvs:
        rows = read_rows(path)
        if rows and set(rows[0]) != set(FIELDS):
            others.append(path.name)
            continue
        try:
            lines += _section(path.name, rows)
        except (ValueError, TypeError, ZeroDivisionError) as e:  # a value that is not a number, say
            raise ValueError(f"{path}: a row with a bad value ({type(e).__name__}: {e})") from None
    if others:
        lines += [f"Not rendered (not long-format benchmark rows): {', '.join(others)}.", ""]
    return "\n".join(lines).rstrip() + "\n"


def _section(name: str, rows: list[dict[str, str]]) -> list[str]:
    """The markdown of one CSV: its goals, then a table per benchmark, device and unit."""
    cells = latest(rows)
    lines = [f"## {name}", ""]
    goals = _goals(cells)
    if goals:
        lines += ["Goals:", "", *goals, ""]
    paper = _paper_lines(cells)
    if paper:
        lines += paper
    groups: dict[tuple[str, str], dict[Key, dict[str, str]]] = defaultdict(dict)
    for k, r in cells.items():
        if k[6] not in HIDDEN_UNITS:
            groups[(k[0], k[1])][k] = r
    for (bench, dev), group in groups.items():
        rs = list(group.values())
        stamp = max(r["timestamp"] for r in rs)
        meta = {c: sorted({r[c] for r in rs}) for c in ("torch", "triton", "git_sha")}
        lines += [f"### {bench} — {dev}", "",
                  f"latest {stamp} · torch {', '.join(meta['torch'])} · triton {', '.join(meta['triton'])} · "
                  f"git {', '.join(meta['git_sha'])}", ""]
        units = list(dict.fromkeys(k[6] for k in group))  # first-seen order, time units first
        for unit in sorted(units, key=lambda u: (u not in TIME_UNITS, units.index(u))):
            lines += [f"{unit}:", "", *_table({k: r for k, r in group.items() if k[6] == unit}, unit), ""]
    return lines


def write(out_dir: str | Path) -> Path:
    """Render and (re)write `<out_dir>/README.md` (it is generated, so rewriting is the point)."""
    path = Path(out_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(out_dir))
    return path
