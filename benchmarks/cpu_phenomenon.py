"""CPU phenomenon search (issue 14): which small settings show in-context learning on 2 CPU cores.

    python benchmarks/cpu_phenomenon.py GROUP [GROUP ...] [--jobs 2] [--threads 1] [--only LABEL ...]
    python benchmarks/cpu_phenomenon.py --list

Every configuration of the named groups is trained with `fastgrok.train` (reference backend, fp32,
CPU), `--jobs` processes at once with `--threads` torch threads each, and one row per configuration
is appended to bench_results/cpu_phenomenon.csv: the overrides, steps, wall time, ms/step, the
machine load, final and best last-shot accuracy of the four sets, the first step each set was
solved, the phase, and a note: why a run was cut off early (a trajectory judged hopeless at a
checkpoint — see `Run.cut`), stopped by hand, or how it was timed (group `demo`: the preset run
by `fastgrok train --preset demo` in fresh processes, recorded with `make_row`). The groups are the
search in the order it was run; the machine is shared, so compare times only beside the load
columns.
"""
from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a checkout's fastgrok, as the other scripts
from fastgrok.sets import SPLITS as SETS  # noqa: E402  (torch-free: threads are set before torch loads)

CSV_PATH = Path(__file__).resolve().parent.parent / "bench_results" / "cpu_phenomenon.csv"
COLUMNS = (["group", "label", "overrides", "p", "n_id", "n_ood", "alpha", "n_shots", "sampling", "depth",
            "n_embd", "batch_size", "lr", "weight_decay", "warmup", "steps_planned", "steps", "note",
            "wall_s", "ms_per_step", "threads", "jobs", "load_start", "load_end"]
           + [f"final_{s}" for s in SETS] + [f"best_{s}" for s in SETS] + [f"solved_step_{s}" for s in SETS]
           + ["final_id_test_shot0", "phase", "best_ood_step", "torch", "git_sha", "timestamp"])


@dataclass
class Run:
    """One configuration: flat overrides on the `quick` preset. `cut` lists (fraction of steps,
    set, minimum last-shot accuracy): at that point a run below the minimum stops as hopeless."""

    label: str
    overrides: dict[str, Any]
    cut: list[tuple[float, str, float]] = field(default_factory=list)


def _r(label: str, cut: list | None = None, **kw: Any) -> Run:
    return Run(label, kw, cut if cut is not None else [])


# Shared settings of the scouting runs: depth 2, 4 heads, short shots without replacement (the
# query point is never in its own context, so copying an earlier example cannot score).
SCOUT = dict(depth=2, n_head=4, n_embd=64, sampling="distinct", warmup=200, lr=3e-3, weight_decay=1.0,
             eval_every=250, eval_batches=1, max_ood=256, data_seed=0, seed=1)
HOPELESS = [(0.5, "train", 0.35)]  # not even fitting the training tasks by half-way

