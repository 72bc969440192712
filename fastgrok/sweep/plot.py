"""Figures of a sweep or a run (the `plot` extra: matplotlib, imported on first use).

Sweep: phase_diagram.png (α on x, n_id on a log₂ y axis, one panel per depth, cells coloured by phase —
the paper's Figure 1b — at the end and at the best-o.o.d. checkpoint), kshot.png (o.o.d.-test accuracy
against shot index at the best checkpoint — Figure 1c) and curves.png (the four sets' accuracy against
step, one small panel per run). Run: curves.png and kshot.png. Plot kinds plug in as engines do: a dict
name → function, one resolver.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from .. import runfolder
from ..sets import PHASES, SPLITS
from .grid import format_value
from .results import best_record, sweep_rows, usable_history
from .spec import SPEC_FILE, Sweep, load_sweep
from .state import FINISHED

PHASE_COLORS = dict(zip(PHASES, ("#d9d9d9", "#9ecae1", "#3182bd", "#fdae6b", "#d62728", "#bcbddc")))
PHASE_LABELS = dict(zip(PHASES, ("not learned", "i.d. memorization", "i.d. generalization", "o.o.d. memorization",
                                 "o.o.d. generalization", "mixed")))
SET_COLORS = dict(zip(SPLITS, ("#1f77b4", "#2ca02c", "#ff7f0e", "#d62728")))
MAX_CURVE_PANELS = 64


class PlotUnavailable(ValueError):
    """matplotlib is not installed."""


def pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable("figures need matplotlib: pip install 'fastgrok[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_png(fig: Any, path: Path) -> Path:
    """Write through a temporary name so a reader never sees half a PNG."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")  # two workers may draw at once
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        tmp.replace(path)
    except OSError as e:  # a full disk at write has no file name: name the figure
        tmp.unlink(missing_ok=True)
        pyplot().close(fig)
        if e.filename is None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise
    pyplot().close(fig)
    return path


def _majority(phases: list[str | None]) -> str | None:
    phases = [p for p in phases if p]
    return Counter(phases).most_common(1)[0][0] if phases else None


def _layout(sweep: Sweep) -> tuple[str | None, str | None, str | None]:
    """(x axis, y axis, panel axis) of the phase diagram: α, n_id (or n_pl), depth where the grid has them."""
    axes = list(sweep.grid)
    x = "alpha" if "alpha" in axes else None
    y = "n_id" if "n_id" in axes else "n_pl" if "n_pl" in axes else None
    panel = "depth" if "depth" in axes else None
    rest = [a for a in axes if a not in (x, y, panel, "seed")]
    if x is None and rest:
        x = rest.pop(0)
    if y is None and rest:
        y = rest.pop(0)
    return x, y, panel


def phase_diagram(sweep: Sweep, rows: list[dict[str, Any]], out: Path) -> Path:
    plt = pyplot()
    x_ax, y_ax, p_ax = _layout(sweep)
    xs = sorted(sweep.grid[x_ax]) if x_ax else [None]
    ys = sorted(sweep.grid[y_ax]) if y_ax else [None]
    panels = sorted(sweep.grid[p_ax]) if p_ax else [None]
    fig, axs = plt.subplots(2, len(panels), figsize=(0.55 * len(xs) * len(panels) + 2.5, 0.45 * len(ys) * 2 + 2.2),
                            squeeze=False, layout="constrained")
    for r, which in enumerate(("final", "best")):
        for c, pv in enumerate(panels):
            ax = axs[r][c]
            for i, yv in enumerate(ys):
                for j, xv in enumerate(xs):
                    cell = [row for row in rows if (x_ax is None or row[x_ax] == xv) and (y_ax is None or row[y_ax] == yv)
                            and (p_ax is None or row[p_ax] == pv)]
                    phase = _majority([row[f"phase_{which}"] for row in cell])
                    done = all(row["status"] in FINISHED for row in cell)
                    color = PHASE_COLORS.get(phase, "white") if phase else "white"
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=color, edgecolor="white",
                                               hatch=None if done or not phase else "//"))
                    accs = [row[f"{which}_ood_test_acc_last"] for row in cell if row[f"{which}_ood_test_acc_last"] is not None]
                    if accs:
                        ax.text(j, i, f"{sum(accs) / len(accs):.2f}", ha="center", va="center", fontsize=6)
            ax.set_xlim(-0.5, len(xs) - 0.5)
            ax.set_ylim(-0.5, len(ys) - 0.5)
            ax.set_xticks(range(len(xs)), [format_value(v) for v in xs], fontsize=7)
            ylabels = [f"$2^{{{int(math.log2(v))}}}$" if isinstance(v, int) and v > 0 and v & (v - 1) == 0 else format_value(v)
                       for v in ys] if y_ax else [""]
            ax.set_yticks(range(len(ys)), ylabels, fontsize=7)
            ax.set_xlabel(x_ax or "")
            if c == 0:
                ax.set_ylabel(f"{y_ax or ''} ({'end' if which == 'final' else 'best o.o.d. ckpt'})")
            ax.set_title(f"{p_ax} {format_value(pv)}" if p_ax else ("end of training" if which == "final"
                                                                    else "best o.o.d. checkpoint"), fontsize=9)
            ax.set_aspect("equal")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in PHASE_COLORS.values()]
    fig.legend(handles, list(PHASE_LABELS.values()), loc="outside lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle(f"phase: sets solved at last-shot acc ≥ {rows[0]['phase_threshold']}\n"
                 "number: o.o.d.-test last-shot acc; hatched: not finished", fontsize=8)
    return save_png(fig, out / "phase_diagram.png")


