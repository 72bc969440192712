"""Task-count sweep — what fastgrok exists for: step time, start-up time and evaluation cost as the
number of pre-training tasks grows; rows go to tasks.csv.

Families (mode column): p29, p59, p97 (n_var = 2) and p29-n3 (n_var = 3). n_id runs 8 → 32 → 128
→ 512 → every task the family allows (p^n − 1, leaving one o.o.d. task), parallelogram selection
where it reaches that count, random otherwise. Goals: step time flat within 5 % across n_id;
start-up under 1 s at p = 29 and under 5 s at p = 97.
- tasks_step: one training step at batch 1024 (n_id ≤ 1024: a batch holds every task), on-device
  batches ("reference") beside the host pipeline ("host-pipeline"), in ms; and at every n_id in
  "ms/1024 rows": above 1024 tasks a batch must hold each task once, so the step runs at batch n_id
  and is scaled to 1024 sequences (the same figure as ms at n_id ≤ 1024), up to 10 000 tasks, not
  with quick: flat across every n_id.
- tasks_startup: seconds from the config to tasks, α split, the five batch sources and one batch of
  1024 sequences of each (host pipeline: every equation materialised, the loader, one batch), and
  the MiB of task data each keeps (device tables; host equations).
- tasks_eval: one evaluation (all four sets) as max_ood grows, o.o.d. sets beyond one batch included.
On CPU a small model (depth 1, n_embd 32) keeps it to seconds a point; on CUDA the paper's depth-2.
`families` picks some, `evals=False` skips tasks_eval, `repeats` sets the start-up repetitions (gpu_check:
p29, p59, p97, no evals, 3); `toy` runs one family at p = 7 (8 → 48 tasks) with the quick model, batch 64.
"""
from __future__ import annotations

import functools
import time

import torch

from ..config import Config
from ..tasks import make_tasks
from ..trainer import build, evaluate, train_step
from .core import Recorder, Timing, row, sync, time_startup, time_windows
from .hostpipe import HostPipeline, attach, host_tokens, host_train_step

FAMILIES = {"p29": dict(p=29, n_var=2), "p59": dict(p=59, n_var=2), "p97": dict(p=97, n_var=2),
            "p29-n3": dict(p=29, n_var=3)}
TOY_FAMILIES = {"p7": dict(p=7, n_var=2)}  # the gpu_check rehearsal
_ALL = FAMILIES | TOY_FAMILIES
N_IDS = (8, 32, 128, 512)
BATCH = 1024
TOY_BATCH = 64
REPEATS = 5  # start-up repetitions per point
HOST_TOKEN_LIMIT = 2**27  # the host pipeline is skipped above 1 GiB of int64 equations
STEP_ROWS_LIMIT = 10_000  # steps above the batch run at batch n_id up to this (p97's 9408; not p29-n3's 24388)
EVAL_SWEEP = {"p29": (32, (8, 32, 128, 256, 809)), "p97": (512, (256, 1024, 4096, 8897))}  # family: (n_id, max_oods)
MODELS = {"cuda": dict(depth=2, n_embd=512, n_head=4), "cpu": dict(depth=1, n_embd=32, n_head=2),
          "quick": dict(depth=1, n_embd=16, n_head=2, n_shots=8)}


def max_n_id(family: str) -> int:
    f = _ALL[family]
    return f["p"] ** f["n_var"] - 1


@functools.lru_cache(maxsize=None)
def selection_for(family: str, n_id: int) -> str:
    """"parallelogram" where the construction reaches n_id (the paper's), else "random"."""
    f = _ALL[family]
    if f["n_var"] != 2 or n_id % 4 or n_id > 0.75 * f["p"] ** 2:  # near every task the retries only fail, slowly
        return "random"
    try:
        make_tasks(Config.preset("paper", **f, n_id=n_id, batch_size=max(BATCH, n_id)).task)
        return "parallelogram"
    except ValueError:
        return "random"