GROUPS: dict[str, list[Run]] = {
    # Stage 1: small p, a large share of the p² tasks, short sequences; 4000 steps each.
    "scout": [
        _r("p5-n16-a06", HOPELESS, **SCOUT, p=5, n_pl=4, alpha=0.6, n_shots=10, batch_size=64, steps=4000),
        _r("p7-n32-a06", HOPELESS, **SCOUT, p=7, n_pl=8, alpha=0.6, n_shots=16, batch_size=64, steps=4000),
        _r("p7-n40r-a06", HOPELESS, **SCOUT, p=7, selection="random", n_id=40, alpha=0.6, n_shots=16,
           batch_size=80, steps=4000),
        _r("p11-n64-a06", HOPELESS, **SCOUT, p=11, n_pl=16, alpha=0.6, n_shots=16, batch_size=128, steps=4000),
        _r("p11-n96-a06", HOPELESS, **SCOUT, p=11, n_pl=24, alpha=0.6, n_shots=16, batch_size=128, steps=4000),
        # (the p = 11 runs and p7-n32-a06-iid were stopped unfinished for stage 2.)
        _r("p7-n32-a06-iid", HOPELESS, **{**SCOUT, "sampling": "iid"}, p=7, n_pl=8, alpha=0.6, n_shots=16,
           batch_size=64, steps=4000),
    ],
    # Stage 2: the machine is loaded (load ≈ 12 on 2 cores), so cheaper steps: 8 shots (T = 23),
    # random selection where parallelograms run out (p = 7 has room for n_pl ≤ 7 at most).
    # (p11-n96-s8, p11-n64-a08-s8, p13-n128-s8, p7-n40r-s8-lr1e-2 were stopped unfinished for stage 3.)
    "scout2": [
        _r("p7-n40r-s8", HOPELESS, **SCOUT, p=7, selection="random", n_id=40, alpha=0.6, n_shots=8,
           batch_size=80, steps=3000),
        _r("p11-n64-s8", HOPELESS, **SCOUT, p=11, n_pl=16, alpha=0.6, n_shots=8, batch_size=64, steps=3000),
        _r("p11-n96-s8", HOPELESS, **SCOUT, p=11, n_pl=24, alpha=0.6, n_shots=8, batch_size=96, steps=3000),
        _r("p11-n64-a08-s8", HOPELESS, **SCOUT, p=11, n_pl=16, alpha=0.8, n_shots=8, batch_size=64, steps=3000),
        _r("p13-n128-s8", HOPELESS, **SCOUT, p=13, n_pl=32, alpha=0.6, n_shots=8, batch_size=128, steps=3000),
        _r("p7-n40r-s8-lr1e-2", HOPELESS, **{**SCOUT, "lr": 1e-2}, p=7, selection="random", n_id=40, alpha=0.6,
           n_shots=8, batch_size=80, steps=3000),
    ],
    # Stage 3: p = 11 and 7 with many tasks sit on the ln p plateau for > 1500 steps at this load, so
    # p = 5 and 7 with a large task share, high α and a few shots; weight decay both ways.
    "scout3": [
        _r("p5-n20r-a08-s5", HOPELESS, **SCOUT, p=5, selection="random", n_id=20, alpha=0.8, n_shots=5,
           batch_size=64, steps=3000),
        _r("p5-n20r-a06-s8", HOPELESS, **SCOUT, p=5, selection="random", n_id=20, alpha=0.6, n_shots=8,
           batch_size=64, steps=3000),
        _r("p5-n20r-a08-s5-wd3", HOPELESS, **{**SCOUT, "weight_decay": 3.0}, p=5, selection="random", n_id=20,
           alpha=0.8, n_shots=5, batch_size=64, steps=3000),
        _r("p7-n24-a07-s8", HOPELESS, **SCOUT, p=7, n_pl=6, alpha=0.7, n_shots=8, batch_size=64, steps=3000),
        _r("p7-n32r-a07-s8-wd01", HOPELESS, **{**SCOUT, "weight_decay": 0.1}, p=7, selection="random", n_id=32,
           alpha=0.7, n_shots=8, batch_size=64, steps=3000),
        _r("p5-n16-a06-s8-lr1e-2", HOPELESS, **{**SCOUT, "lr": 1e-2}, p=5, n_pl=4, alpha=0.6, n_shots=8,
           batch_size=64, steps=3000),
    ],
    # (p7-n24-a07-s8, p7-n32r-a07-s8-wd01, p5-n16-a06-s8-lr1e-2 were stopped unfinished for stage 4.)
    # Stage 4: every short run stays below the plateau or memorizes; p5-n16-a06 (10 shots) fits its
    # tasks fastest (step 1250), so train it longer and let weight decay turn memorization into
    # generalization (grokking). Cut when i.d. test is still near chance half-way.
    "long": [
        _r("p5-n16-a06-s10-long", [(0.5, "id_test", 0.35)], **SCOUT, p=5, n_pl=4, alpha=0.6, n_shots=10,
           batch_size=64, steps=12000),
        _r("p5-n16-a06-s10-long-wd2", [(0.5, "id_test", 0.35)], **{**SCOUT, "weight_decay": 2.0}, p=5, n_pl=4,
           alpha=0.6, n_shots=10, batch_size=64, steps=12000),
    ],
    # Stage 5: p = 5 memorizes by step 1500 and has not generalized by step 6000 (its 10 test points
    # never appear in training, for any task); p = 7 at α = 0.8 covers 39 of the 49 points.
    "long2": [
        _r("p7-n16-a08-s10", [(0.5, "id_test", 0.3)], **SCOUT, p=7, n_pl=4, alpha=0.8, n_shots=10,
           batch_size=64, steps=6000),
        _r("p7-n32r-a08-s10", [(0.5, "id_test", 0.3)], **SCOUT, p=7, selection="random", n_id=32, alpha=0.8,
           n_shots=10, batch_size=64, steps=6000),
    ],
    # The laptop phase diagram: n_id × α at p = 5, 10 shots, 2500 steps (the `demo` preset's
    # settings otherwise); no cut-off, every run goes to the end.
    "grid": [
        _r(f"grid-p5-n{n}-a{a}", **SCOUT, p=5, **sel, alpha=a, n_shots=10, batch_size=64, steps=2500)
        for n, sel in ((8, dict(n_pl=2)), (16, dict(n_pl=4)), (20, dict(selection="random", n_id=20)))
        for a in (0.4, 0.6)
    ],
    # Stage 6: in the grid, n_id 20 at α 0.6 fits its tasks slowest and has the highest i.d. test
    # accuracy at step 2500 (0.41): run it longer, with weight decay 1.0 and 2.0.
    "long3": [
        _r("p5-n20r-a06-s10-long", [(0.5, "id_test", 0.3)], **SCOUT, p=5, selection="random", n_id=20, alpha=0.6,
           n_shots=10, batch_size=64, steps=8000),
        _r("p5-n20r-a06-s10-long-wd2", [(0.5, "id_test", 0.3)], **{**SCOUT, "weight_decay": 2.0}, p=5,
           selection="random", n_id=20, alpha=0.6, n_shots=10, batch_size=64, steps=8000),
    ],
    # Stage 7: with weight decay 2.0, n_id 20 of 25 starts to solve new tasks on training inputs
    # (o.o.d. train 0.75 at step 6000) and i.d. test rises (0.56): run it to 16000 steps, wd 2 and 3.
    "long4": [
        _r("p5-n20r-a06-s10-wd2-16k", **{**SCOUT, "weight_decay": 2.0}, p=5, selection="random", n_id=20,
           alpha=0.6, n_shots=10, batch_size=64, steps=16000),
        _r("p5-n20r-a06-s10-wd3-16k", **{**SCOUT, "weight_decay": 3.0}, p=5, selection="random", n_id=20,
           alpha=0.6, n_shots=10, batch_size=64, steps=16000),
    ],
    # Stage 8: the 8000-step schedule of stage 6 (its cosine falls sooner) fits and generalizes
    # sooner than 16000 steps do; shorter schedules for the demo's test (only the 4k run was run;
    # the demo itself is the stage-6 wd2 run, timed by `fastgrok train --preset demo`).
    "short": [
        _r("p5-n20r-a06-s10-wd2-4k", **{**SCOUT, "weight_decay": 2.0}, p=5, selection="random", n_id=20,
           alpha=0.6, n_shots=10, batch_size=64, steps=4000),
        _r("p5-n20r-a06-s10-wd2-6k", **{**SCOUT, "weight_decay": 2.0}, p=5, selection="random", n_id=20,
           alpha=0.6, n_shots=10, batch_size=64, steps=6000),
    ],
    # Stage 9: is the demo a lucky seed? The same config with another model seed, another data seed.
    "seeds": [
        _r("demo-seed2", **{**SCOUT, "weight_decay": 2.0, "seed": 2}, p=5, selection="random", n_id=20,
           alpha=0.6, n_shots=10, batch_size=64, steps=8000),
        _r("demo-data_seed1", **{**SCOUT, "weight_decay": 2.0, "data_seed": 1}, p=5, selection="random", n_id=20,
           alpha=0.6, n_shots=10, batch_size=64, steps=8000),
    ],
    # Stage 10 (a later session, quiet machine: load ≈ 1 from one other job): the settings stages 1–5 cut
    # on a loaded machine, run to the end — p = 7 and 11 with most of their tasks and α = 0.8, width 64
    # and 128 — beside p = 5 at α = 0.8 (5 shots: its 5 test points bound the shots).
    "quiet1": [
        _r("p7-n40r-a08-s10-12k", **SCOUT, p=7, selection="random", n_id=40, alpha=0.8, n_shots=10, batch_size=64,
           steps=12000),
        _r("p5-n20r-a08-s5-wd2-12k", **{**SCOUT, "weight_decay": 2.0}, p=5, selection="random", n_id=20, alpha=0.8,
           n_shots=5, batch_size=64, steps=12000),
        _r("p7-n40r-a08-s10-w128-8k", **{**SCOUT, "n_embd": 128}, p=7, selection="random", n_id=40, alpha=0.8,
           n_shots=10, batch_size=64, steps=8000),
        _r("p11-n100r-a08-s12-8k", **SCOUT, p=11, selection="random", n_id=100, alpha=0.8, n_shots=12,
           batch_size=100, steps=8000),
    ],
    # Stage 11: p = 7 and 11 with most tasks stay on the ln p plateau (p = 7: loss 1.81 of 1.95 at step
    # 9000), p = 5 at 5 shots learns nothing. The demo (p = 5, α 0.6, 10 shots) is limited by its 10
    # test points: trade shots for coverage (α 0.64/0.68/0.72 → 9/8/7 shots), a larger batch, and p = 7
    # with more shots (α 0.7 → 15) and fewer tasks.
    "quiet2": [
        _r(f"p5-n20r-a{a}-s{k}-wd2-10k", **{**SCOUT, "weight_decay": 2.0}, p=5, selection="random", n_id=20,
           alpha=a, n_shots=k, batch_size=64, steps=10000)
        for a, k in ((0.64, 9), (0.68, 8), (0.72, 7))
    ] + [
        _r("p5-n20r-a06-s10-wd2-b128-8k", **{**SCOUT, "weight_decay": 2.0}, p=5, selection="random", n_id=20,
           alpha=0.6, n_shots=10, batch_size=128, steps=8000),
        _r("p7-n32r-a07-s15-wd2-8k", **{**SCOUT, "weight_decay": 2.0}, p=7, selection="random", n_id=32,
           alpha=0.7, n_shots=15, batch_size=64, steps=8000),
    ],
    # Stage 12: fewer shots learn slower (α 0.64/9 shots fits its tasks only at step 9000; α 0.68/8
    # shots not by 9000), so more shots: p = 7 at α 0.6 allows 20; p = 11 with a few tasks at α 0.7 (i.d.
    # generalization in the paper's Figure 1b needs n_id ≥ 32 at α ≥ 0.7); the demo at a higher lr and
    # at depth 4 (deeper models generalize o.o.d. sooner in the paper, if transiently). A batch of 128
    # (stage 11) fits the demo's tasks sooner (step 2250) but only memorizes: o.o.d. train 0.17.
    "quiet3": [
        _r("p5-n20r-a06-s10-wd2-d4-8k", **{**SCOUT, "weight_decay": 2.0, "depth": 4}, p=5, selection="random",
           n_id=20, alpha=0.6, n_shots=10, batch_size=64, steps=8000),
        _r("p7-n40r-a06-s20-8k", **SCOUT, p=7, selection="random", n_id=40, alpha=0.6, n_shots=20, batch_size=64,
           steps=8000),
        _r("p11-n32r-a07-s16-8k", **SCOUT, p=11, selection="random", n_id=32, alpha=0.7, n_shots=16, batch_size=64,
           steps=8000),
        _r("p5-n20r-a06-s10-lr1e-2-wd05-8k", **{**SCOUT, "lr": 1e-2, "weight_decay": 0.5}, p=5, selection="random",
           n_id=20, alpha=0.6, n_shots=10, batch_size=64, steps=8000),
        _r("p7-n24r-a06-s20-wd2-8k", **{**SCOUT, "weight_decay": 2.0}, p=7, selection="random", n_id=24, alpha=0.6,
           n_shots=20, batch_size=64, steps=8000),
    ],
    # Stage 13: p = 7 with 40 of its 49 tasks at 20 shots leaves the plateau (train 0.69 at step 8000,
    # still rising): twice as long, weight decay 1 and 2; o.o.d. train/test have 9 tasks.
    "quiet4": [
        _r(f"p7-n40r-a06-s20-wd{wd}-16k", **{**SCOUT, "weight_decay": float(wd)}, p=7, selection="random", n_id=40,
           alpha=0.6, n_shots=20, batch_size=64, steps=16000)
        for wd in (1, 2)
    ],
    # Stage 14: weight decay 1 leaves the p = 7 plateau at step ≈ 3000 and solves 5 of the 9 new tasks on
    # training inputs (o.o.d. train 0.78 at step 7500) before memorization takes over (0.2 by 13000);
    # i.d. test stays ≈ 0.3 (its 20 input points are never trained on). Fewer unseen points: α 0.7
    # (15 test points, 15 shots); more tasks: 45 of 49.
    "quiet5": [
        _r("p7-n40r-a07-s15-wd1-12k", **SCOUT, p=7, selection="random", n_id=40, alpha=0.7, n_shots=15,
           batch_size=64, steps=12000),
        _r("p7-n45r-a06-s20-wd1-12k", **SCOUT, p=7, selection="random", n_id=45, alpha=0.6, n_shots=20,
           batch_size=64, steps=12000),
    ],
    # Stage 15: is stage 13's transient o.o.d.-train peak (0.78) a lucky draw? Its setting with another
    # model seed and another data seed (tasks and split), on a 10000-step schedule.
    "quiet6": [
        _r("p7-n40r-a06-s20-wd1-10k-seed2", **{**SCOUT, "seed": 2}, p=7, selection="random", n_id=40, alpha=0.6,
           n_shots=20, batch_size=64, steps=10000),
        _r("p7-n40r-a06-s20-wd1-10k-data1", **{**SCOUT, "data_seed": 1}, p=7, selection="random", n_id=40,
           alpha=0.6, n_shots=20, batch_size=64, steps=10000),
    ],
    # Stage 16: the i.d. test points are the barrier (never trained on; 20 of 49 at p = 7, α 0.6). p = 11 at
    # α 0.8 trains on 97 of 121 points and still allows 24 shots; and p = 7's stage-13 run at width 128.
    "quiet7": [
        _r("p11-n100r-a08-s24-wd1-10k", **SCOUT, p=11, selection="random", n_id=100, alpha=0.8, n_shots=24,
           batch_size=64, steps=10000),
        _r("p7-n40r-a06-s20-wd1-w128-8k", **{**SCOUT, "n_embd": 128}, p=7, selection="random", n_id=40, alpha=0.6,
           n_shots=20, batch_size=64, steps=8000),
        # (the batch of 64 cannot hold 100 tasks: refused, recorded; rerun with a batch of 100)
        _r("p11-n100r-a08-s24-wd1-b100-10k", **SCOUT, p=11, selection="random", n_id=100, alpha=0.8, n_shots=24,
           batch_size=100, steps=10000),
    ],
}


