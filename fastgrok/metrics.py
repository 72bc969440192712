"""Loss and accuracy on the z positions: per shot, per task, last shot, and the phase of a run.

SPEC "Measurements": for each of the four sets, loss and accuracy averaged over all shots and at
the last shot, per task and averaged over tasks, and the k-shot curve (accuracy at each shot).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .sets import MIXED, PHASE_OF, SPLITS


def z_slices(n_var: int) -> tuple[slice, slice]:
    """(positions whose output predicts a z, positions of the z targets) in a full sequence."""
    L = n_var + 1
    return slice(n_var - 1, None, L), slice(n_var, None, L)


def z_logits_targets(model: torch.nn.Module, batch: Tensor, n_var: int) -> tuple[Tensor, Tensor]:
    """Logits (B, S, V) at the z positions and the z targets (B, S); the model reads batch[:, :-1]."""
    pred_pos, tgt_pos = z_slices(n_var)
    return model(batch[:, :-1], positions=pred_pos), batch[:, tgt_pos]


def z_loss(model: torch.nn.Module, batch: Tensor, n_var: int) -> Tensor:
    """Mean cross-entropy over the z positions of a batch (fp32 softmax)."""
    logits, targets = z_logits_targets(model, batch, n_var)
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


class SetAccumulator:
    """Sums per (task, shot) on the device over evaluation batches; one host sync in `result`."""

    def __init__(self, n_tasks: int, n_shots: int, device: torch.device) -> None:
        self.loss = torch.zeros(n_tasks, n_shots, dtype=torch.float64, device=device)
        self.correct = torch.zeros(n_tasks, n_shots, dtype=torch.float64, device=device)
        self.count = torch.zeros(n_tasks, dtype=torch.float64, device=device)

    def add(self, logits: Tensor, targets: Tensor, row_tasks: Tensor) -> None:
        """logits (B, S, V), targets (B, S), row_tasks (B,) task index of each row."""
        loss = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # (B, S)
        correct = (logits.argmax(-1) == targets).double()  # (B, S)
        self.loss.index_add_(0, row_tasks, loss.double())
        self.correct.index_add_(0, row_tasks, correct)
        self.count.index_add_(0, row_tasks, torch.ones_like(row_tasks, dtype=torch.float64))

    def result(self) -> dict[str, Any]:
        return summarize(self.loss.cpu(), self.correct.cpu(), self.count.cpu())


def summarize(loss: Tensor, correct: Tensor, count: Tensor) -> dict[str, Any]:
    """Metrics from per-(task, shot) sums of loss and correctness and per-task sequence counts."""
    seen = count > 0
    n = count[seen].sum().item()
    if n == 0:
        raise ValueError("no evaluation sequence was drawn for this set")
    S = loss.shape[1]
    task_acc = correct.sum(1) / (count * S)  # (n_tasks,) NaN where unseen
    task_acc_last = correct[:, -1] / count
    return {
        "loss": loss[seen].sum().item() / (n * S),
        "acc": correct[seen].sum().item() / (n * S),
        "loss_last": loss[seen, -1].sum().item() / n,
        "acc_last": correct[seen, -1].sum().item() / n,
        "task_mean_acc": task_acc[seen].mean().item(),
        "task_mean_acc_last": task_acc_last[seen].mean().item(),
        "kshot": (correct[seen].sum(0) / n).tolist(),
        "task_acc": [None if math.isnan(a) else a for a in task_acc.tolist()],
        "task_acc_last": [None if math.isnan(a) else a for a in task_acc_last.tolist()],
        "n_seqs": int(n),
    }


def classify_phase(sets: dict[str, dict[str, Any]], threshold: float) -> tuple[str, dict[str, bool]]:
    """Phase from which sets are solved (last-shot accuracy ≥ threshold), in SPEC's order."""
    solved = {name: sets[name]["acc_last"] >= threshold for name in SPLITS}
    return PHASE_OF.get(tuple(solved[s] for s in SPLITS), MIXED), solved
