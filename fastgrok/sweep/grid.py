"""Sweep grids: axes over config fields, value lists and ranges, and the stable folder name of a point.

    --grid alpha=0.2:0.8:0.1     seven values, exact decimal steps, stop included
    --grid n_id=8:512:*2         geometric: 8, 16, …, 512
    --grid mlp=relu,gelu         a list; --seeds 1,2 is the axis `seed`
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, Sequence, get_type_hints

from ..config import FIELD_SECTION, SECTIONS, FieldError, _coerce, _unknown_field

PER_RUN = ("out_dir", "run_name")           # set per point by the sweep, never an axis nor part of the base
MAX_VALUES = 10_000                         # values one range may give
MAX_POINTS = 10_000                         # points one sweep folder may hold (each is a run folder)


def _field_type(name: str) -> Any:
    return get_type_hints(SECTIONS[FIELD_SECTION[name]])[name]


def _axis_name(raw: str) -> str:
    name = raw.strip().replace("-", "_")
    if name in ("seeds",):
        name = "seed"
    if name not in FIELD_SECTION:
        raise _unknown_field(name)
    if name in PER_RUN:
        raise ValueError(f"{name!r} is set by the sweep for each point; it cannot be a grid axis")
    return name


def _decimal(axis: str, text: str) -> Decimal:
    try:
        d = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"grid axis {axis}: {text!r} is not a number") from None
    if not d.is_finite():
        raise ValueError(f"grid axis {axis}: {text!r} is not a finite number")
    return d


def _range(axis: str, spec: str) -> list[str]:
    """'start:stop:step' (inclusive, exact decimal steps) or 'start:stop:*k' (geometric)."""
    parts = spec.split(":")
    if len(parts) != 3 or not all(p.strip() for p in parts):
        raise ValueError(f"grid axis {axis}: range {spec!r} must be start:stop:step or start:stop:*factor")
    start, stop = _decimal(axis, parts[0]), _decimal(axis, parts[1])
    step_text = parts[2].strip()
    geometric = step_text[0] in "*x"
    step = _decimal(axis, step_text[1:] if geometric else step_text)
    if (geometric and step <= 1) or (not geometric and step <= 0):
        raise ValueError(f"grid axis {axis}: range {spec!r} needs a {'factor > 1' if geometric else 'step > 0'}")
    if geometric and start <= 0:
        raise ValueError(f"grid axis {axis}: geometric range {spec!r} needs start > 0")
    out, v = [], start
    while v <= stop:
        if len(out) == MAX_VALUES:
            raise ValueError(f"grid axis {axis}: range {spec!r} gives more than {MAX_VALUES:,} values")
        out.append(str(v.normalize()) if v != v.to_integral_value() else str(int(v)))
        v = v * step if geometric else v + step
    if not out:
        raise ValueError(f"grid axis {axis}: range {spec!r} is empty (start > stop)")
    return out


def parse_values(axis: str, spec: Any) -> list[Any]:
    """Axis values from 'v1,v2', a range 'a:b:s' / 'a:b:*k', or a TOML list, coerced to the field's type."""
    if isinstance(spec, str):
        raw = _range(axis, spec) if ":" in spec else [v for v in (s.strip() for s in spec.split(",")) if v]
    elif isinstance(spec, (list, tuple)):
        raw = list(spec)
    else:
        raw = [spec]
    if not raw:
        raise ValueError(f"grid axis {axis}: no values in {spec!r}")
    values = [_coerce(axis, v, _field_type(axis)) for v in raw]
    dupes = sorted({str(v) for v in values if values.count(v) > 1})
    if dupes:
        raise ValueError(f"grid axis {axis}: repeated value(s) {', '.join(dupes)}")
    return values


def parse_grid(specs: Sequence[str] = (), seeds: str | None = None,
               table: dict[str, Any] | None = None) -> dict[str, list[Any]]:
    """The grid from `field=values` flags, a TOML [grid] table and --seeds (axes in the order given)."""
    grid: dict[str, list[Any]] = {}

    def add(raw_name: str, spec: Any) -> None:
        name = _axis_name(raw_name)
        if name in grid:
            raise ValueError(f"grid axis {name!r} is given twice")
        grid[name] = parse_values(name, spec)

    for key, spec in (table or {}).items():
        add(key, spec)
    for item in specs:
        name, sep, spec = item.partition("=")
        if not sep or not name.strip():
            raise FieldError("grid", f"grid axis {item!r} must be field=v1,v2,… or field=start:stop:step")
        add(name, spec)
    if seeds is not None:
        add("seed", seeds)
    if "n_id" in grid and "n_pl" in grid:
        raise ValueError("n_id and n_pl are one axis (n_id = 4·n_pl): give only one of them")
    points = 1
    for values in grid.values():
        points *= len(values)
    if points > MAX_POINTS:
        sizes = " × ".join(str(len(v)) for v in grid.values())
        raise ValueError(f"the grid has {points:,} points ({sizes}); one sweep folder holds at most "
                         f"{MAX_POINTS:,}: split it over several")
    return grid


def fixed_and_axis(fixed: dict[str, Any], grid: dict[str, list[Any]]) -> None:
    """A field given a fixed value and also made an axis would lose the fixed value silently: refuse it."""
    both = [a for a in grid if a in fixed or (a in ("n_id", "n_pl") and {"n_id", "n_pl"} & set(fixed))]
    if both:
        raise ValueError(f"{', '.join(both)} {'is' if len(both) == 1 else 'are'} given a fixed value and "
                         "made a grid axis: give each field once")


def format_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}" if float(f"{v:g}") == v else repr(v)
    return str(v)


def point_name(point: dict[str, Any]) -> str:
    """A readable, stable folder name: `n_id-8_alpha-0.2_seed-1` (axes in the grid's order)."""
    safe = lambda s: "".join(c if c.isalnum() or c in ".-+" else "-" for c in s)  # noqa: E731
    return "_".join(f"{k}-{safe(format_value(v))}" for k, v in point.items())