def _acc_last(rec: dict[str, Any], s: str) -> float:
    return rec["sets"][s]["acc_last"]


def run_one(group: str, run: Run, threads: int, jobs: int) -> dict[str, Any]:
    """Train one configuration (in this process) and return its CSV row."""
    import torch
    torch.set_num_threads(threads)
    import fastgrok

    out = tempfile.mkdtemp(prefix="fastgrok-phen-")
    cfg = fastgrok.Config.preset("quick", **run.overrides, out_dir=out, run_name=run.label)
    load_start = os.getloadavg()[0]
    steps = cfg.train.steps
    stops = sorted({max(cfg.train.eval_every, round(f * steps / cfg.train.eval_every) * cfg.train.eval_every)
                    for f, _, _ in run.cut if f < 1})
    history: list[dict[str, Any]] = []
    wall, cut_reason, resume = 0.0, "", None
    t0 = time.perf_counter()
    for stop in stops + [steps]:
        res = (fastgrok.train(cfg, stop_at=stop, quiet=True) if resume is None
               else fastgrok.train(resume=resume, stop_at=stop, quiet=True))
        resume, history = res.run_dir, res.history
        for f, s, lo in run.cut:
            at = max(cfg.train.eval_every, round(f * steps / cfg.train.eval_every) * cfg.train.eval_every)
            if at == stop and stop < steps and _acc_last(history[-1], s) < lo:
                cut_reason = f"{s} last-shot {_acc_last(history[-1], s):.2f} < {lo} at step {stop}"
        if cut_reason:
            break
    wall = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return make_row(group, run, cfg, history, wall, cut_reason, threads, jobs, load_start)


