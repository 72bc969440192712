"""Task vectors, the o.o.d. set and the α split of input points: pure functions of data_seed.

A task is w ∈ Z_p^n with z = (w · x) mod p (SPEC "Tasks"). Vectors and points are indexed in
base p, most significant coordinate first: index(w) = Σ_j w_j · p^(n-1-j).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .config import TaskConfig

# Independent random streams per purpose, all keyed by data_seed.
_STREAM_TASKS, _STREAM_OOD, _STREAM_SPLIT = 0, 1, 2
_MAX_TRIES_PER_SEED = 10_000


@dataclass(frozen=True)
class Tasks:
    """The task sets and input split of one config (LongTensors on the CPU)."""

    p: int
    pretrain: Tensor      # (n_pretrain, n_var) pre-training task vectors
    ood: Tensor           # (n_ood, n_var) o.o.d. task vectors, shuffled, at most max_ood
    train_inputs: Tensor  # (round(α·p^n), n_var) input points
    test_inputs: Tensor   # (p^n − round(α·p^n), n_var) input points

    def to(self, device: torch.device | str) -> "Tasks":
        return Tasks(self.p, *(t.to(device) for t in (self.pretrain, self.ood, self.train_inputs, self.test_inputs)))


def _rng(data_seed: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([data_seed, stream])))


def index_to_vectors(idx: np.ndarray, p: int, n_var: int) -> np.ndarray:
    """Base-p digits (most significant first): (N,) → (N, n_var)."""
    powers = p ** np.arange(n_var - 1, -1, -1, dtype=np.int64)
    return (np.asarray(idx, dtype=np.int64)[:, None] // powers) % p


def vectors_to_index(vec: np.ndarray, p: int) -> np.ndarray:
    vec = np.asarray(vec, dtype=np.int64)
    powers = p ** np.arange(vec.shape[-1] - 1, -1, -1, dtype=np.int64)
    return (vec * powers).sum(-1)


def parallelogram_tasks(p: int, n_pl: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """n_pl random (a, b), each grown to a parallelogram (a, y), (x, b), (x, y): 4·n_pl tasks."""
    if 4 * n_pl > p * p:
        raise ValueError(f"n_pl={n_pl} needs {4 * n_pl} tasks but p={p} has only {p * p}")
    seeds = [tuple(int(v) for v in w) for w in index_to_vectors(rng.choice(p * p, n_pl, replace=False), p, 2)]
    chosen = list(seeds)
    taken = set(chosen)
    for a, b in seeds:
        for _ in range(_MAX_TRIES_PER_SEED):
            xs = [i for i in range(p) if i not in (a, b)]
            x = xs[rng.integers(len(xs))]
            ys = [i for i in range(p) if i not in (a, b, x)]
            y = ys[rng.integers(len(ys))]
            new = [(a, y), (x, b), (x, y)]
            if not any(w in taken for w in new):
                chosen += new
                taken.update(new)
                break
        else:
            raise ValueError(
                f"parallelogram construction failed: no free parallelogram for seed task {(a, b)} after "
                f"{_MAX_TRIES_PER_SEED} tries; n_pl={n_pl} is too many for p={p} (use fewer, or a larger p)")
    return chosen


def make_tasks(cfg: TaskConfig) -> Tasks:
    """Pre-training tasks, o.o.d. tasks and the α split, all determined by cfg.data_seed."""
    if not isinstance(cfg, TaskConfig):
        hint = ": pass cfg.task" if type(cfg).__name__ == "Config" else ""
        raise TypeError(f"make_tasks takes a TaskConfig{hint}, got {type(cfg).__name__} {cfg!r:.60}")
    p, n = cfg.p, cfg.n_var
    n_all = p**n
    rng = _rng(cfg.data_seed, _STREAM_TASKS)
    if cfg.selection == "parallelogram":
        pre = vectors_to_index(np.array(parallelogram_tasks(p, cfg.n_pl, rng), dtype=np.int64), p)
    else:
        pre = rng.choice(n_all, cfg.n_id, replace=False).astype(np.int64)
    if cfg.n_rd:
        free = np.setdiff1d(np.arange(n_all, dtype=np.int64), pre)
        if cfg.n_rd > len(free) - 1:
            raise ValueError(f"n_rd={cfg.n_rd} random extras leave no o.o.d. task ({len(free)} tasks are free)")
        pre = np.concatenate([pre, rng.choice(free, cfg.n_rd, replace=False)])
    ood = np.setdiff1d(np.arange(n_all, dtype=np.int64), pre)
    ood = ood[_rng(cfg.data_seed, _STREAM_OOD).permutation(len(ood))][: cfg.max_ood]
    points = _rng(cfg.data_seed, _STREAM_SPLIT).permutation(n_all)
    n_train = round(cfg.alpha * n_all)

    def vec(idx: np.ndarray) -> Tensor:
        return torch.from_numpy(index_to_vectors(idx, p, n))

    return Tasks(p=p, pretrain=vec(pre), ood=vec(ood), train_inputs=vec(points[:n_train]),
                 test_inputs=vec(points[n_train:]))
