"""Triton batch generator (fastgrok.kernels.batchgen) against the reference fastgrok.data.generate_batch.

The kernel consumes the same Philox counters as the reference, so every batch must be
bit-identical: all samplings and splits, odd shapes, n_var 1…4, steps past 2^32 counters,
negative steps, keys near and past 2^63, the step as a tensor. Configs draw fresh data and
training seeds each run (printed on failure). On CPU the kernel runs in Triton's interpreter
(conftest); `gpu` tests repeat the check at the paper's shape and under CUDA-graph replay.
"""
import dataclasses

import numpy as np
import pytest
import torch

from fastgrok import Config, make_tasks
from fastgrok.backends import get_op
from fastgrok.data import SPLITS, BatchSource, generate_batch, split_source
from fastgrok.kernels import batchgen as bg
from fastgrok.kernels.batchgen import batchgen_forward, fused_batchgen

generate_batch_fused = get_op("batchgen", "fused")  # the registry's (source, step) over fused_batchgen

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SAMPLINGS = ("iid", "paper", "distinct")
RNG = np.random.default_rng()


def _seeds() -> dict:
    return dict(data_seed=int(RNG.integers(0, 2**31)), seed=int(RNG.integers(0, 2**31)))


def _source(split="train", training=False, device=DEVICE, **kw):
    cfg = Config.preset("paper", **kw)
    return split_source(cfg, make_tasks(cfg.task), split, device, training=training), cfg


def _fused(src, step, poison=True):
    """The kernel through its launcher with a poisoned `out`, so an unwritten element shows."""
    B, S, n_var = src.batch_size, src.n_shots, src.task_vecs.shape[1]
    out = torch.full((B, (n_var + 1) * S), -1, dtype=torch.int64, device=src.inputs.device)
    got = batchgen_forward(src.task_vecs, src.inputs, src.p, B, S, src.sampling, src.key, step, out=out)
    assert got is out and (out >= 0).all(), "elements left unwritten"
    return out


def _assert_same(src, step, msg=""):
    ref = generate_batch(src, step)
    got = _fused(src, step)
    assert torch.equal(got, ref), f"{msg} step={step} diverges at {(got != ref).nonzero()[:5].tolist()}"
    assert torch.equal(generate_batch_fused(src, step), ref), f"{msg} via the custom op"


# ───────────────────────────── bit-identity with the reference ─────────────────────────────


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_matches_reference_all_splits(sampling, split):
    seeds = _seeds()  # 12 tasks over 40 rows (odd balance), 7 shots
    src, _ = _source(split, n_pl=3, batch_size=40, n_shots=7, sampling=sampling, **seeds)
    for step in (0, 1, 10**6, torch.tensor(5, device=DEVICE)):  # 10^6·40·7 > 2^32 (and ·N for distinct)
        _assert_same(src, step, f"{seeds} {sampling} {split}")


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_matches_reference_training_stream_large_key_and_steps(sampling):
    seed = 2**60 - 1 - int(RNG.integers(0, 2**20))  # key = 8·seed ≈ 2^63
    src, _ = _source("train", training=True, n_pl=5, batch_size=33, n_shots=9, sampling=sampling,
                     data_seed=int(RNG.integers(0, 2**31)), seed=seed)
    assert src.key > 2**62
    for step in (2, 2**33 + 7, -3):  # counters past 2^63/…: step·B·N still fits int64; negative steps too
        _assert_same(src, step, f"seed={seed} {sampling}")


@pytest.mark.parametrize("sampling", SAMPLINGS)
@pytest.mark.parametrize("n_var,p,n_shots", [(1, 29, 5), (3, 7, 9), (4, 5, 11)])
def test_matches_reference_n_var(n_var, p, n_shots, sampling):
    seeds = _seeds()
    src, _ = _source("ood_test", selection="random", n_id=12, n_var=n_var, p=p, n_shots=n_shots,
                     batch_size=21, sampling=sampling, **seeds)
    assert src.task_vecs.shape[1] == n_var
    _assert_same(src, 17, f"{seeds} n_var={n_var} {sampling}")


