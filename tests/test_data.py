import math

import numpy as np
import pytest
import torch

from fastgrok import Config, eval_batch, make_tasks, sample_batch
from fastgrok.data import SPLITS, generate_batch, split_source


def _cfg(**kw):
    base = dict(n_pl=8, batch_size=96, n_shots=16)
    return Config.preset("paper", **{**base, **kw})


def _rows(batch, n_var):
    L = n_var + 1
    return batch.view(batch.shape[0], -1, L)  # (B, S, n_var + 1)


@pytest.mark.parametrize("sampling", ["iid", "distinct", "paper"])
@pytest.mark.parametrize("split", SPLITS)
def test_z_correct_and_only_allowed_inputs(sampling, split):
    cfg = _cfg(sampling=sampling)
    tasks = make_tasks(cfg.task)
    src = split_source(cfg, tasks, split, "cpu")
    batch = generate_batch(src, 3)
    assert batch.shape == (96, 48) and batch.dtype == torch.int64
    ex = _rows(batch, 2)
    x, z = ex[..., :2], ex[..., 2]
    w = src.task_vecs[src.row_tasks(3)]  # (B, 2)
    assert torch.equal(z, (x * w[:, None]).sum(-1) % 29)
    allowed = {tuple(r) for r in src.inputs.tolist()}
    assert all(tuple(r) in allowed for r in x.reshape(-1, 2).tolist())
    # each row's z is consistent with exactly its task: recover w from the row where possible
    if sampling == "distinct":
        assert all(len({tuple(e) for e in row}) == 16 for row in x.tolist())


def test_balance_exact_and_rotates():
    cfg = _cfg(n_pl=10, batch_size=96)  # 40 tasks, 96 rows: 16 tasks get 3 rows, 24 get 2
    tasks = make_tasks(cfg.task)
    src = split_source(cfg, tasks, "train", "cpu", training=True)
    counts = torch.bincount(src.row_tasks(0), minlength=40)
    assert sorted(counts.tolist()) == [2] * 24 + [3] * 16
    total = sum(torch.bincount(src.row_tasks(s), minlength=40) for s in range(5))  # 480 rows = 12 per task
    assert total.tolist() == [12] * 40
    cfg = _cfg(n_pl=8, batch_size=96)
    src = split_source(cfg, make_tasks(cfg.task), "train", "cpu", training=True)
    assert torch.bincount(src.row_tasks(7), minlength=32).tolist() == [3] * 32


@pytest.mark.parametrize("sampling", ["iid", "distinct"])
def test_uniform_over_allowed_inputs_chi_square(sampling):
    cfg = _cfg(sampling=sampling, batch_size=256, n_shots=32, alpha=0.5)
    tasks = make_tasks(cfg.task)
    src = split_source(cfg, tasks, "id_test", "cpu")
    N = src.inputs.shape[0]
    idx = torch.cat([_point_ids(src, s) for s in range(8)])
    counts = np.bincount(idx.numpy(), minlength=N)
    expected = idx.numel() / N
    chi2 = ((counts - expected) ** 2 / expected).sum()
    dof = N - 1
    # 5-sigma bound on a chi-square with dof degrees of freedom (normal approximation)
    assert chi2 < dof + 5 * math.sqrt(2 * dof), (chi2, dof)
    assert chi2 > dof - 5 * math.sqrt(2 * dof)


def _point_ids(src, step):
    """Which allowed input each example of batch `step` used, recovered from its tokens."""
    batch = generate_batch(src, step)
    x = _rows(batch, 2)[..., :2].reshape(-1, 2)
    lookup = {tuple(r): i for i, r in enumerate(src.inputs.tolist())}
    return torch.tensor([lookup[tuple(r)] for r in x.tolist()])


def test_deterministic_in_seed_and_step():
    cfg = _cfg()
    tasks = make_tasks(cfg.task)
    a = sample_batch(cfg, tasks, 5)
    assert torch.equal(a, sample_batch(cfg, tasks, 5))
    assert torch.equal(a, sample_batch(cfg, tasks, torch.tensor(5)))
    assert not torch.equal(a, sample_batch(cfg, tasks, 6))
    other = cfg.override(seed=2)
    assert not torch.equal(a, sample_batch(other, tasks, 5))
    # evaluation batches depend on data_seed, not the training seed
    assert torch.equal(eval_batch(cfg, tasks, 0, "ood_test"), eval_batch(other, tasks, 0, "ood_test"))
    assert not torch.equal(eval_batch(cfg, tasks, 0, "train"), sample_batch(cfg, tasks, 0, "train"))


def test_paper_mode_shares_inputs_across_tasks():
    cfg = _cfg(sampling="paper", n_pl=8, batch_size=96)  # 32 tasks, 3 slots
    tasks = make_tasks(cfg.task)
    batch = sample_batch(cfg, tasks, 2)
    x = _rows(batch, 2)[..., :2]  # (B, S, 2)
    for slot in range(3):
        rows = x[slot * 32:(slot + 1) * 32]
        assert (rows == rows[0]).all()
    assert not torch.equal(x[0], x[32])
    iid = sample_batch(cfg.override(sampling="iid"), tasks, 2)
    assert not (_rows(iid, 2)[:32, :, :2] == _rows(iid, 2)[0, :, :2]).all()


def test_n_var_3_sequences():
    cfg = Config.preset("paper", selection="random", n_id=64, n_var=3, n_shots=8, batch_size=64)
    tasks = make_tasks(cfg.task)
    batch = sample_batch(cfg, tasks, 0)
    assert batch.shape == (64, 32)
    ex = _rows(batch, 3)
    w = tasks.pretrain[torch.arange(64) % 64]
    assert torch.equal(ex[..., 3], (ex[..., :3] * w[:, None]).sum(-1) % 29)


def test_bad_split():
    cfg = _cfg()
    with pytest.raises(ValueError, match="split"):
        sample_batch(cfg, make_tasks(cfg.task), 0, "validation")
