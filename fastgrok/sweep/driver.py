"""The driver: what is left of a sweep, launched through an engine, with results.csv and the figures
redrawn as points end (the top layer of fastgrok.sweep: it imports the others, none imports it)."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import Any

from ..config import FieldError
from .engines import EngineCall, SlurmOptions, engine_states, get_engine
from .plot import PlotUnavailable, plot_sweep
from .results import print_table, write_results
from .spec import Sweep
from .state import FAILED, RUNNING, TO_LAUNCH, clear_failure, point_status
from .worker import one_line


@dataclass
class SweepOptions:
    engine: str = "local"
    jobs: int = 1                              # local: points at a time
    retry_failed: bool = False
    stop_when_settled: int | None = None
    plots: bool = True
    slurm: SlurmOptions = field(default_factory=SlurmOptions)

    def check(self) -> None:
        """Every field, before anything is written (a bad option leaves no sweep folder behind)."""
        if not isinstance(self.jobs, int) or self.jobs < 1:
            raise FieldError("jobs", f"jobs={self.jobs!r} must be an integer ≥ 1")
        if self.stop_when_settled is not None and (not isinstance(self.stop_when_settled, int)
                                                   or self.stop_when_settled < 1):
            raise FieldError("stop_when_settled", f"stop_when_settled={self.stop_when_settled!r} must be an integer ≥ 1")
        get_engine(self.engine)
        if self.engine == "slurm":
            self.slurm.check()
            missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
            if missing:  # here, not at submission: a sweep folder would be left behind
                raise FieldError("engine", f"the slurm engine needs sbatch and srun on PATH ({', '.join(missing)} "
                                 "missing here: run it on a SLURM login node)")


def todo(sweep: Sweep, retry_failed: bool = False) -> tuple[list[str], dict[str, str]]:
    """The points to launch now, and the state of every point."""
    states = {name: point_status(sweep.root, name) for name in sweep.names()}
    launch = []
    for name, st in states.items():
        if st == FAILED and retry_failed:
            clear_failure(sweep.root, name)
            states[name] = st = point_status(sweep.root, name)
        if st in TO_LAUNCH:
            launch.append(name)
    return launch, states


def print_status(sweep: Sweep) -> list[dict[str, Any]]:
    """Rewrite results.csv/.jsonl and print the table of points, with what the engines hold."""
    rows = write_results(sweep, engine_states(sweep))
    print_table(sweep, rows)
    return rows


def run_sweep(sweep: Sweep, opts: SweepOptions, log: Any = print) -> dict[str, str]:
    """Launch what is left through the chosen engine; returns the final state of every point."""
    opts.check()
    engine = get_engine(opts.engine)
    engine_states(sweep)  # what the engines know first: a job SLURM reports failed makes its point failed
    launch, states = todo(sweep, opts.retry_failed)
    counts = {s: sum(v == s for v in states.values()) for s in sorted(set(states.values()))}
    log(f"sweep {sweep.root}: {len(states)} points ({', '.join(f'{n} {s}' for s, n in counts.items())}); "
        f"launching {len(launch)} on {opts.engine}")
    sweep.state.mkdir(parents=True, exist_ok=True)
    plots = {"on": opts.plots}

    def on_change() -> None:
        write_results(sweep, engine_states(sweep))
        if plots["on"]:
            try:
                plot_sweep(sweep.root, quiet=True)
            except PlotUnavailable:
                plots["on"] = False
            except Exception as e:  # noqa: BLE001 — a figure must never stop a sweep
                plots["on"] = False
                log(f"  figures not redrawn ({one_line(e)}); `fastgrok plot {sweep.root}` draws them")

    busy = [n for n, s in states.items() if s == RUNNING]
    engine.run(sweep, launch, busy, EngineCall(opts.jobs, opts.stop_when_settled, opts.slurm, on_change, log,
                                               opts.plots))
    final = {name: point_status(sweep.root, name) for name in sweep.names()}
    on_change()
    return final
