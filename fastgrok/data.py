"""Batches on the device: token ids drawn from Philox(seed, counter), no host round trip.

Batch `step` of a source is a pure function of (source, step) (SPEC "Sequences and batches"):
- row r (0 ≤ r < B) holds task (step·B + r) mod n_tasks: every task gets ⌊B/n⌋ or ⌈B/n⌉ rows,
  and over consecutive steps the tasks take turns exactly;
- "iid": shot s of row r is input point u mod N, u = philox(key, (step·B + r)·S + s);
- "paper": as iid, with the row index replaced by its slot r // n_tasks, so every task's j-th
  sequence in a batch shares the same inputs in the same order (the paper loader's quirk);
- "distinct": row r draws u_q = philox(key, (step·B + r)·N + q) for every point q and takes
  the S points with the smallest (u_q, q), in that order: a uniform ordered sample without
  replacement;
- z = (w · x) mod p; a sequence is [x_0, y_0, z_0, x_1, …] ((n_var + 1)·S tokens).
A Triton kernel that consumes the same counters reproduces these batches bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor

from .config import Config
from .envinfo import check_device
from .philox import philox_u32
from .sets import SPLITS
from .tasks import Tasks

_STREAM = {"train_batches": 0, **{s: i + 1 for i, s in enumerate(SPLITS)}}  # Philox stream of each
Step = Union[int, Tensor]


@dataclass(frozen=True, eq=False)
class BatchSource:
    """Everything one stream of batches needs, with its tensors on the target device."""

    task_vecs: Tensor   # (n_tasks, n_var) int64
    inputs: Tensor      # (N, n_var) int64 allowed input points
    p: int
    batch_size: int
    n_shots: int
    sampling: str       # "iid" | "distinct" | "paper"
    key: int            # Philox key

    @property
    def n_tasks(self) -> int:
        return self.task_vecs.shape[0]

    @property
    def seq_len(self) -> int:
        return (self.task_vecs.shape[1] + 1) * self.n_shots

    def row_tasks(self, step: Step) -> Tensor:
        """Task index of each row of batch `step`: (B,) int64."""
        rows = torch.arange(self.batch_size, device=self.task_vecs.device)
        return (step * self.batch_size + rows) % self.n_tasks


def philox_key(seed: int, stream: int) -> int:
    """Distinct Philox keys for every (seed, stream)."""
    if not 0 <= seed < 2**60:
        raise ValueError(f"seed={seed} must lie in [0, 2^60)")
    return seed * 8 + stream


def check_tasks(cfg: Config, tasks: Tasks) -> None:
    """`tasks` were built from cfg.task (make_tasks(cfg.task)): otherwise batches hold foreign tokens."""
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a Config, got {type(cfg).__name__}")
    if not isinstance(tasks, Tasks):
        raise TypeError(f"tasks must be the Tasks of make_tasks(cfg.task), got {type(tasks).__name__}")
    t = cfg.task
    found = (tasks.p, tasks.pretrain.shape[-1], tasks.pretrain.shape[0], tasks.train_inputs.shape[0])
    want = (t.p, t.n_var, t.n_pretrain, round(t.alpha * t.p**t.n_var))
    if found != want:
        raise ValueError(f"tasks were built for another config (p={found[0]}, n_var={found[1]}, {found[2]} "
                         f"pre-training tasks, {found[3]} train inputs; this config has p={want[0]}, n_var={want[1]}, "
                         f"{want[2]}, {want[3]}): build them with make_tasks(cfg.task)")


def check_step(step: Step, src: BatchSource) -> None:
    """A batch number is an int in [0, max] (Philox counters are int64) or an integer device tensor."""
    if isinstance(step, Tensor):
        if step.dtype.is_floating_point or step.dtype.is_complex or step.numel() != 1:
            raise TypeError(f"step must be an int or a one-element integer tensor, got {step.dtype} {tuple(step.shape)}")
        return
    per_step = src.batch_size * max(src.n_shots, src.inputs.shape[0] if src.sampling == "distinct" else 0)
    top = (2**63 - 1) // per_step - 1
    if not isinstance(step, int) or isinstance(step, bool):
        raise TypeError(f"step must be an int batch number, got {type(step).__name__} {step!r:.40}")
    if not 0 <= step <= top:
        raise ValueError(f"step={step} must lie in [0, {top}] (Philox counters are int64)")


def split_source(cfg: Config, tasks: Tasks, split: str, device: torch.device | str, *,
                 training: bool = False, batch_size: int | None = None) -> BatchSource:
    """The batch source of one evaluation set, or (training=True, split="train") the training stream."""
    check_tasks(cfg, tasks)
    device = check_device(device)
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {', '.join(map(repr, SPLITS))}")
    if training and split != "train":
        raise ValueError(f"training batches come from the 'train' split, not {split!r}")
    task_vecs = tasks.pretrain if split in ("train", "id_test") else tasks.ood
    inputs = tasks.train_inputs if split in ("train", "ood_train") else tasks.test_inputs
    key = philox_key(cfg.train.seed, _STREAM["train_batches"]) if training else philox_key(cfg.task.data_seed, _STREAM[split])
    return BatchSource(task_vecs=task_vecs.to(device), inputs=inputs.to(device), p=cfg.task.p,
                       batch_size=batch_size or cfg.train.batch_size, n_shots=cfg.task.n_shots,
                       sampling=cfg.task.sampling, key=key)


def point_indices(src: BatchSource, step: Step) -> Tensor:
    """Index into src.inputs of every example of batch `step`: (B, S) int64."""
    B, S, N = src.batch_size, src.n_shots, src.inputs.shape[0]
    dev = src.inputs.device
    rows = torch.arange(B, device=dev)
    if src.sampling == "distinct":
        offs = (step * B + rows)[:, None] * N + torch.arange(N, device=dev)  # (B, N)
        keys = philox_u32(src.key, offs)
        return torch.sort(keys, dim=1, stable=True).indices[:, :S]  # (B, S): ties → lower index
    if src.sampling == "paper":
        rows = rows // src.n_tasks  # slot: the j-th sequence of every task
    offs = (step * B + rows)[:, None] * S + torch.arange(S, device=dev)  # (B, S)
    return philox_u32(src.key, offs) % N


def generate_batch(src: BatchSource, step: Step) -> Tensor:
    """Reference batch generator: token ids (B, (n_var + 1)·S) int64 on src's device."""
    B, S = src.batch_size, src.n_shots
    x = src.inputs[point_indices(src, step)]  # (B, S, n_var)
    w = src.task_vecs[src.row_tasks(step)]  # (B, n_var)
    z = (x * w[:, None, :]).sum(-1, keepdim=True) % src.p  # (B, S, 1)
    return torch.cat([x, z], dim=-1).reshape(B, -1)  # (B, S·(n_var+1))


def sample_batch(cfg: Config, tasks: Tasks, step: Step, split: str = "train",
                 device: torch.device | str = "cpu") -> Tensor:
    """Batch `step` of a split: for "train" the training batch of that step (keyed by cfg.seed), for the
    other splits evaluation batch number `step` (keyed by cfg.data_seed). LongTensor (B, (n_var+1)·n_shots)."""
    src = split_source(cfg, tasks, split, device, training=(split == "train"))
    check_step(step, src)
    return generate_batch(src, step)


def eval_batch(cfg: Config, tasks: Tasks, index: int, split: str, device: torch.device | str = "cpu") -> Tensor:
    """Evaluation batch `index` of a split (the "train" split included), keyed by cfg.data_seed."""
    src = split_source(cfg, tasks, split, device)
    check_step(index, src)
    return generate_batch(src, index)
