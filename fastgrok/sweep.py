"""Sweeps: a grid of configs as one resumable command (the paper's Figure 1b is 7 × 7 runs per depth
and seed), run by an engine (`fastgrok.engines`: submitit's local executor or a SLURM job array).

    SWEEP_DIR/sweep.json           the base config and the grid (a different one is refused; new values extend it)
    SWEEP_DIR/runs/<point>/        one ordinary run folder per point (config.json, metrics.jsonl, last.pt, …)
    SWEEP_DIR/state/<point>.*      sweep bookkeeping: .failed.json (one-line reason), .attempts.jsonl, .job (a SLURM job id)
    SWEEP_DIR/results.csv, .jsonl  one row per point (fastgrok.results)

A point is finished when its run folder has a summary.json (all steps run, or stopped once settled):
re-running skips it, resumes an interrupted one from last.pt, and never runs one twice at once
(the run folder's lock, fastgrok.runfolder). Everything a worker does goes through the public `train()` and the run-folder files.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import PRESETS, Config, _flatten_keys
from .grid import PER_RUN, format_value, parse_grid, point_name  # noqa: F401  (parse_grid: re-exported)

SPEC_FILE = "sweep.json"
SPEC_VERSION = 1
PAIRS = {"n_id": ("n_id", "n_pl"), "n_pl": ("n_id", "n_pl")}  # one of the pair is derived from the other
SETTLED_PHASE = "ood_generalization"        # all four sets solved


# ---- the sweep folder ------------------------------------------------------------------------------
@dataclass
class Sweep:
    """A sweep folder: base config (flat, resolved, without the axes) and grid."""

    root: Path
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    stop_when_settled: int | None = None
    created: str = ""
    _cfgs: dict[str, Config] = field(default_factory=dict, repr=False)

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def points(self) -> list[dict[str, Any]]:
        axes = list(self.grid)
        return [dict(zip(axes, combo)) for combo in itertools.product(*self.grid.values())]

    def names(self) -> list[str]:
        return [point_name(p) for p in self.points()]

    def config(self, point: dict[str, Any]) -> Config:
        """The point's full config: base, then the point's values, written to runs/<name>."""
        name = point_name(point)
        if name not in self._cfgs:
            self._cfgs[name] = Config.from_flat({**self.base, **point, "out_dir": str(self.runs), "run_name": name})
        return self._cfgs[name]

    def point_of(self, name: str) -> dict[str, Any]:
        for p in self.points():
            if point_name(p) == name:
                return p
        raise ValueError(f"{name!r} is not a point of the sweep in {self.root}")

    def to_json(self) -> dict[str, Any]:
        return {"fastgrok_sweep": SPEC_VERSION, "base": self.base, "grid": self.grid,
                "stop_when_settled": self.stop_when_settled, "created": self.created}

    def save(self) -> None:
        from .checkpoint import atomic_write_text
        atomic_write_text(json.dumps(self.to_json(), indent=2) + "\n", self.root / SPEC_FILE)


def base_of(cfg: Config, grid: dict[str, list[Any]]) -> dict[str, Any]:
    """A config's flat fields minus the per-run ones and the grid's axes (and their pair)."""
    drop = set(PER_RUN)
    for axis in grid:
        drop.update(PAIRS.get(axis, (axis,)))
    return {k: v for k, v in cfg.to_flat().items() if k not in drop}


def validate(sweep: Sweep) -> None:
    """Build every point's config and tasks before anything starts; the error names the point."""
    from .tasks import make_tasks
    seen_tasks: dict[Any, None] = {}
    names: dict[str, dict[str, Any]] = {}
    for point in sweep.points():
        name = point_name(point)
        if name in names:
            raise ValueError(f"grid points {names[name]} and {point} get the same folder name {name!r}")
        names[name] = point
        where = ", ".join(f"{k}={format_value(v)}" for k, v in point.items())
        try:
            cfg = sweep.config(point)
            if cfg.task not in seen_tasks:
                make_tasks(cfg.task)
                seen_tasks[cfg.task] = None
        except (ValueError, TypeError) as e:
            raise ValueError(f"grid point {where}: {e}") from None


