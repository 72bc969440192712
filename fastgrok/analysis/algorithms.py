"""The arithmetic behind the interpretability study: primitive roots, discrete logs, the two in-context
algorithms of the paper's Figure 5, PCA and cosine similarity. numpy only, any odd prime p.

Figure 5 of He et al. (2024, arXiv 2406.02550) compares a model's answers at every query (x, y) ∈ Z_p²,
after k examples (x_i, y_i, z_i) of one task, with two algorithms:
- ratio matching: a query that is a multiple c·(x_i, y_i) of one example is answered c·z_i;
- modular regression: a query in the Z_p-span of the examples is answered Σ c_i·z_i.
Each returns the (p, p) mask of queries it answers right, assuming the examples' z are right.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n**0.5) + 1))


def check_prime(p: int) -> int:
    """p itself, or ValueError: the analyses work in the field Z_p, p an odd prime."""
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)):
        raise TypeError(f"p must be an int, got {type(p).__name__} {p!r:.40}")
    if p < 3 or not is_prime(int(p)):
        raise ValueError(f"p={p} is not an odd prime: the analyses (spans, ratios, discrete logs) work in the field Z_p")
    return int(p)


def _prime_factors(n: int) -> list[int]:
    out, d = [], 2
    while d * d <= n:
        if n % d == 0:
            out.append(d)
            while n % d == 0:
                n //= d
        d += 1
    return out + ([n] if n > 1 else [])


def primitive_root(p: int) -> int:
    """The smallest generator g of Z_p^× (order p − 1): computed, never a table."""
    p = check_prime(p)
    factors = _prime_factors(p - 1)
    for g in range(2, p):
        if all(pow(g, (p - 1) // q, p) != 1 for q in factors):
            return g
    raise AssertionError(f"no primitive root found for prime {p}")  # pragma: no cover  (every prime has one)


def discrete_logs(p: int, g: int | None = None) -> np.ndarray:
    """log_g(n) for n = 0 … p−1, shape (p,); −1 at n = 0, which has none."""
    p = check_prime(p)
    g = primitive_root(p) if g is None else int(g)
    logs = np.full(p, -1, dtype=np.int64)
    v = 1
    for e in range(p - 1):
        if logs[v] != -1:
            raise ValueError(f"g={g} is not a primitive root mod {p} (its order is {e})")
        logs[v] = e
        v = v * g % p
    return logs


def check_examples(examples: np.ndarray | list, p: int) -> np.ndarray:
    """examples as an int64 array (k, 3) of (x, y, z) in Z_p, or ValueError naming what is wrong."""
    arr = np.asarray(examples)
    if arr.size == 0:
        arr = arr.reshape(0, 3)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"examples must be an array (k, 3) of x, y, z, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"examples must be integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= p):
        raise ValueError(f"examples must lie in Z_{p} (0 … {p - 1}), got values in [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64)


def ratio_matching(examples: np.ndarray | list, p: int) -> np.ndarray:
    """(p, p) bool: query (x, y) is c·(x_i, y_i) mod p for some c ∈ Z_p and some example i.

    (0, 0) is always covered (c = 0). Each non-zero example covers its line through the origin."""
    p = check_prime(p)
    ex = check_examples(examples, p)
    out = np.zeros((p, p), dtype=bool)
    out[0, 0] = True
    c = np.arange(p)[:, None]  # (p, 1)
    for x, y, _ in ex:
        out[(c * x) % p, (c * y) % p] = True
    return out


def span_rank(examples: np.ndarray | list, p: int) -> int:
    """Rank over Z_p of the examples' (x_i, y_i): 0, 1 or 2."""
    p = check_prime(p)
    pts = check_examples(examples, p)[:, :2]
    nonzero = pts[(pts != 0).any(1)]
    if len(nonzero) == 0:
        return 0
    x0, y0 = nonzero[0]
    det = (x0 * nonzero[:, 1] - y0 * nonzero[:, 0]) % p  # (n,): 0 where collinear with the first
    return 2 if det.any() else 1


def modular_regression(examples: np.ndarray | list, p: int) -> np.ndarray:
    """(p, p) bool: query (x, y) lies in the Z_p-span of the examples' (x_i, y_i).

    The span of points in Z_p² is {0}, a line through the origin, or all of Z_p² (rank 0, 1, 2)."""
    p = check_prime(p)
    ex = check_examples(examples, p)
    rank = span_rank(ex, p)
    if rank == 2:
        return np.ones((p, p), dtype=bool)
    if rank == 1:  # one line: the multiples of any non-zero example
        return ratio_matching(ex, p)
    out = np.zeros((p, p), dtype=bool)
    out[0, 0] = True
    return out


