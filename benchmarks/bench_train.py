"""Training-step throughput at config A and start-up time as n_id grows; appends to bench_results/train.csv.

Config A (the reference trainer issue): p = 29, depth 2, n_embd 128, 4 heads, batch 64, 32 shots,
n_id = 64, eager and compiled. Start-up: tasks, α split, the five batch sources and one batch of
each, for n_id = 8 … 512 at the paper's batch size.

    python benchmarks/bench_train.py [--quick] [--out-dir bench_results] [--device auto]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from fastgrok import Config
from fastgrok.bench import append_rows, resolve, row, time_startup, time_windows
from fastgrok.train import build, train_step

CONFIG_A = dict(p=29, n_pl=16, depth=2, n_embd=128, n_head=4, batch_size=64, n_shots=32)


def bench_step(cfg: Config, label: str, device: torch.device, windows: int, per_window: int, warmup: int) -> list:
    sess = build(cfg)
    secs = time_windows(lambda i: train_step(sess, i), device, warmup=warmup, windows=windows, per_window=per_window)
    tokens = cfg.train.batch_size * (cfg.task.seq_len - 1)
    return [row("train_step", label, "full", "config", "A", secs, "ms", device, scale=1e3),
            row("train_step", label, "full", "config", "A", [1 / s for s in secs], "steps/s", device),
            row("train_step", label, "full", "config", "A", [tokens / s for s in secs], "tokens/s", device)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few repeats (a smoke run)")
    ap.add_argument("--out-dir", default=str(Path(__file__).resolve().parent.parent / "bench_results"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args(argv)
    device = resolve(args.device)
    windows, per_window, warmup = (2, 3, 2) if args.quick else (5, 20, 10)
    rows = []
    providers = [("reference-eager", "off")] + ([] if args.no_compile else [("reference-compiled", "on")])
    for label, comp in providers:
        cfg = Config.preset("paper", **CONFIG_A, compile=comp, device=str(device), out_dir="/dev/null")
        rows += bench_step(cfg, label, device, windows, per_window, warmup if comp == "off" else warmup + 3)
    for n_id in (8, 32, 128, 512):
        cfg = Config.preset("paper", n_id=n_id, device=str(device))
        rows.append(row("startup", "fastgrok", "data", "n_id", n_id, time_startup(cfg, device, 2 if args.quick else 5),
                        "s", device))
    path = append_rows(Path(args.out_dir) / "train.csv", rows)
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"train benchmark — {rows[0]['device']}")
    for c in ("benchmark", "provider", "x", "p50", "p20", "p80", "unit"):
        table.add_column(c)
    for r in rows:
        table.add_row(*(str(r[c]) for c in ("benchmark", "provider", "x", "p50", "p20", "p80", "unit")))
    Console().print(table)
    print(f"appended {len(rows)} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
