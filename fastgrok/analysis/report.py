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

from ..checkpoint import atomic_write_text
from ..sets import ANALYSES, SPLITS
from . import algorithms as alg
from . import probe
from .source import Subject

NEEDS_PLANE = ("grid", "heads", "cosine")  # over all (x, y) ∈ Z_p²: n_var = 2 only
NOISE_SPLITS = ("train", "ood_train")       # i.d. and o.o.d. tasks, on the inputs the run trained on


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

    def __post_init__(self) -> None:
        from .checks import check_option_types
        check_option_types(self)


def resolve(subject: Subject, opts: Options) -> tuple[str, ...]:
    """The analyses to run, checked against the model; ValueError naming what does not fit."""
    n_var = subject.cfg.task.n_var
    if not opts.what:
        return tuple(a for a in ANALYSES if n_var == 2 or a not in NEEDS_PLANE)
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

    def as_json(self) -> dict[str, Any]:
        return dict(task=list(self.task), task_kind=self.kind, shots=len(self.context),
                    context=self.context.tolist(), layer=self.layer, head=self.head)


def setting(subject: Subject, opts: Options) -> Setting:
    if opts.task is not None:
        task = probe.check_task(opts.task, subject.p)
        kind = task_kind(subject, task)
    else:
        task, kind = default_task(subject) if subject.cfg.task.n_var == 2 else ((0, 0), "none")
    K = subject.cfg.task.n_shots - 1 if opts.shots is None else opts.shots
    context = fixed_context(subject, task, K, opts.seed) if subject.cfg.task.n_var == 2 else np.zeros((0, 3), np.int64)
    return Setting(task, kind, context, opts.layer or 0, opts.head or 0)


# ---- the analyses -----------------------------------------------------------------------------------
Result = tuple[dict[str, Any], dict[str, np.ndarray]]  # (the JSON, arrays for the .npz)


def run_kshot(s: Subject, st: Setting, opts: Options) -> Result:
    sets = {}
    for split in SPLITS:
        c = probe.kshot_curve(s.model, s.cfg, s.tasks, split, half_width=opts.half_width, max_seqs=opts.kshot_max_seqs)
        sets[split] = dict(acc=_r(c.acc), lo=_r(c.lo), hi=_r(c.hi), n_seqs=c.n_seqs,
                           half_width=float(np.round((c.hi - c.lo).max() / 2, 6)),
                           tasks=[list(map(int, w)) for w in c.task_vecs], task_n=c.task_n.tolist(),
                           task_acc=_r(c.task_acc))
    return dict(chance=1.0 / s.p, interval="95% Wilson", target_half_width=opts.half_width, sets=sets), {}


def grid_shares(model_ok: np.ndarray, rm: np.ndarray, mr: np.ndarray) -> dict[str, list[float]]:
    """Per k, over the p² queries: the model's accuracy, each algorithm's coverage, the share where the
    model's right/wrong agrees with it, and the share of the model's right answers it explains."""
    K = len(model_ok)
    flat = lambda a: a.reshape(K, -1)  # noqa: E731
    m, r, g = flat(model_ok), flat(rm), flat(mr)
    right = np.maximum(m.sum(1), 1)
    return dict(model_acc=_r(m.mean(1)), rm_coverage=_r(r.mean(1)), mr_coverage=_r(g.mean(1)),
                rm_agreement=_r((m == r).mean(1)), mr_agreement=_r((m == g).mean(1)),
                rm_explains=_r((m & r).sum(1) / right), mr_explains=_r((m & g).sum(1) / right))


def run_grid(s: Subject, st: Setting, opts: Options) -> Result:
    p, ctx = s.p, st.context
    t0 = time.perf_counter()
    model_ok = probe.kshot_grid(s.model, st.task, ctx, p)  # (K, p, p)
    seconds = time.perf_counter() - t0
    rm = np.stack([alg.ratio_matching(ctx[:k], p) for k in range(1, len(ctx) + 1)])
    mr = np.stack([alg.modular_regression(ctx[:k], p) for k in range(1, len(ctx) + 1)])
    ranks = [alg.span_rank(ctx[:k], p) for k in range(1, len(ctx) + 1)]
    data = dict(**st.as_json(), p=p, seconds=round(seconds, 3), span_rank=ranks, **grid_shares(model_ok, rm, mr),
                model=model_ok.astype(int).tolist(), ratio_matching=rm.astype(int).tolist(),
                modular_regression=mr.astype(int).tolist())
    return data, {}


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
    return dict(p=p, primitive_root=g, numbers=list(range(p)), logs=logs.tolist(), pcs=_r(coords),
                explained=_r(share)), {}