def make_row(group: str, run: Run, cfg: Any, history: list[dict[str, Any]], wall: float, cut_reason: str,
             threads: int, jobs: int, load_start: float) -> dict[str, Any]:
    """The CSV row of one configuration from its evaluation history (the lines of metrics.jsonl)."""
    import torch
    from fastgrok.envinfo import git_sha

    last = history[-1]
    best = {s: max(_acc_last(r, s) for r in history) for s in SETS}
    thr = cfg.train.phase_threshold
    solved = {s: next((r["step"] for r in history if _acc_last(r, s) >= thr), "") for s in SETS}
    best_ood = max(history, key=lambda r: _acc_last(r, "ood_test"))
    t, m, tr = cfg.task, cfg.model, cfg.train
    return dict(
        group=group, label=run.label, overrides=json.dumps(run.overrides, sort_keys=True),
        p=t.p, n_id=t.n_pretrain, n_ood=t.p ** t.n_var - t.n_pretrain, alpha=t.alpha, n_shots=t.n_shots,
        sampling=t.sampling, depth=m.depth, n_embd=m.n_embd, batch_size=tr.batch_size, lr=tr.lr,
        weight_decay=tr.weight_decay, warmup=tr.warmup, steps_planned=tr.steps, steps=last["step"], note=cut_reason,
        wall_s=round(wall, 1), ms_per_step=round(1e3 * wall / last["step"], 1), threads=threads, jobs=jobs,
        load_start=round(load_start, 2), load_end=round(os.getloadavg()[0], 2),
        **{f"final_{s}": round(_acc_last(last, s), 3) for s in SETS},
        **{f"best_{s}": round(best[s], 3) for s in SETS},
        **{f"solved_step_{s}": solved[s] for s in SETS},
        final_id_test_shot0=round(last["sets"]["id_test"]["kshot"][0], 3),
        phase=last["phase"], best_ood_step=best_ood["step"], torch=torch.__version__, git_sha=git_sha() or "",
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def _worker(args: tuple[str, Run, int, int]) -> dict[str, Any]:
    try:
        return run_one(*args)
    except Exception as e:  # a bad config is a result too; keep the search going
        group, run, threads, jobs = args
        return dict(group=group, label=run.label, overrides=json.dumps(run.overrides, sort_keys=True),
                    note=f"error: {type(e).__name__}: {str(e)[:160]}", threads=threads, jobs=jobs)


def append_row(row: dict[str, Any], path: Path = CSV_PATH) -> None:
    new = not path.exists() or path.stat().st_size == 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow({c: row.get(c, "") for c in COLUMNS})


def _show(row: dict[str, Any]) -> str:
    if "wall_s" not in row or row.get("wall_s", "") == "":
        return f"{row['label']}: {row.get('note')}"
    fin = " ".join(f"{row[f'final_{s}']:.2f}" for s in SETS)
    best = " ".join(f"{row[f'best_{s}']:.2f}" for s in SETS)
    return (f"{row['label']:<24} {row['steps']:>6} st {row['wall_s']:>6.0f}s {row['ms_per_step']:>5.0f} ms/st "
            f"load {row['load_start']:.1f} | final {fin} | best {best} | {row['phase']} "
            f"| solved {[row[f'solved_step_{s}'] for s in SETS]} {row['note']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("groups", nargs="*")
    ap.add_argument("--jobs", type=int, default=2, help="training processes at once")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--only", nargs="*", default=None, help="run only these labels")
    ap.add_argument("--list", action="store_true", help="list the groups and their labels")
    ap.add_argument("--out", type=Path, default=CSV_PATH)
    a = ap.parse_args(argv)
    if a.list or not a.groups:
        for g, runs in GROUPS.items():
            print(f"{g}: {' '.join(r.label for r in runs)}")
        return 0
    unknown = [g for g in a.groups if g not in GROUPS]
    if unknown:
        print(f"unknown group(s) {unknown}; groups: {', '.join(GROUPS)}", file=sys.stderr)
        return 2
    todo = [(g, r, a.threads, a.jobs) for g in a.groups for r in GROUPS[g] if a.only is None or r.label in a.only]
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    with mp.get_context("spawn").Pool(a.jobs, maxtasksperchild=1) as pool:
        for row in pool.imap_unordered(_worker, todo):
            append_row(row, a.out)
            print(_show(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
