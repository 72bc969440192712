"""The sweep folder and its grid: what a sweep is, before anything runs (the lowest layer of fastgrok.sweep).

    SWEEP_DIR/sweep.json           the base config and the grid (a different one is refused; new values extend it)
    SWEEP_DIR/runs/<point>/        one ordinary run folder per point (fastgrok.runfolder)
    SWEEP_DIR/state/<point>.*      sweep bookkeeping (fastgrok.sweep.state): .failed.json, .attempts.jsonl, .job
    SWEEP_DIR/results.csv, .jsonl  one row per point (fastgrok.sweep.results)
"""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write_text
from ..config import DEFAULT_PRESET, Config, FieldError
from ..tasks import make_tasks
from .grid import PER_RUN, format_value, point_name

SPEC_FILE = "sweep.json"
SPEC_VERSION = 1
RUNS_DIR, STATE_DIR = "runs", "state"
PAIRS = {"n_id": ("n_id", "n_pl"), "n_pl": ("n_id", "n_pl")}  # one of the pair is derived from the other


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
        return self.root / RUNS_DIR

    @property
    def state(self) -> Path:
        return self.root / STATE_DIR

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
        atomic_write_text(json.dumps(self.to_json(), indent=2) + "\n", self.root / SPEC_FILE)


def base_of(cfg: Config, grid: dict[str, list[Any]]) -> dict[str, Any]:
    """A config's flat fields minus the per-run ones and the grid's axes (and their pair)."""
    drop = set(PER_RUN)
    for axis in grid:
        drop.update(PAIRS.get(axis, (axis,)))
    return {k: v for k, v in cfg.to_flat().items() if k not in drop}


def validate(sweep: Sweep) -> None:
    """Build every point's config and tasks before anything starts; the error names the point."""
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
        raise FieldError("grid", f"{str(root)!r} is not a sweep folder (no {SPEC_FILE}): to start one, give a grid "
                         "(and a base config)")
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
    if cfg is not None and not isinstance(cfg, Config):
        raise TypeError(f"open_sweep(root, cfg, grid): cfg must be a Config (e.g. Config.preset('tiny')) or None, got "
                        f"{type(cfg).__name__} {cfg!r:.60}")
    if grid is not None and (not isinstance(grid, dict) or not all(
            isinstance(k, str) and isinstance(v, (list, tuple)) for k, v in grid.items())):
        raise FieldError("grid", f"grid must map each field to a list of values (parse_grid(['n_pl=1,2']) builds one), "
                         f"got {grid!r:.80}")
    root = Path(root)
    if stop_when_settled is not None and (not isinstance(stop_when_settled, int) or stop_when_settled < 1):
        raise FieldError("stop_when_settled", f"stop_when_settled={stop_when_settled!r} must be an integer ≥ 1")
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
        raise FieldError("grid", "a sweep needs at least one grid axis (grid is empty)")
    if cfg is not None:
        base = base_of(cfg, grid)
    else:  # a grid alone: extend the saved sweep, or start one on the default preset
        base = load_sweep(root).base if exists else base_of(Config.preset(DEFAULT_PRESET), grid)
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
        raise ValueError(f"{root} is a sweep over axes {list(old.grid)}; the grid given has {list(grid)} "
                         "(a sweep folder keeps its axes: use another folder)")
    if old.base != new.base:
        raise ValueError(f"{root} holds a sweep of another base config ({_describe_diff(old.base, new.base)}); "
                         "use another folder, or open it without a config to continue it")
    merged: dict[str, list[Any]] = {}
    for axis, values in old.grid.items():
        dropped = [format_value(v) for v in values if v not in grid[axis]]
        if dropped:
            raise ValueError(f"{root}: axis {axis} already holds {', '.join(dropped)}, which the grid given leaves out "
                             "(a grid can be extended, not shrunk: give every saved value, or open it without a grid)")
        merged[axis] = values + [v for v in grid[axis] if v not in values]
    before = set(old.names())
    sweep = Sweep(root, old.base, merged, old.stop_when_settled if stop_when_settled is None else stop_when_settled,
                  old.created)
    validate(sweep)
    if merged != old.grid or sweep.stop_when_settled != old.stop_when_settled:
        sweep.save()
    return sweep, [n for n in sweep.names() if n not in before]