def _histories(sweep: Sweep, rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    return [(row, h) for row in rows if (h := _history(sweep.root / row["run_dir"]))]


def _history(run_dir: Path) -> list[dict[str, Any]]:
    return usable_history(run_dir)[0]  # a damaged run: its row says why; the figures go on


def kshot(sweep: Sweep, rows: list[dict[str, Any]], out: Path) -> Path:
    plt = pyplot()
    _, _, p_ax = _layout(sweep)
    panels = sorted(sweep.grid[p_ax]) if p_ax else [None]
    fig, axs = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False,
                            layout="constrained")
    seen: set[str] = set()
    for (row, h) in _histories(sweep, rows):
        c = panels.index(row[p_ax]) if p_ax else 0
        best = best_record(h)
        seen.add(best["phase"])
        axs[0][c].plot(best["sets"]["ood_test"]["kshot"], color=PHASE_COLORS.get(best["phase"], "black"), lw=0.8,
                       alpha=0.7)
    handles = [plt.Line2D([], [], color=PHASE_COLORS[p]) for p in PHASE_COLORS if p in seen]
    fig.legend(handles, [PHASE_LABELS[p] for p in PHASE_COLORS if p in seen], loc="outside lower center",
               ncol=max(1, len(handles)), fontsize=7, frameon=False, title="phase at the best checkpoint",
               title_fontsize=7)
    for c, pv in enumerate(panels):
        ax = axs[0][c]
        ax.set_xlabel("shot index")
        ax.set_ylabel("o.o.d. test accuracy (best ckpt)")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{p_ax} {format_value(pv)}" if p_ax else "k-shot curve of each run", fontsize=9)
    return save_png(fig, out / "kshot.png")


def _curve_panel(ax: Any, history: list[dict[str, Any]], title: str, small: bool) -> None:
    steps = [r["step"] for r in history]
    for s in SPLITS:
        ax.plot(steps, [r["sets"][s]["acc_last"] for r in history], color=SET_COLORS[s], lw=0.9, label=s)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=6 if small else 9)
    ax.tick_params(labelsize=5 if small else 8)


