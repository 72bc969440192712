import numpy as np
import pytest
import torch

from fastgrok import Config, make_tasks
from fastgrok.tasks import index_to_vectors, vectors_to_index


def _set(t: torch.Tensor) -> set[tuple[int, ...]]:
    return {tuple(r) for r in t.tolist()}


@pytest.mark.parametrize("p, n_pl", [(29, 2), (29, 32), (29, 128), (7, 4), (11, 20)])
def test_parallelogram_structure(p, n_pl):
    tasks = make_tasks(Config.preset("paper", p=p, n_pl=n_pl, batch_size=4 * n_pl).task)
    pre = tasks.pretrain.tolist()
    assert len(pre) == 4 * n_pl == len(_set(tasks.pretrain)), "tasks must be distinct"
    assert tasks.pretrain.min() >= 0 and tasks.pretrain.max() < p
    seeds, grown = pre[:n_pl], pre[n_pl:]
    for i, (a, b) in enumerate(seeds):  # seed i grew into the three tasks (a, y), (x, b), (x, y)
        (a2, y), (x, b2), (x2, y2) = grown[3 * i: 3 * i + 3]
        assert (a2, b2, x2, y2) == (a, b, x, y)
        assert x not in (a, b) and y not in (a, b, x)


def test_random_selection_and_extras():
    cfg = Config.preset("paper", selection="random", n_id=100, n_rd=0).task
    t = make_tasks(cfg)
    assert len(_set(t.pretrain)) == 100
    t2 = make_tasks(Config.preset("paper", n_pl=8, n_rd=5).task)
    assert len(_set(t2.pretrain)) == 37


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_split_and_ood_partition(alpha):
    p = 29
    t = make_tasks(Config.preset("paper", n_pl=16, alpha=alpha).task)
    train, test = _set(t.train_inputs), _set(t.test_inputs)
    assert len(train) == round(alpha * p * p) and len(train) + len(test) == p * p and not train & test
    ood = _set(t.ood)
    assert len(ood) == min(256, p * p - 64) and not ood & _set(t.pretrain)
    assert len(_set(make_tasks(Config.preset("paper", n_pl=16, max_ood=1000).task).ood)) == p * p - 64


def test_pure_function_of_data_seed():
    a = make_tasks(Config.preset("paper", n_pl=16, data_seed=4, seed=1).task)
    b = make_tasks(Config.preset("paper", n_pl=16, data_seed=4, seed=99).task)
    c = make_tasks(Config.preset("paper", n_pl=16, data_seed=5).task)
    for name in ("pretrain", "ood", "train_inputs", "test_inputs"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.pretrain, c.pretrain) and not torch.equal(a.train_inputs, c.train_inputs)


def test_index_round_trip():
    idx = np.arange(29**3)
    assert np.array_equal(vectors_to_index(index_to_vectors(idx, 29, 3), 29), idx)


def test_impossible_parallelogram_is_a_clear_error():
    with pytest.raises(ValueError, match="parallelogram construction failed|too many"):
        make_tasks(Config.preset("paper", p=5, n_pl=6, batch_size=1024).task)
