"""`fastgrok analyze`: each analysis as numbers (a JSON file, large arrays in an .npz beside it) and a figure
drawn from exactly those numbers (figures.py), so a notebook can load the JSON and redraw or re-plot it.

Analyses plug in as backends do: a dict name → (what it needs of the model, the function), one resolver.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import runfolder
from ..checkpoint import atomic_write_text
from ..sets import ANALYSES, SPLITS
from . import algorithms as alg
from . import probe
from .source import Subject

NEEDS_PLANE = ("grid", "heads", "cosine")  # over all (x, y) ∈ Z_p²: n_var = 2 only
NEEDS_SETS = ("kshot", "noise")             # about the i.d./o.o.d. sets: only where the task set is known
NOISE_SPLITS = ("train", "ood_train")       # i.d. and o.o.d. tasks, on the inputs the run trained on
NOISE_PROTOCOLS = ("fastgrok", "paper")     # paper: label_noise.ipynb, j of all points, test inputs, id+ood averaged


@dataclass
class Options:
    """What to analyse and how (the flags of `fastgrok analyze`)."""

    what: tuple[str, ...] = ()              # empty: every analysis that fits the model
    task: tuple[int, int] | None = None     # grid/attention/heads task; default the first o.o.d. task
    shots: int | None = None                # K, examples in the fixed context; default n_shots − 1
    layer: int | None = None                # the head drawn large in heads; default 0
    head: int | None = None                 # default 0
    seed: int = 0                           # the fixed context's draw and the label noise
    half_width: float = 0.02                # kshot: 95 % interval half-width to reach at every shot
    noise_seqs: int = 4096                  # label noise: sequences per set
    kshot_max_seqs: int = 20_000            # kshot: cap per set
    figures: bool = True
    context: tuple[tuple[int, int], ...] | None = None  # the fixed context's inputs (x, y), given: --context
    draw: str = "fastgrok"                  # else "paper": k-shot_inference_grid.py's random.seed(1) over Z_p²
    all_tasks: bool = False                 # grid: every i.d. and o.o.d. task, the same inputs for each
    vocab: str = "numbers"                  # grid: argmax over the p number tokens (the paper) or "full"
    noise_protocol: str = "fastgrok"        # label noise: j of the k examples, train inputs; or "paper"
    tasks_from: str | None = None           # a paper-format checkpoint: "fastgrok" = fastgrok-paper trained it

    def __post_init__(self) -> None:
        from .checks import check_option_types
        check_option_types(self)


def tasks_known(subject: Subject, opts: Options) -> bool:
    """Whether the subject's i.d./o.o.d. task sets are the ones it trained on: a run folder's always are; a
    paper-format checkpoint's are fastgrok's draw for its fields, its own only if fastgrok-paper trained it
    (--tasks-from fastgrok), since the paper's code draws tasks from its training seed."""
    return subject.source != subject.checkpoint or opts.tasks_from == "fastgrok"


def resolve(subject: Subject, opts: Options) -> tuple[str, ...]:
    """The analyses to run, checked against the model; ValueError naming what does not fit."""
    n_var = subject.cfg.task.n_var
    known = tasks_known(subject, opts)
    if not opts.what:
        return tuple(a for a in ANALYSES if (n_var == 2 or a not in NEEDS_PLANE) and (known or a not in NEEDS_SETS))
    sets = [a for a in opts.what if a in NEEDS_SETS]
    if sets and not known:
        raise ValueError(f"{', '.join(sets)}: a paper-format checkpoint's i.d. and o.o.d. tasks are not known (the "
                         "paper's code draws them from its training seed); pass --tasks-from fastgrok if "
                         "fastgrok-paper trained it, whose tasks are fastgrok's draw for these fields")
    unknown = [a for a in opts.what if a not in ANALYSES]
    if unknown:
        raise ValueError(f"unknown analysis {', '.join(map(repr, unknown))}; analyses: {', '.join(ANALYSES)}")
    plane = [a for a in opts.what if a in NEEDS_PLANE]
    if plane and n_var != 2:
        raise ValueError(f"{', '.join(plane)}: these analyses range over all (x, y) ∈ Z_p² and need n_var = 2; "
                         f"this run has n_var = {n_var}")
    return tuple(dict.fromkeys(opts.what))