@pytest.mark.parametrize("key", [0, 1, 2**31, 2**63 - 1, 2**63, 2**64 - 1])
def test_keys_over_the_whole_uint64_range(key):
    src, _ = _source("id_test", n_pl=1, batch_size=5, n_shots=3, sampling="iid")
    _assert_same(dataclasses.replace(src, key=key), 4, f"key={key}")


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_degenerate_shapes(sampling):
    # one task, one point, one row, one shot (Triton specializes ints equal to 1), then a 1-coordinate case
    one = torch.ones(1, 2, dtype=torch.int64, device=DEVICE)
    src = BatchSource(task_vecs=one * 3, inputs=one, p=2, batch_size=1, n_shots=1, sampling=sampling, key=1)
    _assert_same(src, 1, "1×1")
    pts = torch.arange(3, dtype=torch.int64, device=DEVICE)[:, None]
    src = BatchSource(task_vecs=pts[1:] + 5, inputs=pts, p=7, batch_size=3, n_shots=3, sampling=sampling, key=12)
    _assert_same(src, 2**35, "n_var=1, S=N")


def test_distinct_many_points_two_chunks():
    # p = 97: 7527 train points > the interpreter's 4096-point chunk, so rows stream over two chunks
    seeds = _seeds()
    src, _ = _source("train", selection="random", n_id=6, p=97, n_shots=32, batch_size=8,
                     sampling="distinct", **seeds)
    assert src.inputs.shape[0] > 4096
    _assert_same(src, 10**6, f"{seeds}")


@pytest.mark.parametrize("n_shots", [20, 5])
def test_distinct_small_chunks(monkeypatch, n_shots):
    # force 16-point chunks: many chunks per row, n_shots above and below the chunk, 4 rows per program
    seeds = _seeds()
    src, _ = _source("id_test", n_pl=3, batch_size=13, n_shots=n_shots, sampling="distinct", **seeds)
    monkeypatch.setattr(bg, "_blocks", lambda B, S, N, distinct, interpret: (4, bg.next_pow2(S), 16))
    ref = generate_batch(src, 9)
    assert torch.equal(_fused(src, 9), ref), seeds


def test_step_tensor_is_read_from_memory():
    src, _ = _source("train", n_pl=3, batch_size=12, n_shots=4, sampling="iid")
    step = torch.tensor(0, device=DEVICE)
    out = torch.empty(12, 12, dtype=torch.int64, device=DEVICE)
    for s in (0, 3, 2**40):  # the same tensor updated in place, as a captured CUDA graph sees it
        step.fill_(s)
        batchgen_forward(src.task_vecs, src.inputs, src.p, 12, 4, "iid", src.key, step, out=out)
        assert torch.equal(out, generate_batch(src, s))
    # a CPU step with the tables on another device is read on the host, like the reference does
    assert torch.equal(generate_batch_fused(src, torch.tensor(3)), generate_batch(src, 3))


def test_strided_tables():
    src, _ = _source("ood_train", n_pl=2, batch_size=10, n_shots=6, sampling="distinct")
    tv = src.task_vecs.t().contiguous().t()  # column-major (n_tasks, n_var)
    wide = torch.full((src.inputs.shape[0], 4), -7, dtype=torch.int64, device=DEVICE)
    wide[:, ::2] = src.inputs
    inp = wide[:, ::2]  # row stride 4, column stride 2
    assert not tv.is_contiguous() and not inp.is_contiguous()
    got = batchgen_forward(tv, inp, src.p, 10, 6, "distinct", src.key, 2)
    assert torch.equal(got, generate_batch(src, 2))


