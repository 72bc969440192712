"""Sweeps: a grid of configs as one resumable command (the paper's Figure 1b is 7 × 7 runs per depth
and seed), run by an engine (submitit's local executor or a SLURM job array).

A point is finished when its run folder has a summary (all steps run, or stopped once settled):
re-running skips it, resumes an interrupted one from its checkpoint, and never runs one twice at once
(the run folder's lock, fastgrok.runfolder). Everything a worker does goes through the public `train()`
and the run folder.

The modules import one way (tests/test_imports.py checks it), each only from those before it:

    grid      axes, value ranges, a point's folder name
    spec      the sweep folder: base config, grid, sweep.json
    state     a point's state and the sweep's bookkeeping (state/)
    results   results.csv/.jsonl and the status table (what an engine holds comes as an argument)
    plot      the figures
    worker    one point in an engine's process (PointJob)
    engines   who runs the points: local, slurm (SlurmOptions); what each holds (engine_states)
    driver    run_sweep: what is left, through an engine, results and figures redrawn as points end
"""
from .driver import SweepOptions, print_status, run_sweep, todo
from .engines import ENGINES, SlurmOptions, engine_states, get_engine, local_slots, parse_time
from .grid import format_value, parse_grid, point_name
from .plot import PlotUnavailable, plot_path, plot_run, plot_sweep
from .results import run_row, status_table, sweep_rows, write_results
from .spec import Sweep, load_sweep, open_sweep
from .state import point_status, read_attempts, settled
from .worker import PointJob, run_point

__all__ = [
    "ENGINES", "PlotUnavailable", "PointJob", "SlurmOptions", "Sweep", "SweepOptions", "format_value", "get_engine",
    "load_sweep", "local_slots", "open_sweep", "parse_grid", "parse_time", "plot_path", "plot_run", "plot_sweep",
    "point_name", "point_status", "print_status", "engine_states", "read_attempts", "run_point", "run_row",
    "run_sweep", "settled", "status_table", "sweep_rows", "todo", "write_results",
]