def task_config(family: str, n_id: int, device: torch.device, model: dict, batch: int = BATCH, **over) -> Config:
    """The paper's task set-up (α = 0.6, 32 shots unless `model` says) for a family and n_id; batch max(batch, n_id)."""
    kw = dict(_ALL[family], n_id=n_id, selection=selection_for(family, n_id),
              batch_size=max(batch, n_id), device=str(device), compile="off") | model | over
    return Config.preset("paper", **kw)


def _model(device: torch.device, quick: bool) -> dict:
    return MODELS["quick" if quick else ("cuda" if device.type == "cuda" else "cpu")]


def plan(quick: bool, families: tuple[str, ...] | None = None, toy: bool = False) -> dict[str, list[int]]:
    """n_id values per family (quick: p29 and p29-n3, smallest and largest; toy: p7, every point)."""
    if toy:
        fams = tuple(TOY_FAMILIES)
    elif families:
        if unknown := [f for f in families if f not in FAMILIES]:
            raise ValueError(f"tasks: unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
                             f"families: {', '.join(FAMILIES)}")
        fams = tuple(families)
    else:
        fams = ("p29", "p29-n3") if quick else tuple(FAMILIES)
    out = {}
    for fam in fams:
        top = max_n_id(fam)
        grid = [n for n in N_IDS if n < top] + [min(top, BATCH), top]
        out[fam] = sorted(set(grid if not quick or toy else [grid[0], grid[-1]]))
    return out


def _windows(quick: bool) -> tuple[int, int, int]:
    return (1, 2, 2) if quick else (2, 5, 3)


def step_rows(family: str, n_id: int, device: torch.device, quick: bool, host: bool, batch: int = BATCH) -> list[dict]:
    """ms at the batch (n_id ≤ batch), and ms scaled to `batch` sequences ("ms/<batch> rows") at every n_id."""
    cfg = task_config(family, n_id, device, _model(device, quick), batch)
    sess = build(cfg)
    if host:
        sess = attach(sess, HostPipeline(cfg, sess.tasks, device))
        fn = lambda i: host_train_step(sess, i)  # noqa: E731
    else:
        fn = lambda i: train_step(sess, i)  # noqa: E731
    warmup, windows, per_window = _windows(quick)
    t = Timing.of(time_windows(fn, device, warmup=warmup, windows=windows, per_window=per_window))
    prov = "host-pipeline" if host else "reference"
    rows = [row("tasks_step", prov, family, "n_id", n_id, t, "ms", device, 1e3)] if n_id <= batch else []
    per_rows = 1e3 * batch / cfg.train.batch_size
    return rows + [row("tasks_step", prov, family, "n_id", n_id, t, f"ms/{batch} rows", device, per_rows)]


def host_startup(cfg: Config, device: torch.device, repeats: int, batch: int = BATCH) -> tuple[list[float], int]:
    """Seconds to tasks, every equation materialised, the loader and its first batch on the device; and bytes kept."""
    out, nbytes = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        pipe = HostPipeline(cfg, make_tasks(cfg.task), device, batch_size=batch)
        pipe.batchgen()
        sync(device)
        out.append(time.perf_counter() - t0)
        nbytes = pipe.nbytes
        del pipe
    return out, nbytes


def startup_rows(family: str, n_id: int, device: torch.device, quick: bool, host: bool, batch: int = BATCH,
                 repeats: int | None = None) -> list[dict]:
    cfg = task_config(family, n_id, device, _model(device, quick), batch)
    repeats = repeats or (2 if quick else REPEATS)
    if host:
        secs, nbytes = host_startup(cfg, device, repeats, batch)
        prov = "host-pipeline"
    else:
        secs = time_startup(cfg, device, repeats, batch_size=batch)
        tasks = make_tasks(cfg.task)
        # the five sources' device tables: train stream, train, id_test (pre-training tasks), ood_train, ood_test
        counts = ((tasks.pretrain, 3), (tasks.ood, 2), (tasks.train_inputs, 3), (tasks.test_inputs, 2))
        nbytes = sum(k * t.numel() * t.element_size() for t, k in counts)
        prov = "reference"
    mib = nbytes / 2**20
    return [row("tasks_startup", prov, family, "n_id", n_id, secs, "s", device),
            row("tasks_startup", prov, family, "n_id", n_id, Timing(mib, mib, mib), "MiB", device)]


