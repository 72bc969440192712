import math

import pytest
import torch

from fastgrok.metrics import SetAccumulator, classify_phase, z_slices


def _onehot_logits(pred: torch.Tensor, V: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(pred, V).float() * 100.0  # (B, S, V): confident predictions


def test_hand_built_accuracies_and_kshot():
    # 2 tasks, 3 shots, vocab 5; rows: task 0, task 1, task 0
    targets = torch.tensor([[1, 2, 3], [0, 0, 0], [4, 4, 4]])
    pred = torch.tensor([[1, 0, 3], [0, 0, 1], [0, 4, 4]])  # correct: [1,0,1], [1,1,0], [0,1,1]
    acc = SetAccumulator(2, 3, torch.device("cpu"))
    acc.add(_onehot_logits(pred, 5), targets, torch.tensor([0, 1, 0]))
    r = acc.result()
    assert r["acc"] == pytest.approx(6 / 9)
    assert r["acc_last"] == pytest.approx(2 / 3)
    assert r["kshot"] == pytest.approx([2 / 3, 2 / 3, 2 / 3])
    assert r["task_acc"] == pytest.approx([4 / 6, 2 / 3])
    assert r["task_acc_last"] == pytest.approx([1.0, 0.0])
    assert r["task_mean_acc"] == pytest.approx(2 / 3)
    assert r["task_mean_acc_last"] == pytest.approx(0.5)
    assert r["n_seqs"] == 3
    assert r["loss"] > 0 and r["loss"] == pytest.approx(3 * 100.0 / 9, rel=1e-3)  # wrong ones cost ≈ 100 nats


def test_uniform_logits_loss_is_log_vocab_and_unseen_task_is_none():
    acc = SetAccumulator(3, 4, torch.device("cpu"))
    acc.add(torch.zeros(2, 4, 7), torch.randint(0, 7, (2, 4)), torch.tensor([0, 2]))
    r = acc.result()
    assert r["loss"] == pytest.approx(math.log(7))
    assert r["task_acc"][1] is None


def test_z_slices():
    pred, tgt = z_slices(2)
    seq = list(range(96))
    assert seq[:-1][pred] == [1 + 3 * i for i in range(32)]
    assert seq[tgt] == [2 + 3 * i for i in range(32)]
    pred, tgt = z_slices(3)
    assert seq[:-1][pred][:2] == [2, 6] and seq[tgt][:2] == [3, 7]


@pytest.mark.parametrize("accs, phase", [
    ((0.99, 0.1, 0.1, 0.1), "id_memorization"),
    ((0.99, 0.95, 0.2, 0.1), "id_generalization"),
    ((0.99, 0.95, 0.92, 0.3), "ood_memorization"),
    ((0.99, 0.95, 0.92, 0.91), "ood_generalization"),
    ((0.1, 0.1, 0.1, 0.1), "not_learned"),
    ((0.1, 0.95, 0.1, 0.1), "mixed"),
])
def test_phase_classification(accs, phase):
    sets = {name: {"acc_last": a} for name, a in zip(("train", "id_test", "ood_train", "ood_test"), accs)}
    assert classify_phase(sets, 0.9)[0] == phase
    assert classify_phase(sets, 0.999)[0] in ("not_learned", "mixed")
