"""Task-count sweep — what fastgrok exists for: step time, start-up time and evaluation cost as the
number of pre-training tasks grows; rows go to tasks.csv.

Families (mode column): p29, p59, p97 (n_var = 2) and p29-n3 (n_var = 3). n_id runs 8 → 32 → 128
→ 512 → every task the family allows (p^n − 1, leaving one o.o.d. task), parallelogram selection
where it reaches that count, random otherwise. Goals: step time flat within 5 % across n_id;
start-up under 1 s at p = 29 and under 5 s at p = 97.
- tasks_step: one training step at batch 1024 (n_id ≤ 1024: a batch holds every task), on-device
  batches ("reference") beside the host pipeline ("host-pipeline").
- tasks_startup: seconds from the config to tasks, α split, the five batch sources and one batch of
  1024 sequences of each (host pipeline: every equation materialised, the loader, one batch), and
  the MiB of task data each keeps (device tables; host equations).
- tasks_eval: one evaluation (all four sets) as max_ood grows, o.o.d. sets beyond one batch included.
On CPU a small model (depth 1, n_embd 32) keeps it to seconds a point; on CUDA the paper's depth-2.
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
N_IDS = (8, 32, 128, 512)
BATCH = 1024
HOST_TOKEN_LIMIT = 2**27  # the host pipeline is skipped above 1 GiB of int64 equations
EVAL_SWEEP = {"p29": (32, (8, 32, 128, 256, 809)), "p97": (512, (256, 1024, 4096, 8897))}  # family: (n_id, max_oods)
MODELS = {"cuda": dict(depth=2, n_embd=512, n_head=4), "cpu": dict(depth=1, n_embd=32, n_head=2),
          "quick": dict(depth=1, n_embd=16, n_head=2, n_shots=8)}


def max_n_id(family: str) -> int:
    f = FAMILIES[family]
    return f["p"] ** f["n_var"] - 1


@functools.lru_cache(maxsize=None)
def selection_for(family: str, n_id: int) -> str:
    """"parallelogram" where the construction reaches n_id (the paper's), else "random"."""
    f = FAMILIES[family]
    if f["n_var"] != 2 or n_id % 4 or n_id > 0.75 * f["p"] ** 2:  # near every task the retries only fail, slowly
        return "random"
    try:
        make_tasks(Config.preset("paper", **f, n_id=n_id, batch_size=max(BATCH, n_id)).task)
        return "parallelogram"
    except ValueError:
        return "random"


def task_config(family: str, n_id: int, device: torch.device, model: dict, **over) -> Config:
    """The paper's task set-up (α = 0.6, 32 shots unless `model` says) for a family and n_id; batch max(1024, n_id)."""
    kw = dict(FAMILIES[family], n_id=n_id, selection=selection_for(family, n_id),
              batch_size=max(BATCH, n_id), device=str(device), compile="off") | model | over
    return Config.preset("paper", **kw)


def _model(device: torch.device, quick: bool) -> dict:
    return MODELS["quick" if quick else ("cuda" if device.type == "cuda" else "cpu")]


def plan(quick: bool) -> dict[str, list[int]]:
    """n_id values per family (quick: p29 and p29-n3, smallest and largest)."""
    fams = ("p29", "p29-n3") if quick else tuple(FAMILIES)
    out = {}
    for fam in fams:
        top = max_n_id(fam)
        grid = [n for n in N_IDS if n < top] + [min(top, BATCH), top]
        out[fam] = sorted(set(grid if not quick else [grid[0], grid[-1]]))
    return out


def _windows(quick: bool) -> tuple[int, int, int]:
    return (1, 2, 2) if quick else (2, 5, 3)


def step_rows(family: str, n_id: int, device: torch.device, quick: bool, host: bool) -> list[dict]:
    cfg = task_config(family, n_id, device, _model(device, quick))
    sess = build(cfg)
    if host:
        sess = attach(sess, HostPipeline(cfg, sess.tasks, device))
        fn = lambda i: host_train_step(sess, i)  # noqa: E731
    else:
        fn = lambda i: train_step(sess, i)  # noqa: E731
    warmup, windows, per_window = _windows(quick)
    t = Timing.of(time_windows(fn, device, warmup=warmup, windows=windows, per_window=per_window))
    return [row("tasks_step", "host-pipeline" if host else "reference", family, "n_id", n_id, t, "ms", device, 1e3)]


def host_startup(cfg: Config, device: torch.device, repeats: int) -> tuple[list[float], int]:
    """Seconds to tasks, every equation materialised, the loader and its first batch on the device; and bytes kept."""
    out, nbytes = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        pipe = HostPipeline(cfg, make_tasks(cfg.task), device, batch_size=BATCH)
        pipe.batchgen()
        sync(device)
        out.append(time.perf_counter() - t0)
        nbytes = pipe.nbytes
        del pipe
    return out, nbytes


def startup_rows(family: str, n_id: int, device: torch.device, quick: bool, host: bool) -> list[dict]:
    cfg = task_config(family, n_id, device, _model(device, quick))
    repeats = 2 if quick else 5
    if host:
        secs, nbytes = host_startup(cfg, device, repeats)
        prov = "host-pipeline"
    else:
        secs = time_startup(cfg, device, repeats, batch_size=BATCH)
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


def run(device: torch.device, rec: Recorder, *, quick: bool = False, compile: str = "off") -> None:
    """The sweep (eager: the model's graph does not depend on the task count, the data path does)."""
    if compile == "all":
        rec.note("tasks: measured eager (compile changes the model's cost, not how it scales with n_id)")
    for family, n_ids in plan(quick).items():
        for n_id in n_ids:
            needed = host_tokens(make_tasks(task_config(family, n_id, device, _model(device, quick)).task))
            for host in (False, True):
                if host and needed > HOST_TOKEN_LIMIT:
                    rec.note(f"tasks: host pipeline skipped at {family} n_id={n_id}: {needed / 2**20:.0f} M tokens "
                             f"to materialise (limit {HOST_TOKEN_LIMIT / 2**20:.0f} M)")
                    continue
                _guard(rec, device, f"{family} n_id={n_id} startup", startup_rows, family, n_id, device, quick, host)
                if n_id <= BATCH:
                    _guard(rec, device, f"{family} n_id={n_id} step", step_rows, family, n_id, device, quick, host)
    for family, (n_id, max_oods) in EVAL_SWEEP.items():
        if quick and family != "p29":
            continue
        top = max_n_id(family) + 1 - n_id  # every o.o.d. task
        for max_ood in sorted({min(m, top) for m in (max_oods[:1] + max_oods[-1:] if quick else max_oods)}):
            _guard(rec, device, f"{family} max_ood={max_ood} eval", eval_rows, family, n_id, max_ood, device, quick)


def _guard(rec: Recorder, device: torch.device, what: str, fn, *args) -> None:
    try:
        rec.add(fn(*args))
    except Exception as e:  # one point failing (out of memory) must not end the sweep
        rec.note(f"tasks: {what} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
