"""Benchmark core: timing, long-format result rows, the CSV they are appended to, the printed table.

Timing (STYLE "Benchmarks"): `triton.testing.do_bench` (median, 20th and 80th percentile) for
kernels on CUDA; calibrated wall-clock windows with warm-up and a device sync at each window's
end everywhere else. A row is one figure: benchmark, provider, mode, x_name, x, p50, p20, p80,
unit, device, torch, triton, git_sha (the measured tree's commit, see stamp.py), timestamp —
appended to `<out_dir>/<suite>.csv`, never overwritten. The suites (kernels, train, tasks, sweep)
sit on top of this module; nothing below them imports it.
"""
from __future__ import annotations

import csv
import functools
import io
import math
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from ..config import Config
from ..data import SPLITS, generate_batch, split_source
from ..envinfo import device_name, resolve_device, triton_version
from ..tasks import make_tasks
from .stamp import tree_commit

FIELDS = ("benchmark", "provider", "mode", "x_name", "x", "p50", "p20", "p80", "unit", "device", "torch", "triton",
          "git_sha", "timestamp")
TIME_UNITS = ("ms", "s")  # lower is better; every other unit of a row is a rate or a size
# The toy model of `--toy` (the gpu_check rehearsal on a CPU): head_dim 32, which the fused kernels take,
# and few, short rows, so a step under Triton's interpreter costs about a second. Overrides of "tiny".
TOY = dict(p=7, n_pl=2, depth=2, n_embd=32, n_head=1, batch_size=8, n_shots=8)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def quantiles(samples: list[float]) -> tuple[float, float, float]:
    """(median, 20th, 80th percentile)."""
    if len(samples) == 1:
        return samples[0], samples[0], samples[0]
    q = statistics.quantiles(samples, n=10, method="inclusive")
    return statistics.median(samples), q[1], q[7]


@dataclass(frozen=True)
class Timing:
    """Seconds per call: median and 20th/80th percentiles."""

    p50: float
    p20: float
    p80: float

    @classmethod
    def of(cls, samples: list[float]) -> "Timing":
        return cls(*quantiles(list(samples)))

    def scaled(self, k: float) -> "Timing":
        """The same quantiles in another unit (k = 1e3 for ms)."""
        return Timing(self.p50 * k, self.p20 * k, self.p80 * k)

    def rate(self, work: float) -> "Timing":
        """work per second; a rate's 20th percentile comes from the time's 80th."""
        return Timing(work / self.p50, work / self.p80, work / self.p20)


def time_windows(fn: Callable[[int], Any], device: torch.device, *, warmup: int, windows: int, per_window: int,
                 start: int = 0) -> list[float]:
    """Seconds per call of fn(i), measured over `windows` windows of `per_window` calls after `warmup` calls."""
    i = start
    for _ in range(warmup):
        fn(i)
        i += 1
    sync(device)
    out = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(per_window):
            fn(i)
            i += 1
        sync(device)
        out.append((time.perf_counter() - t0) / per_window)
    return out


def measure(fn: Callable[[], Any], device: torch.device, *, quick: bool = False) -> Timing:
    """Seconds per call of fn(): do_bench on CUDA; on other devices 7 wall-clock windows of ≥ 100 ms
    (5 for calls over 0.25 s; quick: 3 of ≥ 10 ms), after a warm-up call and a calibrating one."""
    if device.type == "cuda":
        from triton.testing import do_bench
        ms = do_bench(fn, warmup=10 if quick else 25, rep=30 if quick else 100, quantiles=[0.5, 0.2, 0.8])
        return Timing(*(v * 1e-3 for v in ms))
    fn()  # warm-up: first-call allocations, lazy initialisation
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    target = 0.01 if quick else 0.1
    per_window = max(1, min(10_000, math.ceil(target / max(once, 1e-7))))
    windows = 3 if quick else (7 if once < 0.25 else 5)
    return Timing.of(time_windows(lambda _: fn(), device, warmup=0, windows=windows, per_window=per_window))