# ───────────────────────────── properties, checked on the kernel alone ─────────────────────────────


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_z_inputs_balance_and_distinctness(sampling):
    # 40 tasks over 96 rows: 16 tasks get 3 rows, 24 get 2
    src, cfg = _source("train", training=True, n_pl=10, batch_size=96, n_shots=16, sampling=sampling, **_seeds())
    B, S, n, p = 96, 16, 40, cfg.task.p
    step = 5
    ex = _fused(src, step).view(B, S, 3).cpu()  # (B, S, n_var + 1)
    x, z = ex[..., :2], ex[..., 2]
    tv = src.task_vecs.cpu()
    # the task of each row, recovered from its examples alone: the one w with w·x ≡ z on every shot
    fits = ((torch.einsum("bsv,tv->bts", x, tv) % p) == z[:, None, :]).all(-1)  # (B, n_tasks)
    assert (fits.sum(1) == 1).all()
    task = fits.int().argmax(1)
    assert task.tolist() == [(step * B + r) % n for r in range(B)]
    assert sorted(torch.bincount(task, minlength=n).tolist()) == [2] * 24 + [3] * 16
    assert torch.equal(z, (x * tv[task][:, None]).sum(-1) % p)
    assert ((x >= 0) & (x < p)).all() and ((z >= 0) & (z < p)).all()
    allowed = {tuple(r) for r in src.inputs.tolist()}
    assert all(tuple(r) in allowed for r in x.reshape(-1, 2).tolist())
    if sampling == "distinct":
        assert all(len({tuple(e) for e in row}) == S for row in x.tolist())
    if sampling == "paper":  # the j-th row of every task shares its inputs
        assert (x[:n] == x[0]).all() and (x[n:2 * n] == x[n]).all()
    assert torch.equal(_fused(src, step).cpu(), ex.view(B, -1))  # deterministic


# ───────────────────────────── launcher errors ─────────────────────────────


def _args(**kw):
    src, _ = _source("id_test", n_pl=1, batch_size=4, n_shots=3, sampling="iid")
    args = dict(task_vecs=src.task_vecs, inputs=src.inputs, p=src.p, batch_size=4, n_shots=3,
                sampling="iid", key=src.key, step=0)
    return {**args, **kw}


def test_cpu_without_interpreter_is_refused(monkeypatch):
    if DEVICE == "cuda":
        pytest.skip("checks the CPU refusal")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        batchgen_forward(**_args())


@pytest.mark.parametrize("bad,exc,match", [
    (dict(sampling="shuffled"), ValueError, "sampling='shuffled'"),
    (dict(p=0), ValueError, "p=0"),
    (dict(batch_size=2.0), ValueError, "batch_size=2.0"),
    (dict(n_shots=0), ValueError, "n_shots=0"),
    (dict(key=-1), ValueError, "key=-1"),
    (dict(key=2**64), ValueError, "key="),
    (dict(step=1.5), TypeError, "step"),
    (dict(step=torch.tensor([1, 2])), TypeError, "step"),
    (dict(step=torch.tensor(1, dtype=torch.int32)), TypeError, "int64"),
    (dict(step=2**62), ValueError, "overflows"),
    (dict(sampling="distinct", n_shots=10**6), ValueError, "n_shots=1000000"),
])
def test_launcher_errors(bad, exc, match):
    with pytest.raises(exc, match=match):
        batchgen_forward(**_args(**bad))


def test_launcher_table_errors():
    a = _args()
    with pytest.raises(TypeError, match="inputs has dtype torch.int32"):
        batchgen_forward(**{**a, "inputs": a["inputs"].int()})
    with pytest.raises(TypeError, match="task_vecs must be a torch.Tensor"):
        batchgen_forward(**{**a, "task_vecs": a["task_vecs"].tolist()})
    with pytest.raises(ValueError, match="n_var"):
        batchgen_forward(**{**a, "inputs": a["inputs"][:, :1]})
    huge = torch.zeros(1, 2, dtype=torch.int64, device=DEVICE).expand(2**30 + 1, 2)  # no memory behind it
    with pytest.raises(ValueError, match="at most 1073741824 input points"):
        batchgen_forward(**{**a, "inputs": huge, "sampling": "distinct"})
    with pytest.raises(ValueError, match="out must be"):
        batchgen_forward(**a, out=torch.empty(4, 8, dtype=torch.int64, device=DEVICE))