def check_options(subject: Subject, opts: Options) -> None:
    """Every option against the model, before anything runs (a bad flag costs no compute)."""
    cfg, p = subject.cfg, subject.p
    S = cfg.task.n_shots
    if opts.task is not None:
        probe.check_task(opts.task, p)
        if cfg.task.n_var != 2:
            raise ValueError(f"--task names (a, b): it needs n_var = 2, this run has {cfg.task.n_var}")
    if opts.shots is not None and not 1 <= opts.shots <= S - 1:
        raise ValueError(f"--shots {opts.shots}: the fixed context holds 1 … {S - 1} examples (n_shots = {S}, and "
                         "the query takes the last slot)")
    L, H = cfg.model.depth, cfg.model.n_head
    if opts.layer is not None and not 0 <= opts.layer < L:
        raise ValueError(f"--layer {opts.layer} does not exist: the model has layers 0 … {L - 1}")
    if opts.head is not None and not 0 <= opts.head < H:
        raise ValueError(f"--head {opts.head} does not exist: the model has heads 0 … {H - 1}")
    if not 0 < opts.half_width < 0.5:
        raise ValueError(f"half_width={opts.half_width} must lie in (0, 0.5)")
    if opts.noise_seqs < 1:
        raise ValueError(f"noise_seqs={opts.noise_seqs} must be ≥ 1")
    if opts.tasks_from not in (None, "fastgrok"):
        raise ValueError(f"--tasks-from {opts.tasks_from!r}: the one known source is fastgrok (fastgrok-paper)")
    if opts.all_tasks and not tasks_known(subject, opts):
        raise ValueError("--all-tasks: a paper-format checkpoint's i.d. and o.o.d. tasks are not known; pass "
                         "--tasks-from fastgrok if fastgrok-paper trained it")
    if opts.noise_protocol not in NOISE_PROTOCOLS:
        raise ValueError(f"--noise-protocol {opts.noise_protocol!r} is not one of {', '.join(NOISE_PROTOCOLS)}")
    if opts.draw not in DRAWS:
        raise ValueError(f"--draw {opts.draw!r} is not one of {', '.join(DRAWS)}")
    if opts.vocab not in probe.VOCABS:
        raise ValueError(f"--vocab {opts.vocab!r} is not one of {', '.join(probe.VOCABS)}")
    if opts.context is not None:
        if cfg.task.n_var != 2:
            raise ValueError(f"--context lists (x, y) inputs: it needs n_var = 2, this run has {cfg.task.n_var}")
        if opts.draw != "fastgrok":
            raise ValueError("--context gives the context's inputs; --draw paper draws them: pass one of the two")
        if not 1 <= len(opts.context) <= S - 1:
            raise ValueError(f"--context has {len(opts.context)} examples: the fixed context holds 1 … {S - 1} "
                             f"(n_shots = {S}, and the query takes the last slot)")
        if opts.shots is not None and opts.shots != len(opts.context):
            raise ValueError(f"--shots {opts.shots} but --context lists {len(opts.context)} examples: drop --shots")
        for x, y in opts.context:
            if not (0 <= x < p and 0 <= y < p):
                raise ValueError(f"--context point ({x}, {y}) is outside Z_{p}²: x and y must lie in 0 … {p - 1}")
    if opts.draw == "paper":
        paper_ids(p, S - 1 if opts.shots is None else opts.shots)  # a repeat: said before any compute


def _r(x: Any, digits: int = 6) -> Any:
    """Floats rounded for JSON; NaN → None."""
    a = np.asarray(x, dtype=np.float64)
    out = np.round(a, digits).astype(object)
    out[np.isnan(a)] = None
    return out.tolist()