def curves(sweep: Sweep, rows: list[dict[str, Any]], out: Path) -> Path:
    plt = pyplot()
    runs = _histories(sweep, rows)[:MAX_CURVE_PANELS]
    if not runs:
        raise ValueError(f"no run of {sweep.root} has an evaluation yet")
    x_ax, _, _ = _layout(sweep)
    ncol = min(len(runs), len(sweep.grid[x_ax]) if x_ax else 4, 8) or 1
    nrow = math.ceil(len(runs) / ncol)
    fig, axs = plt.subplots(nrow, ncol, figsize=(1.9 * ncol + 0.5, 1.5 * nrow + 0.8), squeeze=False, sharey=True)
    for k, (row, h) in enumerate(runs):
        title = " ".join(f"{a}={format_value(row[a])}" for a in sweep.grid)
        _curve_panel(axs[k // ncol][k % ncol], h, title, small=True)
    for k in range(len(runs), nrow * ncol):
        axs[k // ncol][k % ncol].axis("off")
    handles, labels = axs[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False, bbox_to_anchor=(0.5, -0.03))
    fig.suptitle("last-shot accuracy of the four sets against step", fontsize=9)
    fig.tight_layout()
    return save_png(fig, out / "curves.png")


def run_curves(run_dir: Path, history: list[dict[str, Any]], out: Path) -> Path:
    plt = pyplot()
    fig, axs = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    steps = [r["step"] for r in history]
    for s in SPLITS:
        axs[0].plot(steps, [r["sets"][s]["acc"] for r in history], color=SET_COLORS[s], label=s)
        axs[1].plot(steps, [r["sets"][s]["acc_last"] for r in history], color=SET_COLORS[s], label=s)
    for ax, what in zip(axs, ("all shots", "last shot")):
        ax.set_xlabel("step")
        ax.set_ylabel(f"accuracy ({what})")
        ax.set_ylim(-0.02, 1.02)
    axs[1].legend(fontsize=8)
    fig.suptitle(str(run_dir), fontsize=8)
    return save_png(fig, out / "curves.png")


def run_kshot(run_dir: Path, history: list[dict[str, Any]], out: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    last, best = history[-1], best_record(history)
    for s in SPLITS:
        ax.plot(last["sets"][s]["kshot"], color=SET_COLORS[s], label=f"{s} (step {last['step']})")
    ax.plot(best["sets"]["ood_test"]["kshot"], color=SET_COLORS["ood_test"], ls="--",
            label=f"ood_test, best ckpt (step {best['step']})")
    ax.set_xlabel("shot index")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    return save_png(fig, out / "kshot.png")


# kind → function(sweep, rows, out) for sweeps, function(run_dir, history, out) for runs.
SWEEP_PLOTS: dict[str, Callable] = {"phase_diagram": phase_diagram, "kshot": kshot, "curves": curves}
RUN_PLOTS: dict[str, Callable] = {"curves": run_curves, "kshot": run_kshot}


def plot_sweep(root: str | Path, out: str | Path | None = None, kinds: tuple[str, ...] | None = None,
               quiet: bool = False) -> list[Path]:
    """Draw a sweep's figures (all kinds, or those named) into `out` (default: the sweep folder)."""
    pyplot()
    sweep = load_sweep(root)
    out = Path(out) if out is not None else sweep.root
    rows = sweep_rows(sweep)
    if not any(r["steps"] for r in rows):
        if quiet:
            return []
        damaged = [r["reason"] for r in rows if r["reason"]]  # a damaged metrics.jsonl reads as no evaluation
        why = f" ({len(damaged)} point(s) damaged or failed; the first: {damaged[0]})" if damaged else ""
        raise ValueError(f"no run of {sweep.root} has an evaluation yet{why}: nothing to draw")
    out.mkdir(parents=True, exist_ok=True)
    unknown = [k for k in kinds or () if k not in SWEEP_PLOTS]
    if unknown:
        raise ValueError(f"unknown plot kind(s) {', '.join(unknown)}; kinds: {', '.join(SWEEP_PLOTS)}")
    return [SWEEP_PLOTS[k](sweep, rows, out) for k in (kinds or tuple(SWEEP_PLOTS))]


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Draw one run's curves.png and kshot.png."""
    pyplot()
    run_dir = Path(run_dir)
    history, why = usable_history(run_dir)
    if why:
        raise ValueError(why)
    if not history:
        raise ValueError(f"{str(run_dir)!r} has no evaluation yet ({runfolder.METRICS} is empty or missing)")
    out = Path(out) if out is not None else run_dir
    out.mkdir(parents=True, exist_ok=True)
    return [f(run_dir, history, out) for f in RUN_PLOTS.values()]


def plot_path(path: str | Path, out: str | Path | None = None) -> list[Path]:
    """A sweep folder's figures, or a run folder's."""
    if out is not None and not str(out).strip():
        raise ValueError(f"--out {str(out)!r} names no folder (leave it out to draw into {str(path)!r} itself)")
    path = Path(path)
    if (path / SPEC_FILE).is_file():
        return plot_sweep(path, out)
    if (path / runfolder.CONFIG).is_file():
        return plot_run(path, out)
    raise ValueError(f"{str(path)!r} is neither a sweep folder ({SPEC_FILE}) nor a run folder ({runfolder.CONFIG})")