def time_startup(cfg: Config, device: torch.device | str = "cpu", repeats: int = 3,
                 batch_size: int | None = None) -> list[float]:
    """Seconds from a config to tasks, split, the five batch sources and one batch of each.

    batch_size (default: the config's) sets the batch of those first batches, so start-up at task
    counts above the training batch can be compared at one batch size."""
    device = torch.device(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tasks = make_tasks(cfg.task)
        srcs = [split_source(cfg, tasks, "train", device, training=True, batch_size=batch_size)]
        srcs += [split_source(cfg, tasks, s, device, batch_size=batch_size) for s in SPLITS]
        for src in srcs:
            generate_batch(src, 0)
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


@functools.lru_cache(maxsize=None)
def _short_sha() -> str:
    """The measured tree's commit, short, "-dirty" when it has uncommitted changes; from $FASTGROK_COMMIT
    or the tree's FASTGROK_COMMIT file in a copy without .git, never a surrounding repository's (stamp.py)."""
    return tree_commit()


def env(device: torch.device) -> tuple[str, str, str, str]:
    """(device name, torch, triton, git sha) as the rows record them (CPU names carry the thread count)."""
    return device_name(device), torch.__version__, _triton_version(), _short_sha()


_triton_version = functools.lru_cache(maxsize=None)(triton_version)


def row(benchmark: str, provider: str, mode: str, x_name: str, x: Any, value: Timing | list[float], unit: str,
        device: torch.device, scale: float = 1.0) -> dict[str, Any]:
    """One long-format row; value is a Timing (already in `unit` after `scale`) or raw samples."""
    t = (value if isinstance(value, Timing) else Timing.of(value)).scaled(scale)
    dev, torch_v, triton_v, sha = env(torch.device(device))
    return {"benchmark": benchmark, "provider": provider, "mode": mode, "x_name": x_name, "x": x,
            "p50": f"{t.p50:.6g}", "p20": f"{t.p20:.6g}", "p80": f"{t.p80:.6g}", "unit": unit,
            "device": dev, "torch": torch_v, "triton": triton_v, "git_sha": sha,
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def append_rows(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Append rows to a long-format CSV (header written once); never rewrites what is there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in FIELDS})
    return path


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV with a header line; one that cannot be read as such is a ValueError naming the file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}), not a benchmark CSV") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot be read: {e.strerror or e}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        rows = list(reader)
    except csv.Error as e:
        raise ValueError(f"{path}: not a readable CSV (line {reader.line_num}: {e})") from None
    for i, r in enumerate(rows):
        if None in r or None in r.values():  # a row longer or shorter than the header
            n = sum(v is not None for k, v in r.items() if k is not None) + len(r.get(None) or [])
            raise ValueError(f"{path}: row {i + 1} has {n} fields, the header {len(reader.fieldnames or ())}")
    return rows


def merge(src_dir: str | Path, out_dir: str | Path) -> list[str]:
    """Bring the results of another folder (a GPU machine's, say) into out_dir: append to each
    out_dir/<suite>.csv the rows of src_dir/<suite>.csv it does not hold yet (whole-row match, in
    their order), and copy the *.jsonl files it lacks. Returns one line per file touched."""
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    if not src_dir.is_dir():
        raise ValueError(f"merge: {str(src_dir)!r} is not a folder")
    done = []
    for src in sorted(src_dir.glob("*.csv")):
        rows = read_rows(src)
        if rows and set(rows[0]) != set(FIELDS):
            raise ValueError(f"merge: {src} is not a benchmark CSV (columns {', '.join(rows[0])})")
        dst = out_dir / src.name
        have = {tuple(r[k] for k in FIELDS) for r in read_rows(dst)} if dst.is_file() else set()
        new = [r for r in rows if tuple(r[k] for k in FIELDS) not in have]
        if new:
            append_rows(dst, new)
        done.append(f"{dst}: {len(new)} new rows of {len(rows)}")
    for src in sorted(src_dir.glob("*.jsonl")):
        dst = out_dir / src.name
        if not dst.exists():
            out_dir.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
            done.append(f"{dst}: copied")
    return done


class Recorder:
    """Collects a suite's rows and appends each batch to its CSV as it comes (a crash keeps what was
    measured); `path=None` only collects. Skips and failures are kept as notes for the summary."""

    def __init__(self, path: str | Path | None, log: Callable[[str], None] | None = print) -> None:
        self.path = Path(path) if path is not None else None
        self.rows: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self._log = log

    def add(self, rows: Iterable[dict[str, Any]], log: bool = True) -> None:
        """Keep rows and append them to the CSV now; log the time rows (unless log=False)."""
        rows = list(rows)
        self.rows += rows
        if self.path is not None and rows:
            append_rows(self.path, rows)
        for r in rows if log else ():
            if r["unit"] in TIME_UNITS:
                self.log(f"  {r['benchmark']:14s} {r['provider']:22s} {r['mode']:9s} {r['x_name']}={r['x']}: "
                         f"{float(r['p50']):.4g} {r['unit']}")

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        self.log(f"  note: {msg}")

    def log(self, msg: str) -> None:
        if self._log is not None:
            self._log(msg)


def print_rows(rows: list[dict[str, Any]], title: str) -> None:
    """The rows of a run as a table (rich; plain text where rich is missing)."""
    cols = ("benchmark", "provider", "mode", "x", "p50", "p20–p80", "unit")
    cells = [(r["benchmark"], r["provider"], r["mode"], f"{r['x_name']}={r['x']}", r["p50"],
              f"{r['p20']}–{r['p80']}", r["unit"]) for r in rows]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # the GPU image may lack rich
        print(title)
        for c in [cols, *cells]:
            print(" | ".join(c))
        return
    table = Table(title=title)
    for c in cols:
        table.add_column(c, justify="right" if c.startswith("p") and c != "provider" else "left", no_wrap=True)
    for c in cells:
        table.add_row(*c)
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 140)  # piped: keep rows whole rather than fold them
    console.print(table)


def resolve(device: str = "auto") -> torch.device:
    return resolve_device(device)