def test_kernel_entry_takes_tables_and_ints():
    """fused_batchgen takes tensors and ints only (no BatchSource); the registry adapts a source to it."""
    src, _ = _source("train", n_pl=3, batch_size=12, n_shots=4, sampling="paper")
    args = (src.task_vecs, src.inputs, src.p, src.batch_size, src.n_shots, src.sampling, src.key)
    for step in (5, torch.tensor(5, device=DEVICE)):
        assert torch.equal(fused_batchgen(*args, step), generate_batch(src, 5))
    assert generate_batch_fused.__module__ == "fastgrok.backends"


def test_public_entry_errors():
    src, _ = _source("id_test", n_pl=1, batch_size=4, n_shots=3, sampling="iid")
    with pytest.raises(TypeError, match="step"):
        generate_batch_fused(src, 1.0)
    with pytest.raises(TypeError, match="bool"):
        generate_batch_fused(src, True)
    with pytest.raises(ValueError, match="key="):
        generate_batch_fused(dataclasses.replace(src, key=-5), 0)
    with pytest.raises(ValueError, match="sampling='sorted'"):
        generate_batch_fused(dataclasses.replace(src, sampling="sorted"), 0)


def test_custom_op_compiles_fullgraph():
    src, _ = _source("train", n_pl=3, batch_size=12, n_shots=4, sampling="distinct")

    def f(step):
        return generate_batch_fused(src, step) * 2

    step = torch.tensor(7, device=DEVICE)
    got = torch.compile(f, fullgraph=True, backend="aot_eager")(step)
    assert torch.equal(got, generate_batch(src, 7) * 2)


def test_opcheck():
    src, _ = _source("train", n_pl=3, batch_size=12, n_shots=4)
    for step_t, step_i in ((None, 5), (torch.tensor(5, device=DEVICE), 0)):
        torch.library.opcheck(torch.ops.fastgrok.batchgen.default, (src.task_vecs, src.inputs, step_t, step_i, src.p,
                                                                    12, 4, "iid", src.key))


@pytest.mark.parametrize("version,ok", [("3.3.1", False), ("3.0.0", False), ("3.4.0", True), ("3.6.0+git1a2b", True),
                                        ("3.10.0", True)])
def test_triton_version_floor(version, ok):
    """tl.randint draws the reference's Philox words from Triton 3.4 on; older ones are refused."""
    if ok:
        bg.check_triton_version(version)
    else:
        with pytest.raises(RuntimeError, match="Triton >= 3.4"):
            bg.check_triton_version(version)


# ───────────────────────────── GPU ─────────────────────────────


@pytest.mark.gpu
@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_gpu_paper_shape_matches_reference(sampling):
    for split in SPLITS:  # B = 1024, 32 shots, n_id = 512 (n_pl = 128)
        src, _ = _source(split, training=split == "train", sampling=sampling, **_seeds())
        assert src.batch_size == 1024 and src.n_shots == 32 and src.inputs.is_cuda
        for step in (0, 12345, 10**7):
            _assert_same(src, step, f"{sampling} {split}")


@pytest.mark.gpu
@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_gpu_cuda_graph_replay_reads_the_step(sampling):
    src, _ = _source("train", training=True, sampling=sampling, **_seeds())
    step = torch.tensor(3, device="cuda")
    generate_batch_fused(src, step)  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = generate_batch_fused(src, step)
    for s in (11, 10**6, 3):
        step.fill_(s)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, generate_batch(src, s)), s