# ---- the fixed context ------------------------------------------------------------------------------
def default_task(subject: Subject) -> tuple[tuple[int, int], str]:
    """The first o.o.d. task (the paper's figures study unseen tasks), else the first pre-training task."""
    t = subject.tasks
    vecs, kind = (t.ood, "ood") if len(t.ood) else (t.pretrain, "id")
    a, b = (int(v) for v in vecs[0])
    return (a, b), kind


def task_kind(subject: Subject, task: tuple[int, int]) -> str:
    """"id" for a pre-training task, "ood" otherwise."""
    return "id" if any(tuple(int(v) for v in w) == task for w in subject.tasks.pretrain) else "ood"


DRAWS = ("fastgrok", "paper")


def paper_ids(p: int, K: int) -> list[int]:
    """The input ids of the paper's Figure 5 context (interpretability/k-shot_inference_grid.py): after
    random.seed(1), one random.randint(0, p² − 1) per shot, the same ids for every task, id = x·p + y (its grid
    lists itertools.product(range(p), repeat=2)). The script asserts the ids are distinct: so does this."""
    import random
    state = random.getstate()
    try:
        random.seed(1)
        ids = [random.randint(0, p * p - 1) for _ in range(K)]
    finally:
        random.setstate(state)
    seen: set[int] = set()
    for k, i in enumerate(ids):
        if i in seen:
            raise ValueError(f"--draw paper: for p={p} the paper's draw repeats input ({i // p}, {i % p}) at shot "
                             f"{k + 1} (its script stops there on an assert): pass --shots {k} or fewer, or --context")
        seen.add(i)
    return ids


def with_z(points: np.ndarray, task: tuple[int, int], p: int) -> np.ndarray:
    """Examples (K, 3): the inputs (K, 2) and their z under `task`."""
    pts = np.asarray(points, dtype=np.int64).reshape(-1, 2)
    return np.c_[pts, (task[0] * pts[:, 0] + task[1] * pts[:, 1]) % p].astype(np.int64)


def fixed_context(subject: Subject, task: tuple[int, int], K: int, seed: int) -> np.ndarray:
    """K examples (x, y, z) of `task` on the run's train inputs, distinct while there are enough: (K, 3)."""
    inputs = subject.tasks.train_inputs.numpy()
    rng = np.random.default_rng([seed, *task])
    pick = rng.permutation(len(inputs))[:K] if K <= len(inputs) else rng.integers(0, len(inputs), K)
    pts = inputs[pick]
    z = (task[0] * pts[:, 0] + task[1] * pts[:, 1]) % subject.p
    return np.concatenate([pts, z[:, None]], 1).astype(np.int64)


@dataclass
class Setting:
    """What every analysis shares: the task, its fixed context, the head drawn large."""

    task: tuple[int, int]
    kind: str
    context: np.ndarray  # (K, 3)
    layer: int
    head: int
    features: dict[str, torch.Tensor] | None = None  # head_features of the context, shared by heads and cosine
    draw: str = "fastgrok"  # how the context's inputs were chosen: fastgrok, paper, given

    def as_json(self) -> dict[str, Any]:
        return dict(task=list(self.task), task_kind=self.kind, shots=len(self.context),
                    context=self.context.tolist(), context_draw=self.draw, layer=self.layer, head=self.head)