def pca(features: np.ndarray, n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(coordinates (N, n) on the top n principal directions of the centred rows, explained-variance shares (n,)).

    The sign of each direction is fixed (its largest entry positive), so the same features always draw alike."""
    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"features must be (N, C), got shape {X.shape}")
    X = X - X.mean(0, keepdims=True)
    _, s, vt = np.linalg.svd(X, full_matrices=False)  # vt (r, C)
    n = min(n, vt.shape[0])
    vt = vt[:n]
    signs = np.sign(vt[np.arange(n), np.abs(vt).argmax(1)])
    vt = vt * np.where(signs == 0, 1, signs)[:, None]
    total = (s**2).sum()
    share = (s[:n] ** 2) / total if total > 0 else np.zeros(n)
    return X @ vt.T, share


def cosine_matrix(features: np.ndarray) -> np.ndarray:
    """(N, N) cosine similarities of the rows after the paper's normalisation: each row scaled to unit norm,
    standardised over its features, and scaled to unit norm again (cosine_similarity.py in its repository)."""
    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] < 2:
        raise ValueError(f"features must be (N, C) with C ≥ 2, got shape {X.shape}")
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    X = (X - X.mean(1, keepdims=True)) / (X.std(1, ddof=1, keepdims=True) + 1e-8)
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    return X @ X.T


def centred_cosine_matrix(features: np.ndarray) -> np.ndarray:
    """(N, N) cosine similarities of the rows after subtracting their mean row: the part of each feature that
    varies with the query. The paper's normalisation keeps the component every row shares, which can
    dominate (all similarities near +1); this one removes it."""
    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] < 2:
        raise ValueError(f"features must be (N, C) with C ≥ 2, got shape {X.shape}")
    X = X - X.mean(0, keepdims=True)
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    return X @ X.T


def shared_over_spread(features: np.ndarray) -> float:
    """Norm of the rows' mean over the RMS norm of their deviations from it: ≫ 1 when one component shared by
    every query dominates the features (the paper's cosine then saturates near +1)."""
    X = np.asarray(features, dtype=np.float64)
    mean = X.mean(0)
    spread = np.sqrt(((X - mean) ** 2).sum(1).mean())
    return float(np.linalg.norm(mean) / spread) if spread > 0 else float("inf")


def wilson_interval(correct: np.ndarray, n: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """95 % Wilson score interval (lo, hi) of a proportion correct/n, elementwise; (0, 1) where n = 0."""
    correct, n = np.asarray(correct, dtype=np.float64), np.asarray(n, dtype=np.float64)
    safe = np.maximum(n, 1)
    phat = correct / safe
    denom = 1 + z * z / safe
    centre = (phat + z * z / (2 * safe)) / denom
    half = z * np.sqrt(phat * (1 - phat) / safe + z * z / (4 * safe * safe)) / denom
    lo, hi = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    return np.where(n > 0, lo, 0.0), np.where(n > 0, hi, 1.0)


# ---- Figure 5's decomposition: strata of the queries that an algorithm can fail on ---------------------
# Modular regression answers every query in the span of the examples, and two independent examples span all
# of Z_p²: "covered by modular regression" is true by construction from k = 2 on. What can tell the two
# algorithms apart is where the model is right: on the examples' own lines (ratio matching suffices) or off
# them (it must combine two or more examples). Each query gets exactly one stratum, the first that fits:
STRATA = ("in_context", "ratio", "combination_simple", "combination_general", "outside_span")
STRATUM_HELP = dict(
    in_context="the query's (x, y) is an example's input (off-distribution for sampling = distinct)",
    ratio="c·(x_i, y_i) of one example, not in context ((0, 0) here): ratio matching answers it",
    combination_simple="±(x_i, y_i) ± (x_j, y_j) of two examples, on no example's line",
    combination_general="c_i·(x_i, y_i) + c_j·(x_j, y_j) otherwise: in the span, on no line, not ±v_i ± v_j",
    outside_span="outside the examples' span: no algorithm can know its answer",
)
GROUPS = dict(combination=("combination_simple", "combination_general"))  # needs ≥ 2 examples


def strata(examples: np.ndarray | list, p: int) -> np.ndarray:
    """(p, p) int: the index in STRATA of every query (x, y) after these examples (their z unused)."""
    p = check_prime(p)
    ex = check_examples(examples, p)
    pts = ex[:, :2]
    ctx = np.zeros((p, p), dtype=bool)
    ctx[pts[:, 0], pts[:, 1]] = True
    line = ratio_matching(ex, p)
    span = modular_regression(ex, p)
    simple = np.zeros((p, p), dtype=bool)
    if len(pts) >= 2:
        i, j = np.triu_indices(len(pts), 1)
        for si in (1, -1):
            for sj in (1, -1):
                q = (si * pts[i] + sj * pts[j]) % p  # (pairs, 2)
                simple[q[:, 0], q[:, 1]] = True
    out = np.full((p, p), STRATA.index("outside_span"), dtype=np.int64)
    out[span] = STRATA.index("combination_general")
    out[span & simple] = STRATA.index("combination_simple")
    out[line] = STRATA.index("ratio")
    out[ctx] = STRATA.index("in_context")
    return out


def scaled_example_answers(examples: np.ndarray | list, p: int) -> np.ndarray:
    """(p, p, p) bool: hit[x, y, v] is whether v = c·z_i for an example i scaled to meet the query on one
    coordinate (c = x / x_i with x_i ≠ 0, or c = y / y_i with y_i ≠ 0): what ratio matching would answer had it
    taken an example whose line misses the query, "a wrong multiple". Includes the right answer where it is one."""
    p = check_prime(p)
    ex = check_examples(examples, p)
    hit = np.zeros((p, p, p), dtype=bool)
    g = np.arange(p)
    X, Y = np.meshgrid(g, g, indexing="ij")  # (p, p)
    for xi, yi, zi in ex:
        if xi:
            hit[X, Y, (X * pow(int(xi), -1, p) * zi) % p] = True
        if yi:
            hit[X, Y, (Y * pow(int(yi), -1, p) * zi) % p] = True
    return hit


def decompose(preds: np.ndarray, examples: np.ndarray | list, task: tuple[int, int], p: int) -> dict[str, Any]:
    """The decomposition of a k-shot grid: preds (K, p, p) the model's answer z at every query after the first
    k = 1 … K examples. Per k and stratum (STRATA, and the group "combination"): n queries, right, accuracy
    and its 95 % Wilson interval; of the wrong answers, how many are a scaled example's answer
    (scaled_example_answers) and how many a uniform wrong guess would make so (`wrong_scaled_chance`).
    Returns lists over k, and "strata" (K, p, p) the stratum of every query."""
    p = check_prime(p)
    ex = check_examples(examples, p)
    preds = np.asarray(preds)
    K = len(ex)
    if preds.shape != (K, p, p):
        raise ValueError(f"preds must be (K, p, p) = ({K}, {p}, {p}), got {preds.shape}")
    a, b = task
    g = np.arange(p)
    want = (a * g[:, None] + b * g[None, :]) % p  # (p, p)
    names = STRATA + tuple(GROUPS)
    rows = {n: dict(n=[], right=[], wrong_scaled=[], wrong_scaled_chance=[]) for n in names}
    codes = np.zeros((K, p, p), dtype=np.int64)
    for k in range(1, K + 1):
        st = strata(ex[:k], p)
        codes[k - 1] = st
        right = preds[k - 1] == want
        hit = scaled_example_answers(ex[:k], p)  # (p, p, p)
        said = np.take_along_axis(hit, preds[k - 1][..., None].astype(np.int64) % p, 2)[..., 0]
        hit[g[:, None], g[None, :], want] = False  # the wrong values that are a scaled example's answer
        chance = hit.sum(-1) / (p - 1)  # (p, p): the share of the p − 1 wrong values that would count
        for n in names:
            mask = np.isin(st, [STRATA.index(s) for s in GROUPS.get(n, (n,))])
            wrong = mask & ~right
            rows[n]["n"].append(int(mask.sum()))
            rows[n]["right"].append(int((mask & right).sum()))
            rows[n]["wrong_scaled"].append(int((wrong & said).sum()))
            rows[n]["wrong_scaled_chance"].append(float(chance[wrong].sum()))
    for r in rows.values():
        n, right = np.array(r["n"]), np.array(r["right"])
        lo, hi = wilson_interval(right, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            r["acc"] = np.where(n > 0, right / np.maximum(n, 1), np.nan)
        r["lo"], r["hi"] = lo, hi
    return dict(rows=rows, strata=codes)


def bootstrap_task_mean(task_acc: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """95 % percentile interval (lo, hi) of the mean over tasks of per-task accuracies (n_tasks, S), resampling
    tasks with replacement: the task-to-task spread, which pooled sequences' binomial intervals do not show.
    Tasks never drawn (NaN) are left out; NaN where none is left."""
    acc = np.asarray(task_acc, dtype=np.float64)
    acc = acc[~np.isnan(acc).any(1)] if acc.ndim == 2 else acc.reshape(0, 1)
    S = acc.shape[1] if acc.ndim == 2 else 0
    if len(acc) == 0:
        return np.full(S, np.nan), np.full(S, np.nan)
    rng = np.random.default_rng(seed)
    means = acc[rng.integers(0, len(acc), (n_boot, len(acc)))].mean(1)  # (n_boot, S)
    return np.percentile(means, 2.5, axis=0), np.percentile(means, 97.5, axis=0)
