"""The arithmetic behind the interpretability study: primitive roots, discrete logs, the two in-context
algorithms of the paper's Figure 5, PCA and cosine similarity. numpy only, any odd prime p.

Figure 5 of He et al. (2024, arXiv 2406.02550) compares a model's answers at every query (x, y) ∈ Z_p²,
after k examples (x_i, y_i, z_i) of one task, with two algorithms:
- ratio matching: a query that is a multiple c·(x_i, y_i) of one example is answered c·z_i;
- modular regression: a query in the Z_p-span of the examples is answered Σ c_i·z_i.
Each returns the (p, p) mask of queries it answers right, assuming the examples' z are right.
"""
from __future__ import annotations

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