def setting(subject: Subject, opts: Options) -> Setting:
    if opts.task is not None:
        task = probe.check_task(opts.task, subject.p)
        kind = task_kind(subject, task)
    else:
        task, kind = default_task(subject) if subject.cfg.task.n_var == 2 else ((0, 0), "none")
    if not tasks_known(subject, opts) and kind in ("id", "ood"):
        kind = "unknown"  # never labelled with fastgrok's draw: whether the run trained on it is not known
    K = subject.cfg.task.n_shots - 1 if opts.shots is None else opts.shots
    p = subject.p
    if subject.cfg.task.n_var != 2:
        context, draw = np.zeros((0, 3), np.int64), "none"
    elif opts.context is not None:
        context, draw = with_z(np.array(opts.context), task, p), "given"
    elif opts.draw == "paper":
        ids = np.array(paper_ids(p, K))
        context, draw = with_z(np.c_[ids // p, ids % p], task, p), "paper"
    else:
        context, draw = fixed_context(subject, task, K, opts.seed), "fastgrok"
    return Setting(task, kind, context, opts.layer or 0, opts.head or 0, draw=draw)


# ---- the analyses -----------------------------------------------------------------------------------
Result = tuple[dict[str, Any], dict[str, np.ndarray]]  # (the JSON, arrays for the .npz)


def run_kshot(s: Subject, st: Setting, opts: Options) -> Result:
    sets = {}
    for split in SPLITS:
        c = probe.kshot_curve(s.model, s.cfg, s.tasks, split, half_width=opts.half_width, max_seqs=opts.kshot_max_seqs)
        tlo, thi = alg.bootstrap_task_mean(c.task_acc, seed=opts.seed)
        sets[split] = dict(acc=_r(c.acc), lo=_r(c.lo), hi=_r(c.hi), task_lo=_r(tlo), task_hi=_r(thi), n_seqs=c.n_seqs,
                           half_width=float(np.round((c.hi - c.lo).max() / 2, 6)),
                           tasks=[list(map(int, w)) for w in c.task_vecs], task_n=c.task_n.tolist(),
                           task_acc=_r(c.task_acc))
    return dict(chance=1.0 / s.p, interval="95% Wilson over the pooled sequences (lo, hi); 95% bootstrap over tasks "
                "of the mean of the tasks' accuracies (task_lo, task_hi)", target_half_width=opts.half_width,
                sets=sets), {}


MAX_SAVED_LOGITS = 2**26  # logits kept in grid.npz up to this many numbers (float16: 128 MiB); else preds only

VOCAB_HELP = dict(numbers="argmax over the p number tokens (the paper's logits[:, :, :p])",
                  full="argmax over the whole vocabulary (the trainer's accuracy)")


def _rows_json(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {name: dict(n=r["n"], right=r["right"], acc=_r(r["acc"]), lo=_r(r["lo"]), hi=_r(r["hi"]),
                       wrong_scaled=r["wrong_scaled"], wrong_scaled_chance=_r(r["wrong_scaled_chance"], 3))
            for name, r in rows.items()}


def _pool(per_task: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Strata counts summed over tasks, with Wilson intervals, and the spread of the tasks' own accuracies."""
    out = {}
    for name in per_task[0]:
        n = np.sum([t[name]["n"] for t in per_task], 0)
        right = np.sum([t[name]["right"] for t in per_task], 0)
        lo, hi = alg.wilson_interval(right, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(n > 0, right / np.maximum(n, 1), np.nan)
            accs = np.array([t[name]["acc"] for t in per_task], dtype=np.float64)  # (tasks, K)
        has = ~np.isnan(accs)
        tmin = np.where(has.any(0), np.nanmin(np.where(has, accs, np.inf), 0), np.nan)
        tmax = np.where(has.any(0), np.nanmax(np.where(has, accs, -np.inf), 0), np.nan)
        out[name] = dict(n=n.tolist(), right=right.tolist(), acc=_r(acc), lo=_r(lo), hi=_r(hi), task_min=_r(tmin),
                         task_max=_r(tmax))
    return out


def run_grid(s: Subject, st: Setting, opts: Options) -> Result:
    """Figure 5 as a decomposition that can fail: per k, the queries in each stratum (alg.STRATA) and how many
    the model answers right, with what it said where it is wrong; --all-tasks: every task, the same inputs."""
    p, ctx = s.p, st.context
    t0 = time.perf_counter()
    preds, logits = probe.grid_logits(s.model, ctx, p, opts.vocab)  # (K, p, p), (K, p, p, V')
    seconds = time.perf_counter() - t0
    dec = alg.decompose(preds, ctx, st.task, p)
    g = np.arange(p)
    model_ok = preds == (st.task[0] * g[:, None] + st.task[1] * g[None, :]) % p
    data = dict(**st.as_json(), p=p, seconds=round(seconds, 3), vocab=opts.vocab, argmax=VOCAB_HELP[opts.vocab],
                chance=1.0 / p, interval="95% Wilson", strata_names=list(alg.STRATA), strata_help=alg.STRATUM_HELP,
                groups={k: list(v) for k, v in alg.GROUPS.items()},
                wrong_scaled="wrong answers equal to c·z_i of an example scaled to meet the query on x or on y "
                             "(c = x/x_i or y/y_i); wrong_scaled_chance: how many a uniform wrong guess would",
                span_rank=[alg.span_rank(ctx[:k], p) for k in range(1, len(ctx) + 1)],
                model_acc=_r(model_ok.reshape(len(ctx), -1).mean(1)), rows=_rows_json(dec["rows"]),
                strata=dec["strata"].tolist(), model=model_ok.astype(int).tolist(), preds=preds.tolist(),
                arrays="grid.npz")
    arrays: dict[str, np.ndarray] = dict(preds=preds.astype(np.int16), logits=logits.astype(np.float32),
                                         strata=dec["strata"].astype(np.int8))
    lens = probe.logit_lens(s.model, ctx, p, opts.vocab)  # (K, L, p, p): the answer after each block
    data["logit_lens"] = dict(
        about="the answer read off the residual after each block (final layer norm and head applied), per layer",
        layers={str(i): _rows_json(alg.decompose(lens[:, i], ctx, st.task, p)["rows"]) for i in range(lens.shape[1])})
    arrays["lens_preds"] = lens.astype(np.int16)
    if opts.all_tasks:
        t1 = time.perf_counter()
        tasks = [("id", tuple(int(v) for v in w)) for w in s.tasks.pretrain] + \
                [("ood", tuple(int(v) for v in w)) for w in s.tasks.ood]
        per_task, all_preds, all_logits = [], [], []
        keep_logits = len(tasks) * logits.size <= MAX_SAVED_LOGITS
        for _, task in tasks:
            ex = with_z(ctx[:, :2], task, p)  # the same inputs for every task, as the paper's script
            pr, lg = probe.grid_logits(s.model, ex, p, opts.vocab)
            per_task.append(_rows_json(alg.decompose(pr, ex, task, p)["rows"]))
            all_preds.append(pr.astype(np.int16))
            if keep_logits:
                all_logits.append(lg.astype(np.float16))
        data["all_tasks"] = dict(
            tasks=[list(t) for _, t in tasks], kinds=[k for k, _ in tasks], seconds=round(time.perf_counter() - t1, 3),
            pooled={kind: _pool([r for (k, _), r in zip(tasks, per_task) if k == kind])
                    for kind in ("id", "ood") if any(k == kind for k, _ in tasks)},
            per_task=per_task, logits_saved=keep_logits)
        arrays["task_preds"] = np.stack(all_preds)
        if keep_logits:
            arrays["task_logits"] = np.stack(all_logits)
    return data, arrays


def token_labels(n_tokens: int, n_var: int) -> list[str]:
    """x1 y1 z1 x2 … for n_var = 2 (v1_1 … for more), 1-based by shot."""
    names = ["x", "y"] if n_var == 2 else [f"v{i + 1}_" for i in range(n_var)]
    names = names + ["z"]
    return [f"{names[t % (n_var + 1)]}{t // (n_var + 1) + 1}" for t in range(n_tokens)]


def attention_sequence(s: Subject, st: Setting, seed: int) -> np.ndarray:
    """The sequence the maps are of: the fixed context, then one more example of the task; the model reads all
    but the last z. For n_var ≠ 2, the first sequence of the o.o.d.-test stream."""
    if s.cfg.task.n_var != 2:
        from ..data import generate_batch, split_source
        return generate_batch(split_source(s.cfg, s.tasks, "ood_test", "cpu", batch_size=1), 0)[0, :-1].numpy()
    more = fixed_context(s, st.task, len(st.context) + 1, seed)[-1:]
    return np.concatenate([st.context, more]).reshape(-1)[:-1]


def run_attention(s: Subject, st: Setting, opts: Options) -> Result:
    seq = attention_sequence(s, st, opts.seed)
    maps = probe.attention_maps(s.model, torch.as_tensor(seq))  # (L, H, T, T)
    return dict(**st.as_json(), p=s.p, tokens=seq.tolist(), labels=token_labels(len(seq), s.cfg.task.n_var),
                attention=_r(maps.numpy(), 5)), {}


def run_embedding(s: Subject, st: Setting, opts: Options) -> Result:
    p = s.p
    wte = s.model.transformer.wte.weight.detach()[:p].float().cpu().numpy()  # (p, C): the number tokens
    coords, share = alg.pca(wte, 4)
    g = alg.primitive_root(p)
    logs = alg.discrete_logs(p, g)
    base = random_pca_shares(p, wte.shape[1], len(share), opts.seed)
    return dict(p=p, primitive_root=g, numbers=list(range(p)), logs=logs.tolist(), pcs=_r(coords),
                explained=_r(share), explained_random=_r(base), warning=pca_warning(p, len(share)),
                random_baseline="median over 50 draws of the shares of the same PCA of p random Gaussian vectors "
                                "of the same width: what structure-free points give"), {}


def random_pca_shares(n: int, C: int, k: int, seed: int, draws: int = 50) -> np.ndarray:
    """Median explained-variance shares of the top k directions of n random Gaussian points in C dims."""
    rng = np.random.default_rng([seed, n, C])
    shares = [alg.pca(rng.standard_normal((n, C)), k)[1] for _ in range(draws)]
    return np.median(np.array([np.pad(v, (0, k - len(v))) for v in shares]), 0)


def pca_warning(n_points: int, k: int) -> str:
    """A line when n points are too few for a PCA of k directions to mean much (p = 5: 5 points, 4 directions)."""
    if n_points - 1 <= 2 * k:
        return (f"{n_points} points span at most {n_points - 1} directions: the top {k} take most of the variance "
                "by construction; compare explained with explained_random before reading structure into it")
    return ""


def _head_setting(s: Subject, st: Setting) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """The head and block features over Z_p² after the context, computed once for heads and cosine."""
    if st.features is None:
        st.features = probe.head_features(s.model, st.context, s.p, st.task)  # x, y and z tokens
    return st.features, probe.all_queries(s.p)


def run_heads(s: Subject, st: Setting, opts: Options) -> Result:
    feats, queries = _head_setting(s, st)
    heads = feats["heads"].numpy()[..., :2, :]    # (L, H, p², 2, C): the x and y tokens
    blocks = feats["blocks"].numpy()[..., :2, :]  # (L, p², 2, C)
    L, H = heads.shape[:2]
    pcs = np.zeros((L, H, len(queries), 2))
    share = np.zeros((L, H, 2))
    for i in range(L):
        for h in range(H):  # the paper's pca_pair_head: (x-token, y-token) outputs concatenated, to 2-D
            pcs[i, h], share[i, h] = alg.pca(heads[i, h].reshape(len(queries), -1), 2)
    bpcs = np.zeros((L, len(queries), 2))
    bshare = np.zeros((L, 2))
    for i in range(L):
        bpcs[i], bshare[i] = alg.pca(blocks[i].reshape(len(queries), -1), 2)
    g = alg.primitive_root(s.p)
    C2 = heads.shape[-1] * heads.shape[-2]
    return dict(**st.as_json(), p=s.p, primitive_root=g, logs=alg.discrete_logs(s.p, g).tolist(),
                queries=queries.tolist(), head_pcs=_r(pcs), head_explained=_r(share), block_pcs=_r(bpcs),
                block_explained=_r(bshare), explained_random=_r(random_pca_shares(len(queries), C2, 2, opts.seed, 10)),
                warning=pca_warning(len(queries), 2)), {}


MAX_COSINE_ROWS = 4096  # p² above this (p > 64): the matrices over the queries with x, y < 64 only


COSINE_TOKENS = ("x", "y", "z")
COSINE_NORMS = ("paper", "centred")


def run_cosine(s: Subject, st: Setting, opts: Options) -> Result:
    feats, queries = _head_setting(s, st)
    heads, blocks = feats["heads"].numpy(), feats["blocks"].numpy()  # (L, H, p², 3, C), (L, p², 3, C)
    if len(queries) > MAX_COSINE_ROWS:  # (p², p²) matrices per head would not fit: a corner of Z_p²
        m = int(MAX_COSINE_ROWS**0.5)
        keep = (queries[:, 0] < m) & (queries[:, 1] < m)
        queries, heads, blocks = queries[keep], heads[:, :, keep], blocks[:, keep]
    L, H = heads.shape[:2]
    fns = dict(paper=alg.cosine_matrix, centred=alg.centred_cosine_matrix)
    # (L, H, token, norm, N, N): the x, y and z tokens of the varied example; the paper's normalisation and the
    # centred one (the paper's "y" panels are token y, norm paper)
    hc = np.stack([np.stack([np.stack([np.stack([fns[n](heads[i, h, :, t]) for n in COSINE_NORMS])
                                       for t in range(3)]) for h in range(H)]) for i in range(L)])
    bc = np.stack([np.stack([np.stack([fns[n](blocks[i, :, t]) for n in COSINE_NORMS]) for t in range(3)])
                   for i in range(L)])  # (L, token, norm, N, N)
    ratio_h = [[[alg.shared_over_spread(heads[i, h, :, t]) for t in range(3)] for h in range(H)] for i in range(L)]
    ratio_b = [[alg.shared_over_spread(blocks[i, :, t]) for t in range(3)] for i in range(L)]
    summary = dict(head_mean_abs=_r(np.abs(hc).mean((-1, -2))), block_mean_abs=_r(np.abs(bc).mean((-1, -2))),
                   head_shared_over_spread=_r(ratio_h, 3), block_shared_over_spread=_r(ratio_b, 3))
    return dict(**st.as_json(), p=s.p, tokens=list(COSINE_TOKENS), norms=list(COSINE_NORMS),
                axes="heads (L, H, token, norm, N, N), blocks (L, token, norm, N, N)", queries=queries.tolist(),
                arrays="cosine.npz", shared_over_spread="norm of the features' mean over the RMS of their "
                "deviations: ≫ 1 saturates the paper's cosine near +1", **summary), \
        {"heads": hc.astype(np.float16), "blocks": bc.astype(np.float16)}


def run_noise(s: Subject, st: Setting, opts: Options) -> Result:
    paper = opts.noise_protocol == "paper"
    splits = ("id_test", "ood_test") if paper else NOISE_SPLITS
    sets = {}
    for split in splits:
        r = probe.label_noise(s.model, s.cfg, s.tasks, split, n_seqs=opts.noise_seqs, seed=opts.seed)
        correct, count = (r["correct_all"], r["count_all"]) if paper else (r["correct"], r["count"])
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(count > 0, correct / np.maximum(count, 1), np.nan)
        sets[split] = dict(acc=_r(acc), count=count.tolist(), n_seqs=opts.noise_seqs)
    if paper:  # the notebook averages over its tasks, half i.d. and half o.o.d.: the two sets' mean
        a, b = (np.array(sets[x]["acc"], dtype=float) for x in splits)
        sets["mean"] = dict(acc=_r((a + b) / 2), count=(np.array(sets[splits[0]]["count"]) +
                                                     np.array(sets[splits[1]]["count"])).tolist(),
                            n_seqs=2 * opts.noise_seqs)
        index = ("[k][j]: k examples before the query, j wrong z among all k + 1 points, the query's own included "
                 "(label_noise.ipynb), j ≤ k; test inputs; 'mean': i.d. and o.o.d. averaged")
    else:
        index = "[k][j]: k clean-or-noisy examples before the query, j of them with a wrong z (j < k); train inputs"
    return dict(protocol=opts.noise_protocol, index=index, chance=1.0 / s.p, sets=sets), {}


RUNNERS: dict[str, Callable[[Subject, Setting, Options], Result]] = dict(
    kshot=run_kshot, grid=run_grid, attention=run_attention, embedding=run_embedding, heads=run_heads,
    cosine=run_cosine, noise=run_noise)


def checkpoint_note(subject: Subject) -> dict[str, Any]:
    """Which weights: the file, its step, and for best.pt the set that chose it (the analyses then measure the
    o.o.d. test set on weights selected on it)."""
    name = Path(subject.checkpoint).name
    note = ""
    if name == runfolder.BEST:
        note = (f"{runfolder.BEST}: the step with the highest o.o.d. test accuracy, chosen on that set, so o.o.d. test numbers "
                "of these weights are biased upward; {runfolder.LAST} is the unselected end of training")
    return dict(file=name, step=subject.step, chosen_by="o.o.d. test accuracy" if name == runfolder.BEST else None,
                note=note)


def _write(out: Path, name: str, data: dict[str, Any], arrays: dict[str, np.ndarray]) -> list[Path]:
    written = []
    if arrays:
        tmp = out / f".{name}.tmp.npz"
        np.savez_compressed(tmp, **arrays)
        tmp.replace(out / f"{name}.npz")
        written.append(out / f"{name}.npz")
    atomic_write_text(json.dumps(data, separators=(",", ":")) + "\n", out / f"{name}.json")
    return [out / f"{name}.json", *written]


def analyze(subject: Subject, opts: Options, out: str | Path | None = None,
            log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run the chosen analyses, write NAME.json (+ NAME.npz) and NAME.png under `out` (default the subject's
    analysis folder) and index.json; returns the index."""
    from . import checks
    checks.check_out(out)
    what = resolve(subject, opts)
    check_options(subject, opts)
    checks.check_fits(subject)
    out = Path(out) if out is not None else subject.out_dir
    if opts.figures:
        from ..sweep.plot import PlotUnavailable, pyplot
        try:
            pyplot()  # matplotlib missing: say so before any compute
        except PlotUnavailable as e:
            raise PlotUnavailable(f"{e}; or pass --no-figures for the numbers alone") from None
    out.mkdir(parents=True, exist_ok=True)
    st = setting(subject, opts)
    ckpt = checkpoint_note(subject)
    index: dict[str, Any] = dict(source=subject.source, checkpoint=subject.checkpoint, step=subject.step,
                                 weights=ckpt, p=subject.p, config=subject.cfg.to_flat(), setting=st.as_json(),
                                 analyses={})
    for name in what:
        t0 = time.perf_counter()
        data, arrays = RUNNERS[name](subject, st, opts)
        data = dict(weights=ckpt, **data)  # every output says which weights (and what chose them)
        files = _write(out, name, data, arrays)
        if opts.figures:
            from .figures import draw
            files.append(draw(name, data, out / f"{name}.png", arrays))
        seconds = time.perf_counter() - t0
        index["analyses"][name] = dict(seconds=round(seconds, 3), files=[f.name for f in files])
        log(f"{name:10s} {seconds:6.1f} s  {', '.join(f.name for f in files)}")
    atomic_write_text(json.dumps(index, indent=1) + "\n", out / "index.json")
    return index