def eval_rows(family: str, n_id: int, max_ood: int, device: torch.device, quick: bool) -> list[dict]:
    cfg = task_config(family, n_id, device, _model(device, quick), max_ood=max_ood)
    sess = build(cfg)
    fn = lambda _: evaluate(sess.fwd, sess.eval_srcs, cfg, sess.ops.batchgen, device, sess.amp)  # noqa: E731
    t = Timing.of(time_windows(fn, device, warmup=1, windows=2 if quick else 5, per_window=1))
    return [row("tasks_eval", "reference", family, "max_ood", max_ood, t, "ms", device, 1e3)]


def run(device: torch.device, rec: Recorder, *, quick: bool = False, compile: str = "off",
        families: tuple[str, ...] | None = None, evals: bool = True, repeats: int | None = None,
        toy: bool = False) -> None:
    """The sweep (eager: the model's graph does not depend on the task count, the data path does)."""
    if compile == "all":
        rec.note("tasks: measured eager (compile changes the model's cost, not how it scales with n_id)")
    if repeats is not None and (isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1):
        raise ValueError(f"--repeats {repeats!r} must be a positive int")
    quick = quick or toy
    batch = TOY_BATCH if toy else BATCH
    for family, n_ids in plan(quick, families, toy).items():
        per_rows = {}
        for n_id in n_ids:
            needed = host_tokens(make_tasks(task_config(family, n_id, device, _model(device, quick), batch).task))
            for host in (False, True):
                if host and needed > HOST_TOKEN_LIMIT:
                    rec.note(f"tasks: host pipeline skipped at {family} n_id={n_id}: {needed / 2**20:.0f} M tokens "
                             f"to materialise (limit {HOST_TOKEN_LIMIT / 2**20:.0f} M)")
                    continue
                _guard(rec, device, f"{family} n_id={n_id} startup", startup_rows, family, n_id, device, quick, host,
                       batch, repeats)
                if n_id > batch and (quick or n_id > STEP_ROWS_LIMIT):
                    continue
                got = _guard(rec, device, f"{family} n_id={n_id} step", step_rows, family, n_id, device, quick, host,
                             batch)
                per_rows.setdefault("host-pipeline" if host else "reference", []).extend(
                    float(r["p50"]) for r in got if r["unit"].endswith(" rows"))
        for prov, vals in per_rows.items():
            if len(vals) > 1:
                rec.log(f"tasks: {family} {prov}: step per {batch} rows {min(vals):.4g}–{max(vals):.4g} ms over "
                        f"n_id {n_ids[0]}–{n_ids[-1]}, spread {100 * (max(vals) / min(vals) - 1):.1f} % (goal ≤ 5 %)")
    if not evals or toy:
        return
    for family, (n_id, max_oods) in EVAL_SWEEP.items():
        if quick and family != "p29":
            continue
        top = max_n_id(family) + 1 - n_id  # every o.o.d. task
        for max_ood in sorted({min(m, top) for m in (max_oods[:1] + max_oods[-1:] if quick else max_oods)}):
            _guard(rec, device, f"{family} max_ood={max_ood} eval", eval_rows, family, n_id, max_ood, device, quick)


def _guard(rec: Recorder, device: torch.device, what: str, fn, *args) -> list[dict]:
    try:
        rows = fn(*args)
        rec.add(rows)
        return rows
    except Exception as e:  # one point failing (out of memory) must not end the sweep
        rec.note(f"tasks: {what} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return []
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
