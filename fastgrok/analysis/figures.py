"""The figures of `fastgrok analyze`, each drawn only from its analysis' JSON (and .npz): a notebook that loads
NAME.json can call `draw(NAME, data, path)` and get the same picture. matplotlib (the `plot` extra) is
imported on first use, as by the sweep's figures (fastgrok.sweep.plot's pyplot and save_png).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..sets import SPLITS
from ..sweep.plot import pyplot, save_png

SET_TITLES = dict(zip(SPLITS, ("i.d. train", "i.d. test", "o.o.d. train", "o.o.d. test")))
SET_COLORS = dict(zip(SPLITS, ("#1f77b4", "#2ca02c", "#ff7f0e", "#d62728")))


def _a(x: Any) -> np.ndarray:
    """A JSON list (None for NaN) as a float array."""
    return np.array(x, dtype=object).astype(float) if x is not None else np.array([])


def _task_title(d: dict[str, Any]) -> str:
    a, b = d["task"]
    kind = {"id": "pre-training", "ood": "o.o.d."}.get(d.get("task_kind"), "")
    return f"task (a, b) = ({a}, {b}) {kind}, z = {a}x + {b}y mod {d.get('p', '')}".rstrip()


def draw_kshot(d: dict[str, Any], path: Path, arrays: dict[str, np.ndarray]) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.5), sharex=True, sharey=True, constrained_layout=True)
    for ax, split in zip(axes.flat, SPLITS):
        s = d["sets"][split]
        acc, lo, hi = _a(s["acc"]), _a(s["lo"]), _a(s["hi"])
        shots = np.arange(len(acc))
        for row in s["task_acc"]:
            ax.plot(shots, _a(row), color=SET_COLORS[split], alpha=0.12, lw=0.8)
        if "task_lo" in s:  # the task-to-task spread: a bootstrap over tasks
            ax.fill_between(shots, _a(s["task_lo"]), _a(s["task_hi"]), color=SET_COLORS[split], alpha=0.15, lw=0,
                            label="95% of the mean over tasks (bootstrap over tasks)")
        ax.fill_between(shots, lo, hi, color=SET_COLORS[split], alpha=0.4, lw=0, label="95% Wilson, pooled sequences")
        ax.plot(shots, acc, color=SET_COLORS[split], lw=2, marker="o", ms=3, label="accuracy")
        ax.axhline(d["chance"], color="grey", ls=":", lw=1, label=f"chance 1/p = {d['chance']:.3f}")
        ax.set_title(f"{SET_TITLES[split]} ({len(s['tasks'])} tasks, {s['n_seqs']} seqs, ±{100 * s['half_width']:.1f} "
                     "pts)", fontsize=10)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("shot (examples before it)")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("in-context accuracy per shot (thin: each task; dark band: pooled sequences' binomial 95%; light: "
                 "task-to-task 95%)", fontsize=10)
    return _save(fig, path, d)


def _save(fig: Any, path: Path, d: dict[str, Any]) -> Path:
    """save_png, with a line under the title naming the weights (and, for best.pt, the set that chose them)."""
    w = d.get("weights") or {}
    if w.get("file"):
        step = f" at step {w['step']}" if w.get("step") is not None else ""
        chosen = f", chosen on {w['chosen_by']}: those numbers are biased upward" if w.get("chosen_by") else ""
        line = f"weights: {w['file']}{step}{chosen}"
        title = fig._suptitle
        if title is not None:
            title.set_text(f"{title.get_text()}\n{line}")
            if chosen:
                title.set_color("#b22222")
        else:
            fig.suptitle(line, fontsize=8, color="#b22222" if chosen else "k")
    return save_png(fig, path)


def _pick_ks(K: int, n: int = 6) -> list[int]:
    return sorted({int(round(v)) for v in np.linspace(1, K, min(n, K))})


STRATUM_COLORS = dict(in_context="#7f7f7f", ratio="#1f77b4", combination_simple="#2ca02c",
                      combination_general="#9467bd", outside_span="#d9d9d9", combination="#ff7f0e")
STRATUM_LABELS = dict(in_context="in context", ratio="ratio: c·v_i", combination_simple="±v_i ± v_j",
                      combination_general="c_i·v_i + c_j·v_j", outside_span="outside the span",
                      combination="combination (both)")


def _strata_axes(ax, rows: dict[str, Any], names, chance: float, title: str, pooled: bool = False) -> None:
    """Accuracy per stratum against k, each with its 95 % Wilson band; the chance line labelled; the legend
    outside the axes (it never hides a curve)."""
    for name in names:
        r = rows[name]
        n = np.array(r["n"])
        acc, lo, hi = (np.where(n > 0, _a(r[key]), np.nan) for key in ("acc", "lo", "hi"))  # no band where n = 0
        k = np.arange(1, len(acc) + 1)
        c = STRATUM_COLORS[name]
        ax.fill_between(k, lo, hi, color=c, alpha=0.15, lw=0)
        label = f"{STRATUM_LABELS[name]} (n {n.min()}–{n.max()})" if n.min() != n.max() else \
            f"{STRATUM_LABELS[name]} (n {n.min()})"
        ax.plot(k, acc, color=c, marker="o", ms=3, lw=1.6, label=label, ls="--" if name == "combination" else "-")
        if pooled and "task_min" in r:
            ax.plot(k, _a(r["task_min"]), color=c, lw=0.6, alpha=0.6)
            ax.plot(k, _a(r["task_max"]), color=c, lw=0.6, alpha=0.6)
    ax.axhline(chance, color="k", ls=":", lw=1, label=f"chance 1/p = {chance:.3f}")
    ax.set_xlabel("k, examples in context")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("accuracy in the stratum")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def draw_grid(d: dict[str, Any], path: Path, arrays: dict[str, np.ndarray]) -> Path:
    plt = pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch
    names = list(d["strata_names"])
    model, codes = np.array(d["model"], dtype=bool), np.array(d["strata"])
    preds = np.array(d["preds"])
    K, p = len(model), d["p"]
    ks = _pick_ks(K)
    pooled = d.get("all_tasks", {}).get("pooled", {})
    plot_names = [n for n in names if n != "outside_span"] + ["combination"]
    n_top = 1 + len(pooled)
    fig = plt.figure(figsize=(max(2.0 * len(ks) + 1, 5.5 * n_top + 2), 4.2 + 4.6), constrained_layout=True)
    sub = fig.subfigures(2, 1, height_ratios=[4.2, 4.6])
    top = sub[0].subplots(1, n_top, squeeze=False)[0]
    _strata_axes(top[0], d["rows"], plot_names, d["chance"], f"{_task_title(d)}\n{d['argmax']}")
    for ax, (kind, rows) in zip(top[1:], pooled.items()):
        n_tasks = sum(1 for k in d["all_tasks"]["kinds"] if k == kind)
        _strata_axes(ax, rows, plot_names, d["chance"], f"all {n_tasks} {'pre-training' if kind == 'id' else 'o.o.d.'} "
                     "tasks pooled (thin: the lowest and highest task)", pooled=True)
    axes = sub[1].subplots(2, len(ks), squeeze=False)
    cats = ListedColormap([STRATUM_COLORS[n] for n in names])
    answer = ListedColormap(["#d73027", "#fdae61", "#1a1a1a"])  # wrong, wrong but a scaled example's answer, right
    ctx = np.array(d["context"])
    from .algorithms import scaled_example_answers
    for c, kk in enumerate(ks):
        hit = scaled_example_answers(ctx[:kk], p)
        said = np.take_along_axis(hit, preds[kk - 1][..., None] % p, 2)[..., 0]
        verdict = np.where(model[kk - 1], 2, np.where(said, 1, 0))
        for r, (img, cmap, n) in enumerate(((codes[kk - 1], cats, len(names)), (verdict, answer, 3))):
            ax = axes[r, c]
            ax.imshow(img.T, origin="lower", cmap=cmap, vmin=-0.5, vmax=n - 0.5, interpolation="nearest")
            ax.scatter(ctx[:kk, 0], ctx[:kk, 1], s=14, facecolors="none", edgecolors="#00bfff", marker="s", lw=1.2)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"k = {kk}", fontsize=9)
            if c == 0:
                ax.set_ylabel(("stratum", "model's answer")[r], fontsize=8)
    keys = [Patch(color=STRATUM_COLORS[n], label=STRATUM_LABELS[n]) for n in names] + \
        [Patch(color=col, label=lab)
         for col, lab in zip(answer.colors[::-1], ("right", "wrong: a scaled example's answer", "wrong, other"))]
    sub[1].legend(handles=keys, loc="outside lower center", ncol=4, fontsize=7, frameon=False)
    sub[1].suptitle("queries (x →, y ↑); squares: the context's inputs", fontsize=8)
    return _save(fig, path, d)


def draw_attention(d: dict[str, Any], path: Path, arrays: dict[str, np.ndarray]) -> Path:
    plt = pyplot()
    att = _a(d["attention"])  # (L, H, T, T)
    L, H, T, _ = att.shape
    labels = d["labels"]
    fig, axes = plt.subplots(L, H, figsize=(3.2 * H, 3.2 * L), squeeze=False, constrained_layout=True)
    step = 1 if T <= 36 else 3
    ticks = np.arange(0 if step == 1 else 2, T, step)
    for i in range(L):
        for h in range(H):
            ax = axes[i, h]
            m = np.where(np.tril(np.ones((T, T), bool)), att[i, h], np.nan)
            im = ax.imshow(m, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"layer {i}, head {h}", fontsize=9)
            ax.set_xticks(ticks, [labels[t] for t in ticks], fontsize=5, rotation=90)
            ax.set_yticks(ticks, [labels[t] for t in ticks], fontsize=5)
    fig.colorbar(im, ax=axes, shrink=0.6, label="attention probability")
    fig.suptitle(f"attention probabilities (row: query token, column: key); {_task_title(d)}", fontsize=10)
    return _save(fig, path, d)


def draw_embedding(d: dict[str, Any], path: Path, arrays: dict[str, np.ndarray]) -> Path:
    plt = pyplot()
    pcs, share, logs = _a(d["pcs"]), _a(d["explained"]), d["logs"]
    pairs = [(0, 1), (2, 3)] if pcs.shape[1] >= 4 else [(0, 1)]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 5), squeeze=False, constrained_layout=True)
    colors = ["#7f7f7f" if lg < 0 else ("#1f77b4" if lg % 2 == 0 else "#d62728") for lg in logs]
    for ax, (i, j) in zip(axes[0], pairs):
        ax.scatter(pcs[:, i], pcs[:, j], c=colors, s=25)
        for n, lg in enumerate(logs):
            ax.annotate(f"{n} ({lg if lg >= 0 else '–'})", (pcs[n, i], pcs[n, j]), fontsize=7, color=colors[n],
                        xytext=(3, 3), textcoords="offset points")
        base = _a(d["explained_random"]) if "explained_random" in d else None
        rand = (lambda c: f", random {100 * base[c]:.0f}%") if base is not None else (lambda c: "")
        ax.set_xlabel(f"PC{i + 1} ({100 * share[i]:.0f}% of the variance{rand(i)})")
        ax.set_ylabel(f"PC{j + 1} ({100 * share[j]:.0f}%{rand(j)})")
        ax.grid(alpha=0.3)
    warn = f"\n{d['warning']}" if d.get("warning") else ""
    fig.suptitle(f"token embeddings of 0 … {d['p'] - 1}, labelled n (log_{d['primitive_root']} n); "
                 f"blue: even log, red: odd; random: the same PCA of random vectors{warn}", fontsize=9)
    return _save(fig, path, d)


def draw_heads(d: dict[str, Any], path: Path, arrays: dict[str, np.ndarray]) -> Path:
    plt = pyplot()
    pcs, bpcs = _a(d["head_pcs"]), _a(d["block_pcs"])  # (L, H, p², 2), (L, p², 2)
    L, H = pcs.shape[:2]
    q = np.array(d["queries"])
    logs = np.array(d["logs"])
    p = d["p"]
    fig, axes = plt.subplots(L + 1, H + 1, figsize=(2.8 * (H + 1), 2.8 * (L + 1)), squeeze=False,
                             constrained_layout=True)
    for i in range(L):
        for h in range(H + 1):
            ax = axes[i, h]
            xy = pcs[i, h] if h < H else bpcs[i]
            sh = _a(d["head_explained"])[i, h] if h < H else _a(d["block_explained"])[i]
            sc = ax.scatter(xy[:, 0], xy[:, 1], c=q[:, 0], cmap="hsv", vmin=0, vmax=p, s=6)
            ax.set_title(f"layer {i}, " + (f"head {h}" if h < H else "block output"), fontsize=8)
            ax.set_xlabel(f"PC1 ({100 * sh[0]:.0f}%)", fontsize=7)
            ax.set_ylabel(f"PC2 ({100 * sh[1]:.0f}%)", fontsize=7)
            ax.tick_params(labelsize=5)
    li, hi = d["layer"], d["head"]
    big = pcs[li, hi]
    colourings = (("x", q[:, 0], p), ("y", q[:, 1], p), (f"log_{d['primitive_root']} x", logs[q[:, 0]], p - 1))
    for c, (name, values, top) in enumerate(colourings):
        ax = axes[L, c]
        has = values >= 0  # log 0 does not exist: those points in black
        ax.scatter(big[~has, 0], big[~has, 1], c="k", s=8)
        sc2 = ax.scatter(big[has, 0], big[has, 1], c=values[has], cmap="hsv", vmin=0, vmax=top, s=8)
        ax.set_title(f"layer {li}, head {hi}: colour = {name}", fontsize=8)
        ax.set_xlabel("PC1", fontsize=7)
        ax.set_ylabel("PC2", fontsize=7)
        ax.tick_params(labelsize=5)
        fig.colorbar(sc2, ax=ax, shrink=0.8, label=name)
    for c in range(len(colourings), H + 1):
        axes[L, c].axis("off")
    fig.colorbar(sc, ax=axes[:L], shrink=0.5, label="x (colour of every panel above)")
    fig.suptitle(f"head outputs at the (x, y) tokens of one example varied over Z_{p}², after {d['shots']} fixed "
                 f"examples, PCA to 2-D (colour: x; black: x = 0 in the log panel); {_task_title(d)}"
                 + (f"\n{d['warning']}" if d.get("warning") else ""), fontsize=9)
    return _save(fig, path, d)


def _x_block_ticks(ax, queries: np.ndarray) -> None:
    """Ticks at the start of each x block (rows are x major): where x changes, labelled x = …"""
    xs = queries[:, 0]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    every = max(1, int(np.ceil(len(starts) / 8)))
    pos = starts[::every]
    ax.set_xticks(pos, [f"x={xs[i]}" for i in pos], fontsize=5, rotation=90)
    ax.set_yticks(pos, [f"x={xs[i]}" for i in pos], fontsize=5)


def draw_cosine(d: dict[str, Any], path: Path, arrays: dict[str, np.ndarray]) -> Path:
    plt = pyplot()
    if not arrays:
        with np.load(path.with_name(d["arrays"])) as z:
            arrays = {k: z[k] for k in z.files}
    hc, bc = arrays["heads"].astype(np.float32), arrays["blocks"].astype(np.float32)
    queries = np.array(d["queries"])
    tokens, norms = d.get("tokens", ["y"]), d.get("norms", ["paper"])
    if hc.ndim == 4:  # an older cosine.json: y token, the paper's normalisation only
        hc, bc = hc[:, :, None, None], bc[:, None, None]
    L, H = hc.shape[:2]
    # per layer: the paper's y panel, then the centred x, y and z panels
    panels = [(tokens.index("y"), norms.index("paper"))] + \
        [(t, norms.index("centred")) for t in range(len(tokens)) if "centred" in norms]
    ratio_h = np.array(d.get("head_shared_over_spread") or np.full((L, H, len(tokens)), np.nan), dtype=float)
    ratio_b = np.array(d.get("block_shared_over_spread") or np.full((L, len(tokens)), np.nan), dtype=float)
    rows = [(i, t, n) for i in range(L) for t, n in panels]
    fig, axes = plt.subplots(len(rows), H + 1, figsize=(2.6 * (H + 1), 2.6 * len(rows)), squeeze=False,
                             constrained_layout=True)
    for r, (i, t, n) in enumerate(rows):
        for h in range(H + 1):
            ax = axes[r, h]
            im = ax.imshow(hc[i, h, t, n] if h < H else bc[i, t, n], cmap="coolwarm", vmin=-1, vmax=1,
                           origin="lower", interpolation="nearest")
            ratio = ratio_h[i, h, t] if h < H else ratio_b[i, t]
            ax.set_title(f"layer {i}, " + (f"head {h}" if h < H else "block") + f": {tokens[t]}, {norms[n]}"
                         + (f"\nshared/spread {ratio:.1f}" if np.isfinite(ratio) else ""), fontsize=7)
            _x_block_ticks(ax, queries)
    fig.colorbar(im, ax=axes, shrink=0.3, label="cosine similarity")
    fig.suptitle(f"cosine similarity of features at the x, y, z tokens over (x, y) ∈ Z_{d['p']}² (rows and columns: "
                 f"the queries, x major); {_task_title(d)}\n'paper': its normalisation; 'centred': the mean over "
                 "queries removed (shared/spread ≫ 1 saturates the paper's near +1)", fontsize=8)
    return _save(fig, path, d)


def draw_noise(d: dict[str, Any], path: Path, arrays: dict[str, np.ndarray]) -> Path:
    plt = pyplot()
    sets = d["sets"]
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4.5), squeeze=False, constrained_layout=True)
    for ax, (split, s) in zip(axes[0], sets.items()):
        acc = _a(s["acc"])  # (S, S) [k][j]
        S = len(acc)
        im = ax.imshow(acc[1:].T, origin="lower", cmap="magma", vmin=0, vmax=1, aspect="auto",
                       extent=(0.5, S - 0.5, -0.5, S - 0.5), interpolation="nearest")
        ax.set_xlabel("k, examples before the query")
        paper = d.get("protocol") == "paper"
        ax.set_ylabel("j wrong z among all k + 1 points" if paper else "j of them with a wrong z")
        title = {"mean": "i.d. and o.o.d. test averaged"}.get(split, f"{SET_TITLES.get(split, split)} tasks")
        ax.set_title(f"{title} ({s['n_seqs']} seqs)", fontsize=10)
    fig.colorbar(im, ax=axes, shrink=0.8, label="accuracy at the query")
    how = ("the paper's protocol (label_noise.ipynb): j of all the sequence's points, test inputs"
           if d.get("protocol") == "paper" else "j of the k examples before the query, train inputs")
    fig.suptitle(f"label noise (chance {d['chance']:.2f}): {how}", fontsize=10)
    return _save(fig, path, d)


DRAW: dict[str, Callable[[dict[str, Any], Path, dict[str, np.ndarray]], Path]] = dict(
    kshot=draw_kshot, grid=draw_grid, attention=draw_attention, embedding=draw_embedding, heads=draw_heads,
    cosine=draw_cosine, noise=draw_noise)


def draw(name: str, data: dict[str, Any], path: str | Path, arrays: dict[str, np.ndarray] | None = None) -> Path:
    """The figure of analysis `name` from its JSON data (and .npz arrays), written to `path`."""
    if name not in DRAW:
        raise ValueError(f"no figure for {name!r}; figures: {', '.join(DRAW)}")
    return DRAW[name](data, Path(path), arrays or {})
