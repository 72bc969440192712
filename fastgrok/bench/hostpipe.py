"""A host-side input pipeline like the paper's loader: the baseline that on-device batches replace.

At start-up every example is materialised on the host: for each evaluation set (train, i.d. test,
o.o.d. train, o.o.d. test) the token tensor of all task × input equations, (n_tasks, N, n_var + 1)
int64 on the CPU. A torch DataLoader then yields training batch k: its dataset maps row r to task
r mod n_tasks (the rotation of fastgrok.data), and its collate step samples each row's n_shots
points with a host generator keyed by (seed, k) and gathers their equations. Each batch is copied
to the device, and `host_train_step` waits for the loss on the host every step, as a loop that logs
every step does. The model, loss and optimiser are those of fastgrok.train (same Session); only
the batches differ: equally distributed, not bit-identical to the on-device ones.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import Config
from ..data import SPLITS, BatchSource
from ..tasks import Tasks
from ..trainer import Session, train_step


def materialise(task_vecs: Tensor, inputs: Tensor, p: int) -> Tensor:
    """Every equation of every task: (n_tasks, N, n_var + 1) int64 rows [x…, z], z = (w · x) mod p."""
    n, N = task_vecs.shape[0], inputs.shape[0]
    z = (task_vecs[:, None, :] * inputs[None, :, :]).sum(-1) % p  # (n, N)
    return torch.cat([inputs[None].expand(n, N, -1), z[..., None]], dim=-1)  # (n, N, n_var + 1)


def _set_tensors(tasks: Tasks, split: str) -> tuple[Tensor, Tensor]:
    task_vecs = tasks.pretrain if split in ("train", "id_test") else tasks.ood
    inputs = tasks.train_inputs if split in ("train", "ood_train") else tasks.test_inputs
    return task_vecs, inputs


def host_tokens(tasks: Tasks) -> int:
    """Tokens the pipeline materialises: all four sets."""
    total = 0
    for split in SPLITS:
        task_vecs, inputs = _set_tensors(tasks, split)
        total += task_vecs.shape[0] * inputs.shape[0] * (inputs.shape[1] + 1)
    return total


class _RowTasks(Dataset):
    """Row r of the training stream → (r, its task r mod n_tasks)."""

    def __init__(self, n_tasks: int) -> None:
        self.n_tasks = n_tasks

    def __getitem__(self, r: int) -> tuple[int, int]:
        return r, r % self.n_tasks


class _StepBatches(Sampler):
    """Batch k holds rows k·B … k·B + B − 1, for k = start, start + 1, … (endless)."""

    def __init__(self, batch_size: int, start: int = 0) -> None:
        self.batch_size, self.start = batch_size, start

    def __iter__(self) -> Iterator[list[int]]:
        k = self.start
        while True:
            yield list(range(k * self.batch_size, (k + 1) * self.batch_size))
            k += 1


class HostPipeline:
    """Materialised equations plus a DataLoader over the training set; `batchgen` has the registry's
    batchgen signature (the source and step are ignored: the loader's next batch is returned)."""

    def __init__(self, cfg: Config, tasks: Tasks, device: torch.device | str, *, num_workers: int = 0,
                 start: int = 0, batch_size: int | None = None) -> None:
        self.device = torch.device(device)
        self.batch_size, self.n_shots = batch_size or cfg.train.batch_size, cfg.task.n_shots
        self.sampling, self.seed = cfg.task.sampling, cfg.train.seed
        self.equations = {s: materialise(*_set_tensors(tasks, s), cfg.task.p) for s in SPLITS}
        self.n_tasks = self.equations["train"].shape[0]
        self.loader = DataLoader(_RowTasks(self.n_tasks), batch_sampler=_StepBatches(self.batch_size, start),
                                 collate_fn=self.collate, num_workers=num_workers,
                                 pin_memory=self.device.type == "cuda")
        self._it = iter(self.loader)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.equations.values())

    def collate(self, items: list[tuple[int, int]]) -> Tensor:
        """Sample one batch on the host from its (row, task) items: (B, (n_var + 1)·S) int64."""
        eq = self.equations["train"]  # (n_tasks, N, n_var + 1)
        B, S, N = len(items), self.n_shots, eq.shape[1]
        tasks = torch.tensor([t for _, t in items], dtype=torch.int64)  # (B,)
        step = items[0][0] // self.batch_size
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + step) % 2**63)  # worker-independent
        if self.sampling == "distinct":
            points = torch.rand(B, N, generator=g).argsort(dim=1)[:, :S]  # (B, S) without replacement
        elif self.sampling == "paper":
            slots = math.ceil(B / self.n_tasks)
            points = torch.randint(N, (slots, S), generator=g)[torch.arange(B) // self.n_tasks]  # (B, S) shared
        else:
            points = torch.randint(N, (B, S), generator=g)  # (B, S)
        return eq[tasks[:, None], points].reshape(B, -1)  # (B, S, n_var + 1) → (B, S·(n_var + 1))

    def batchgen(self, src: BatchSource | None = None, step: int | Tensor | None = None) -> Tensor:
        """The loader's next batch, copied to the device."""
        return next(self._it).to(self.device, non_blocking=True)


def attach(sess: Session, pipe: HostPipeline) -> Session:
    """The same session (model, optimiser, tasks) with training batches from the host pipeline."""
    ops = dataclasses.replace(sess.ops, batchgen=pipe.batchgen,
                              names=tuple((op, "host" if op == "batchgen" else b) for op, b in sess.ops.names))
    return dataclasses.replace(sess, ops=ops)


def host_train_step(sess: Session, step: int) -> float:
    """One optimiser step on the host pipeline's next batch; waits for the loss (a host sync)."""
    return train_step(sess, step).item()