def _head_setting(s: Subject, st: Setting) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """The head and block features over Z_p² after the context, computed once for heads and cosine."""
    if st.features is None:
        st.features = probe.head_features(s.model, st.context, s.p)
    return st.features, probe.all_queries(s.p)


def run_heads(s: Subject, st: Setting, opts: Options) -> Result:
    feats, queries = _head_setting(s, st)
    heads, blocks = feats["heads"].numpy(), feats["blocks"].numpy()  # (L, H, p², 2, C), (L, p², 2, C)
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
    return dict(**st.as_json(), p=s.p, primitive_root=g, logs=alg.discrete_logs(s.p, g).tolist(),
                queries=queries.tolist(), head_pcs=_r(pcs), head_explained=_r(share), block_pcs=_r(bpcs),
                block_explained=_r(bshare)), {}


MAX_COSINE_ROWS = 4096  # p² above this (p > 64): the matrices over the queries with x, y < 64 only


def run_cosine(s: Subject, st: Setting, opts: Options) -> Result:
    feats, queries = _head_setting(s, st)
    heads, blocks = feats["heads"].numpy(), feats["blocks"].numpy()
    if len(queries) > MAX_COSINE_ROWS:  # (p², p²) matrices per head would not fit: a corner of Z_p²
        m = int(MAX_COSINE_ROWS**0.5)
        keep = (queries[:, 0] < m) & (queries[:, 1] < m)
        queries, heads, blocks = queries[keep], heads[:, :, keep], blocks[:, keep]
    L, H = heads.shape[:2]
    # at the y token, where a head sees the whole varied example (x, y), as the paper's "y" panels
    hc = np.stack([np.stack([alg.cosine_matrix(heads[i, h, :, 1]) for h in range(H)]) for i in range(L)])
    bc = np.stack([alg.cosine_matrix(blocks[i, :, 1]) for i in range(L)])
    summary = dict(head_mean_abs=_r(np.abs(hc).mean((-1, -2))), block_mean_abs=_r(np.abs(bc).mean((-1, -2))))
    return dict(**st.as_json(), p=s.p, token="y", queries=queries.tolist(), arrays="cosine.npz",
                **summary), {"heads": hc.astype(np.float16), "blocks": bc.astype(np.float16)}


def run_noise(s: Subject, st: Setting, opts: Options) -> Result:
    sets = {}
    for split in NOISE_SPLITS:
        r = probe.label_noise(s.model, s.cfg, s.tasks, split, n_seqs=opts.noise_seqs, seed=opts.seed)
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(r["count"] > 0, r["correct"] / np.maximum(r["count"], 1), np.nan)
        sets[split] = dict(acc=_r(acc), count=r["count"].tolist(), n_seqs=opts.noise_seqs)
    return dict(index="[k][j]: k clean-or-noisy examples before the query, j of them with a wrong z (j < k)",
                chance=1.0 / s.p, sets=sets), {}


RUNNERS: dict[str, Callable[[Subject, Setting, Options], Result]] = dict(
    kshot=run_kshot, grid=run_grid, attention=run_attention, embedding=run_embedding, heads=run_heads,
    cosine=run_cosine, noise=run_noise)


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
    index: dict[str, Any] = dict(source=subject.source, checkpoint=subject.checkpoint, step=subject.step,
                                 p=subject.p, config=subject.cfg.to_flat(), setting=st.as_json(), analyses={})
    for name in what:
        t0 = time.perf_counter()
        data, arrays = RUNNERS[name](subject, st, opts)
        files = _write(out, name, data, arrays)
        if opts.figures:
            from .figures import draw
            files.append(draw(name, data, out / f"{name}.png", arrays))
        seconds = time.perf_counter() - t0
        index["analyses"][name] = dict(seconds=round(seconds, 3), files=[f.name for f in files])
        log(f"{name:10s} {seconds:6.1f} s  {', '.join(f.name for f in files)}")
    atomic_write_text(json.dumps(index, indent=1) + "\n", out / "index.json")
    return index