def load_sweep(root: str | Path) -> Sweep:
    root = Path(root)
    path = root / SPEC_FILE
    if not path.is_file():
        raise ValueError(f"{str(root)!r} is not a sweep folder (no {SPEC_FILE}); start one with --preset/--grid")
    try:
        d = json.loads(path.read_text())
        return Sweep(root, d["base"], {k: list(v) for k, v in d["grid"].items()}, d.get("stop_when_settled"),
                     d.get("created", ""))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path} is corrupt ({type(e).__name__}: {e})") from None


def _describe_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    diffs = [f"{k}: {old.get(k, '—')!r} → {new.get(k, '—')!r}" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(diffs[:6]) + (" …" if len(diffs) > 6 else "")


def open_sweep(root: str | Path, cfg: Config | None = None, grid: dict[str, list[Any]] | None = None,
               stop_when_settled: int | None = None) -> tuple[Sweep, list[str]]:
    """Create a sweep folder, or open one; a given base/grid must match it or extend its axes' values.

    Returns the sweep and the names of the points a given grid adds."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"sweep folder {str(root)!r} is a file")
    exists = (root / SPEC_FILE).is_file()
    if cfg is None and not grid:
        sweep = load_sweep(root)
        if stop_when_settled is not None and stop_when_settled != sweep.stop_when_settled:
            sweep.stop_when_settled = stop_when_settled
            sweep.save()
        return sweep, []
    if not grid:
        raise ValueError("a sweep needs at least one grid axis (--grid field=values, --seeds, or [grid] in the TOML)")
    if cfg is not None:
        base = base_of(cfg, grid)
    else:  # a grid alone: extend the saved sweep, or start one on the default preset
        base = load_sweep(root).base if exists else base_of(Config.preset("quick"), grid)
    new = Sweep(root, base, grid, stop_when_settled, time.strftime("%Y-%m-%dT%H:%M:%S"))
    if not exists:
        if root.is_dir() and any(p.name not in (".submitit",) for p in root.iterdir()):
            raise ValueError(f"{str(root)!r} holds files but no {SPEC_FILE}: not a sweep folder; pick an empty or new one")
        validate(new)
        root.mkdir(parents=True, exist_ok=True)
        new.save()
        return new, new.names()
    old = load_sweep(root)
    if list(old.grid) != list(grid):
        raise ValueError(f"{root} is a sweep over axes {list(old.grid)}; this command gives {list(grid)} "
                         "(a sweep folder keeps its axes: use another folder)")
    if old.base != new.base:
        raise ValueError(f"{root} holds a sweep of another base config ({_describe_diff(old.base, new.base)}); "
                         "use another folder, or run `fastgrok sweep DIR` alone to continue it")
    merged: dict[str, list[Any]] = {}
    for axis, values in old.grid.items():
        dropped = [format_value(v) for v in values if v not in grid[axis]]
        if dropped:
            raise ValueError(f"{root}: axis {axis} already holds {', '.join(dropped)}, which this command leaves out "
                             "(a grid can be extended, not shrunk: give every saved value, or run `fastgrok sweep DIR`)")
        merged[axis] = values + [v for v in grid[axis] if v not in values]
    before = set(old.names())
    sweep = Sweep(root, old.base, merged, old.stop_when_settled if stop_when_settled is None else stop_when_settled,
                  old.created)
    validate(sweep)
    if merged != old.grid or sweep.stop_when_settled != old.stop_when_settled:
        sweep.save()
    return sweep, [n for n in sweep.names() if n not in before]


def config_and_grid_from_toml(path: str | Path, overrides: dict[str, Any]) -> tuple[Config, dict[str, Any]]:
    """A sweep TOML: optional `preset`, fixed fields (flat or in [task]/[model]/[train]), and a [grid] table."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {e}") from None
    table = data.pop("grid", {})
    if not isinstance(table, dict):
        raise ValueError(f"{path}: grid must be a table ([grid] with field = [values] or 'start:stop:step')")
    preset = data.pop("preset", "quick")
    if preset not in PRESETS:
        raise ValueError(f"{path}: unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    Config.from_dict(data)  # checks section placement and field names
    return Config.preset(preset, **{**_flatten_keys(data), **overrides}), table


# ---- a point's state in the folder -----------------------------------------------------------------
def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's object, or None where it is missing, unreadable or half written."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def owner(run_dir: Path) -> int | None:
    """The pid of the live process training in a run folder (runfolder's lock), or None."""
    from .runfolder import owner as folder_owner
    return folder_owner(run_dir)


def point_status(root: Path, name: str) -> str:
    """done | stopped (settled early) | failed | running | interrupted (a checkpoint, no worker) | pending."""
    run = root / "runs" / name
    summary = read_json(run / "summary.json")
    if summary is not None:
        return "stopped" if summary.get("stopped_early") else "done"
    if (root / "state" / f"{name}.failed.json").is_file():
        return "failed"
    if owner(run) is not None:
        return "running"
    if (run / "config.json").is_file():  # resumable: from last.pt, or from step 0 without one
        return "interrupted"
    return "pending"


FINISHED = ("done", "stopped")


def failure_reason(root: Path, name: str) -> str | None:
    rec = read_json(root / "state" / f"{name}.failed.json")
    return rec.get("reason") if rec else None


def record_failure(root: Path, name: str, reason: str) -> None:
    from .checkpoint import atomic_write_text
    line = " ".join(reason.split())[:300] or "unknown error"
    atomic_write_text(json.dumps({"reason": line, "time": time.time()}) + "\n",
                      root / "state" / f"{name}.failed.json")


def clear_failure(root: Path, name: str) -> None:
    (root / "state" / f"{name}.failed.json").unlink(missing_ok=True)


def _append_attempt(root: Path, name: str, rec: dict[str, Any]) -> None:
    path = root / "state" / f"{name}.attempts.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def read_attempts(root: Path, name: str) -> list[dict[str, Any]]:
    path = root / "state" / f"{name}.attempts.jsonl"
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


# ---- the worker: one point, in the engine's process -------------------------------------------------
def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".strip()


def run_point(root: str | Path, name: str, threads: int | None = None, stop_when_settled: int | None = None,
              quiet: bool = False, submitted: float | None = None) -> str:
    """Run (or resume) one point to its end; returns its status. Never raises for a failing run: the reason
    goes to state/<name>.failed.json and the sweep goes on."""
    root = Path(root)
    t_enter = time.time()
    if threads:
        import torch
        torch.set_num_threads(threads)
    sweep = load_sweep(root)
    status = point_status(root, name)
    if status in FINISHED or status in ("failed", "running"):
        return status
    from .runfolder import RunFolderBusy
    from .trainer import train
    run = sweep.runs / name
    k = stop_when_settled if stop_when_settled is not None else sweep.stop_when_settled
    stop_when = (lambda h: settled(h, k)) if k else None
    attempt: dict[str, Any] = {"pid": os.getpid(), "host": os.uname().nodename, "submitted": submitted,
                               "enter": t_enter, "resumed": (run / "last.pt").is_file(), "threads": threads}
    try:
        attempt["train_called"] = time.time()
        attempt["cpu_before_train_s"] = round(time.process_time(), 3)  # this worker's imports and set-up
        if (run / "config.json").is_file():  # train() owns the folder (its lock) and resumes it
            result = train(resume=run, quiet=quiet, stop_when=stop_when)
        else:
            result = train(sweep.config(sweep.point_of(name)), quiet=quiet, stop_when=stop_when)
        s = result.summary
        attempt.update(end=time.time(), status="stopped" if s.get("stopped_early") else "done",
                       steps=s["steps"], startup_s=s["startup_s"], wall_s=s["wall_s"])
        _append_attempt(root, name, attempt)
        return attempt["status"]
    except RunFolderBusy:
        return "running"  # another worker owns the folder: the driver waits for it
    except KeyboardInterrupt:
        attempt.update(end=time.time(), status="interrupted")
        _append_attempt(root, name, attempt)
        return "interrupted"
    except Exception as e:  # noqa: BLE001 — any failure of one run is recorded, the sweep goes on
        if _finished_on_disk(run):
            return "done"
        if owner(run) is not None:
            return "running"
        record_failure(root, name, _one_line(e))
        attempt.update(end=time.time(), status="failed", reason=_one_line(e),
                       traceback=traceback.format_exc(limit=-3))
        _append_attempt(root, name, attempt)
        return "failed"


def _finished_on_disk(run: Path) -> bool:
    return (run / "summary.json").is_file()


class PointJob:
    """The callable an engine runs: submitit's checkpoint protocol (timeout, preemption) resubmits it, and
    the resubmitted worker resumes the point from its last.pt."""

    def __init__(self, root: str | Path, name: str, threads: int | None = None,
                 stop_when_settled: int | None = None) -> None:
        self.root, self.name, self.threads, self.stop_when_settled = str(root), name, threads, stop_when_settled
        self.submitted = time.time()

    def __call__(self) -> str:
        return run_point(self.root, self.name, self.threads, self.stop_when_settled, submitted=self.submitted)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit
        return submitit.helpers.DelayedSubmission(PointJob(self.root, self.name, self.threads,
                                                           self.stop_when_settled))


# ---- the driver --------------------------------------------------------------------------------------
@dataclass
class SweepOptions:
    engine: str = "local"
    jobs: int = 1
    retry_failed: bool = False
    stop_when_settled: int | None = None
    partition: str | None = None
    gpus_per_job: int = 1
    time: str = "6:00:00"
    array_parallelism: int | None = None
    plots: bool = True
    engine_args: dict[str, Any] = field(default_factory=dict)


def todo(sweep: Sweep, retry_failed: bool = False) -> tuple[list[str], dict[str, str]]:
    """The points to launch now, and the state of every point."""
    states = {name: point_status(sweep.root, name) for name in sweep.names()}
    launch = []
    for name, st in states.items():
        if st == "failed" and retry_failed:
            clear_failure(sweep.root, name)
            states[name] = point_status(sweep.root, name)
            st = states[name]
        if st in ("pending", "interrupted"):
            launch.append(name)
    return launch, states


def run_sweep(sweep: Sweep, opts: SweepOptions, log: Any = print) -> dict[str, str]:
    """Launch what is left through the chosen engine; returns the final state of every point."""
    from .engines import get_engine
    from .results import write_results
    if opts.jobs < 1:
        raise ValueError(f"jobs={opts.jobs} must be ≥ 1")
    if opts.stop_when_settled is not None and opts.stop_when_settled < 1:
        raise ValueError(f"stop_when_settled={opts.stop_when_settled} must be ≥ 1")
    engine = get_engine(opts.engine)
    launch, states = todo(sweep, opts.retry_failed)
    counts = {s: sum(v == s for v in states.values()) for s in sorted(set(states.values()))}
    log(f"sweep {sweep.root}: {len(states)} points ({', '.join(f'{n} {s}' for s, n in counts.items())}); "
        f"launching {len(launch)} on {opts.engine}")
    sweep.state.mkdir(parents=True, exist_ok=True)

    plots = {"on": opts.plots}

    def on_change() -> None:
        write_results(sweep)
        if plots["on"]:
            from .plot import PlotUnavailable, plot_sweep
            try:
                plot_sweep(sweep.root, quiet=True)
            except PlotUnavailable:
                plots["on"] = False
            except Exception as e:  # noqa: BLE001 — a figure must never stop a sweep
                plots["on"] = False
                log(f"  figures not redrawn ({_one_line(e)}); `fastgrok plot {sweep.root}` draws them")

    engine(sweep, launch, [n for n, s in states.items() if s == "running"], opts, on_change, log)
    final = {name: point_status(sweep.root, name) for name in sweep.names()}
    on_change()
    return final
