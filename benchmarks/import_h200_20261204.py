"""Stage the H200 figures of 2026-12-04 (../shared/gpu/2026-12-04-h200, fastgrok 6f843f4) for
`fastgrok bench merge`, in a folder of their own; the CSVs there and in bench_results/ are never edited.

    python benchmarks/import_h200_20261204.py SRC STAGE
    fastgrok bench merge --from STAGE --out-dir bench_results

What it changes on the way, and why:
- train_step "TFLOP/s" and "MFU %" rows of that tree were computed from the full model's FLOPs (every
  position of the last block); they are relabelled "… (full model)", and "TFLOP/s" / "MFU %" rows are
  added from the same ms quantiles and the FLOPs a step executes (fastgrok.trainer.train_flops_per_step),
  with the measurement's own timestamp, device, versions and sha.
- paper_code_h200.json (the paper's own loop, one summary of steps 101-1200) becomes train_step rows of
  provider "paper-code" at config paper-d4: mode "step" is its per-step median, mode "step-mean" its mean
  (1 / mean = its throughput). The JSON has no 20/80 % quantiles (it has p10/p90), so p20 = p80 = p50, as
  for any single figure. git_sha names the paper repository's commit; the run's time of day was not
  recorded, so the timestamp is the day's start.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from fastgrok.bench.core import FIELDS, append_rows, read_rows
from fastgrok.bench.train import GPU_CONFIGS
from fastgrok.config import Config
from fastgrok.envinfo import PEAK_BF16
from fastgrok.trainer import train_flops_per_step

# github.com/ablghtianyi/ICL_Modular_Arithmetic: its head; pre_training/ is unchanged since bc26f64 (2024-05-27),
# so every revision since then runs the same icl_grokking.py.
PAPER_SHA = "ICL_Modular_Arithmetic@d520c0c"
PAPER_DAY = "2026-12-04T00:00:00+00:00"


def config_of(x: str) -> Config:
    """'paper-d4' or 'paper-d4 B2048' → its config (fastgrok.bench.train's names)."""
    name, _, batch = x.partition(" B")
    cfg = Config.preset(GPU_CONFIGS[name])
    return cfg.override(batch_size=int(batch)) if batch else cfg


def executed_rows(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Relabel full-model TFLOP/s and MFU % rows; add the executed-FLOPs ones from each ms row."""
    out = []
    for r in rows:
        if r["benchmark"] == "train_step" and r["unit"] in ("TFLOP/s", "MFU %"):
            out.append(r | {"unit": f"{r['unit']} (full model)"})
            continue
        out.append(r)
        if r["benchmark"] == "train_step" and r["unit"] == "ms":
            flops = train_flops_per_step(config_of(r["x"]))
            peak = next((v for k, v in PEAK_BF16.items() if k in r["device"]), None)
            ms = {q: float(r[q]) for q in ("p50", "p20", "p80")}
            rate = lambda k: {"p50": f"{k / ms['p50']:.6g}", "p20": f"{k / ms['p80']:.6g}",  # noqa: E731
                              "p80": f"{k / ms['p20']:.6g}"}
            out.append(r | rate(flops / 1e9) | {"unit": "TFLOP/s"})  # FLOPs / (ms·1e-3) / 1e12
            if peak:
                out.append(r | rate(100 * flops / peak * 1e3) | {"unit": "MFU %"})
    return out


def paper_code_rows(summary: dict, device: str, triton: str) -> list[dict[str, str]]:
    """train_step rows of the paper's loop at paper-d4: its median step ("step") and its mean ("step-mean")."""
    st = summary["ms_per_step"]
    base = dict(benchmark="train_step", provider="paper-code", x_name="config", x="paper-d4", device=device,
                torch=summary["torch"], triton=triton, git_sha=PAPER_SHA, timestamp=PAPER_DAY)
    out = []
    for mode, ms in (("step", st["median"]), ("step-mean", st["mean"])):
        for unit, v in (("ms", ms), ("steps/s", 1e3 / ms)):
            out.append(base | dict(mode=mode, p50=f"{v:.6g}", p20=f"{v:.6g}", p80=f"{v:.6g}", unit=unit))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path, help="the GPU folder (../shared/gpu/2026-12-04-h200)")
    p.add_argument("stage", type=Path, help="an empty or new folder to write the staged CSVs to")
    a = p.parse_args(argv)
    if not (a.src / "train.csv").is_file() or not (a.src / "paper_code_h200.json").is_file():
        print(f"import: {a.src} holds no train.csv and paper_code_h200.json", file=sys.stderr)
        return 2
    if a.stage.exists() and any(a.stage.iterdir()):
        print(f"import: {a.stage} is not empty", file=sys.stderr)
        return 2
    a.stage.mkdir(parents=True, exist_ok=True)
    for f in sorted(a.src.glob("*.csv")) + sorted(a.src.glob("*.jsonl")):
        if f.name != "train.csv":
            shutil.copyfile(f, a.stage / f.name)
    train = read_rows(a.src / "train.csv")
    gpu = train[0]
    rows = executed_rows(train) + paper_code_rows(json.loads((a.src / "paper_code_h200.json").read_text()),
                                                  gpu["device"], gpu["triton"])
    append_rows(a.stage / "train.csv", [{k: r[k] for k in FIELDS} for r in rows])
    print(f"staged {len(rows)} train_step rows ({len(rows) - len(train)} added) and "
          f"{len(list(a.stage.iterdir())) - 1} other files in {a.stage}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
