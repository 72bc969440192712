"""fastgrok.analysis and `fastgrok analyze` (#22): the two algorithms against brute force, the cached k-shot grid
against plain forward passes on both backends, every analysis on a trained run and a paper-format checkpoint,
and bad input answered in one line with exit code 2."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fastgrok import GPT, Config, save_reference_checkpoint, train
from fastgrok.analysis import (ANALYSES, STRATA, Options, analyze, attention_maps, cosine_matrix, decompose,
                               discrete_logs, grid_logits, head_features, kshot_grid, modular_regression, open_source,
                               pca, primitive_root, ratio_matching, scaled_example_answers, strata, trace)
from fastgrok.backends import resolve_ops
from fastgrok.cli import main
from cli_errors import one_line_error


# ---- the arithmetic ---------------------------------------------------------------------------------
def _brute_ratio(ex, p):
    out = np.zeros((p, p), bool)
    for x, y in itertools.product(range(p), repeat=2):
        out[x, y] = any((c * xi % p, c * yi % p) == (x, y) for xi, yi, _ in ex for c in range(p)) or (x, y) == (0, 0)
    return out


def _brute_span(ex, p):
    span = {(0, 0)}
    for xi, yi, _ in ex:  # every Σ c_i·(x_i, y_i): grow the set one example at a time
        span = {((sx + c * xi) % p, (sy + c * yi) % p) for sx, sy in span for c in range(p)}
    out = np.zeros((p, p), bool)
    for x, y in span:
        out[x, y] = True
    return out


def _contexts(p, rng):
    """Random contexts and the awkward ones: repeats, (0, 0), all collinear, empty."""
    def ex(points):
        pts = np.array(points, dtype=np.int64).reshape(-1, 2)
        return np.c_[pts, (3 * pts[:, 0] + 2 * pts[:, 1]) % p]
    line = [(c * 2 % p, c * 3 % p) for c in range(1, 5)]
    out = [ex(rng.integers(0, p, (k, 2))) for k in (1, 2, 3, 6)]
    out += [ex([(1, 2), (1, 2), (1, 2)]), ex([(0, 0)]), ex([(0, 0), (0, 0), (4 % p, 1)]), ex(line), ex(line + [(1, 1)]),
            ex(np.zeros((0, 2)))]
    return out


@pytest.mark.parametrize("p", [5, 7, 11, 29])
def test_ratio_matching_and_modular_regression_match_brute_force(p):
    rng = np.random.default_rng(p)
    for ex in _contexts(p, rng):
        np.testing.assert_array_equal(ratio_matching(ex, p), _brute_ratio(ex, p), err_msg=str(ex.tolist()))
        np.testing.assert_array_equal(modular_regression(ex, p), _brute_span(ex, p), err_msg=str(ex.tolist()))


def _brute_strata(ex, p):
    """Each query's stratum by enumeration, independently of algorithms.strata: in context, else a multiple
    c·v_i, else ±v_i ± v_j (i ≠ j), else c_i·v_i + c_j·v_j for some pair, else outside."""
    pts = [(int(x), int(y)) for x, y, _ in ex]
    out = np.zeros((p, p), np.int64)
    for q in itertools.product(range(p), repeat=2):
        if q in pts:
            s = "in_context"
        elif q == (0, 0) or any(q == (c * x % p, c * y % p) for x, y in pts for c in range(p)):
            s = "ratio"
        elif any(q == ((si * x1 + sj * x2) % p, (si * y1 + sj * y2) % p) for i, (x1, y1) in enumerate(pts)
                 for j, (x2, y2) in enumerate(pts) if i != j for si in (1, -1) for sj in (1, -1)):
            s = "combination_simple"
        elif any(q == ((ci * x1 + cj * x2) % p, (ci * y1 + cj * y2) % p) for i, (x1, y1) in enumerate(pts)
                 for (x2, y2) in pts[i + 1:] for ci in range(p) for cj in range(p)):
            s = "combination_general"
        else:
            s = "outside_span"
        out[q] = STRATA.index(s)
    return out


@pytest.mark.parametrize("p", [5, 7, 11, 29])
def test_strata_match_brute_force_and_partition_the_plane(p):
    rng = np.random.default_rng(100 + p)
    contexts = [c for c in _contexts(p, rng) if len(c)] + [np.c_[rng.integers(0, p, (9, 2)), np.zeros(9, np.int64)]]
    seen = set()
    for ex in contexts:
        st = strata(ex, p)
        np.testing.assert_array_equal(st, _brute_strata(ex, p), err_msg=str(ex.tolist()))
        seen |= set(np.unique(st).tolist())
        preds = np.zeros((len(ex), p, p), np.int64)
        rows = decompose(preds, ex, (1, 2), p)["rows"]
        for k in range(len(ex)):  # the strata partition Z_p²; "combination" is the two combination strata
            assert sum(rows[n]["n"][k] for n in STRATA) == p * p
            both = rows["combination_simple"]["n"][k] + rows["combination_general"]["n"][k]
            assert rows["combination"]["n"][k] == both
        assert rows["combination"]["n"][0] == 0  # one example combines with nothing
    assert seen == set(range(len(STRATA)))  # every stratum occurs among these contexts: the check covers each


def _planted_preds(ex, task, p, rng, solves=("in_context", "ratio")):
    """A planted model: the right z on the strata it solves, a uniform guess elsewhere."""
    g = np.arange(p)
    want = (task[0] * g[:, None] + task[1] * g[None, :]) % p
    out = []
    for k in range(1, len(ex) + 1):
        ok = np.isin(strata(ex[:k], p), [STRATA.index(s) for s in solves])
        out.append(np.where(ok, want, rng.integers(0, p, (p, p))))
    return np.stack(out)


def test_a_ratio_matcher_shows_combination_at_chance_and_a_regressor_does_not():
    p, task = 29, (3, 7)
    rng = np.random.default_rng(0)
    pts = rng.permutation(p * p)[:12]
    ex = np.c_[pts // p, pts % p, (task[0] * (pts // p) + task[1] * (pts % p)) % p]
    rm = decompose(_planted_preds(ex, task, p, rng), ex, task, p)["rows"]
    assert rm["ratio"]["acc"].tolist() == [1.0] * 12 and rm["in_context"]["acc"].tolist() == [1.0] * 12
    comb = rm["combination"]
    n, right = np.sum(comb["n"][1:]), np.sum(comb["right"][1:])
    assert n > 5000  # k = 2 … 12: most of the 841 queries each
    # a uniform guess is right with probability 1/p: binomial, 4 standard deviations (a 1-in-16,000 miss)
    assert abs(right / n - 1 / p) < 4 * np.sqrt((1 / p) * (1 - 1 / p) / n), (right, n)
    for k in range(1, 12):  # and per k, the Wilson interval of the stratum is about chance, far below 1
        assert comb["hi"][k] < 0.15
    mr = decompose(_planted_preds(ex, task, p, rng, solves=STRATA[:4]), ex, task, p)["rows"]
    assert all(a == 1.0 for a in mr["combination"]["acc"][1:]) and all(lo > 0.9 for lo in mr["combination"]["lo"][1:])
    assert np.isnan(mr["combination"]["acc"][0])  # k = 1: no combination query exists
    # what a wrong answer is: the planted guesses hit a scaled example's answer at the chance rate
    w = rm["combination"]
    wrong = np.sum(w["n"][1:]) - np.sum(w["right"][1:])
    hits, chance = np.sum(w["wrong_scaled"][1:]), np.sum(w["wrong_scaled_chance"][1:])
    assert 0 < chance < wrong and abs(hits - chance) < 4 * np.sqrt(chance), (hits, chance, wrong)


def test_scaled_example_answers_brute_force():
    p = 7
    ex = np.array([[1, 3, 5], [0, 2, 4], [3, 0, 1], [0, 0, 0]])
    hit = scaled_example_answers(ex, p)
    for x, y in itertools.product(range(p), repeat=2):
        want = set()
        for xi, yi, zi in ex:
            want |= {c * zi % p for c in range(p) if xi and c * xi % p == x}
            want |= {c * zi % p for c in range(p) if yi and c * yi % p == y}
        assert set(np.flatnonzero(hit[x, y]).tolist()) == want, (x, y)


def test_paper_draw_is_the_scripts_random_seed_1():
    import random
    from fastgrok.analysis.report import paper_ids
    random.seed(1)
    want = [random.randint(0, 29 * 29 - 1) for _ in range(28)]  # k-shot_inference_grid.py, p = 29
    random.seed(12345)
    state = random.getstate()
    assert paper_ids(29, 28) == want and len(set(want)) == 28
    assert random.getstate() == state  # the caller's random stream untouched
    # the 29th draw repeats an earlier id: the script's assert stops there, so does the draw (in one line)
    with pytest.raises(ValueError, match=r"repeats input \(28, 9\) at shot 29.*--shots 28"):
        paper_ids(29, 31)


def test_centred_cosine_sees_what_a_shared_component_hides():
    from fastgrok.analysis.algorithms import centred_cosine_matrix, shared_over_spread
    rng = np.random.default_rng(0)
    vary = rng.standard_normal((40, 16))
    shared = 30 * np.r_[1.0, np.zeros(15)]  # one component every row shares, norm 30 against a per-row RMS of 4
    X = vary + shared
    spread = np.sqrt(((vary - vary.mean(0)) ** 2).sum(1).mean())  # RMS ≈ 4: the per-row variation
    assert shared_over_spread(X) == pytest.approx(np.linalg.norm(vary.mean(0) + shared) / spread, rel=1e-9)
    assert shared_over_spread(X) > 6
    paper, centred = cosine_matrix(X), centred_cosine_matrix(X)
    off = ~np.eye(40, dtype=bool)
    assert paper[off].min() > 0.9  # the paper's normalisation saturates: everything looks alike
    np.testing.assert_allclose(centred, centred_cosine_matrix(vary), atol=1e-12)  # the shared part is gone
    assert np.abs(centred[off]).mean() < 0.35  # random directions in 16 dims: |cos| ≈ 0.2


def test_task_bootstrap_and_the_pca_baseline():
    from fastgrok.analysis.algorithms import bootstrap_task_mean
    from fastgrok.analysis.report import pca_warning, random_pca_shares
    acc = np.array([[0.1, 0.9], [0.2, 0.9], [0.9, 0.9], [np.nan, np.nan]])  # the last task never drawn
    lo, hi = bootstrap_task_mean(acc)
    assert lo[1] == hi[1] == pytest.approx(0.9)  # no spread between tasks: no width
    assert lo[0] <= 0.4 <= hi[0] and hi[0] - lo[0] > 0.2  # mean 0.4, tasks from 0.1 to 0.9
    assert np.isnan(bootstrap_task_mean(np.full((2, 3), np.nan))[0]).all()
    assert pca_warning(5, 4) and pca_warning(5, 2) and not pca_warning(29, 4)
    base = random_pca_shares(5, 64, 4, 0)  # 5 random points: 4 directions share all the variance
    assert base.sum() == pytest.approx(1.0, abs=0.02) and base[0] < 0.5 and base[-1] > 0.1  # medians: their sum ≈ 1


def test_what_each_algorithm_covers():
    p = 7
    one = np.array([[1, 2, 0]])
    assert ratio_matching(one, p).sum() == p  # a line through the origin: p points
    two = np.array([[1, 2, 0], [2, 4, 0]])  # collinear: still one line
    assert modular_regression(two, p).sum() == p
    three = np.array([[1, 2, 0], [1, 3, 0]])  # independent: the whole plane, but only two lines by ratio
    assert modular_regression(three, p).all() and ratio_matching(three, p).sum() == 2 * p - 1
    assert (modular_regression(three, p) >= ratio_matching(three, p)).all()


@pytest.mark.parametrize("p", [3, 5, 7, 11, 13, 29, 97])
def test_primitive_root_and_logs_computed(p):
    g = primitive_root(p)
    logs = discrete_logs(p, g)
    assert sorted(logs[1:]) == list(range(p - 1)) and logs[0] == -1
    assert all(pow(g, int(logs[n]), p) == n for n in range(1, p))
    assert primitive_root(29) == 2  # the paper's p; 27 (its other choice) is one too
    discrete_logs(29, 27)
    with pytest.raises(ValueError, match="not a primitive root"):
        discrete_logs(29, 4)


@pytest.mark.parametrize("bad", [9, 2, 1, 0, -5])
def test_p_must_be_an_odd_prime(bad):
    with pytest.raises(ValueError, match="not an odd prime"):
        ratio_matching(np.zeros((1, 3), np.int64), bad)


def test_examples_are_checked():
    with pytest.raises(ValueError, match="Z_7"):
        ratio_matching([[7, 1, 1]], 7)
    with pytest.raises(ValueError, match=r"\(k, 3\)"):
        modular_regression([[1, 2]], 7)


def test_pca_and_cosine():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3)) * [5.0, 1.0, 0.1]
    coords, share = pca(X, 2)
    assert coords.shape == (50, 2) and share[0] > 0.9 and share.sum() <= 1
    np.testing.assert_allclose(np.abs(coords[:, 0]), np.abs(X[:, 0] - X[:, 0].mean()), rtol=0.05, atol=0.2)
    C = cosine_matrix(rng.normal(size=(20, 8)))
    np.testing.assert_allclose(np.diag(C), 1.0, atol=1e-9)
    assert C.shape == (20, 20) and np.allclose(C, C.T) and np.abs(C).max() <= 1 + 1e-9


# ---- the cached grid against full sequences ------------------------------------------------------
def _random_model(backend, dtype, p=7):
    torch.manual_seed(0)
    cfg = Config.preset("tiny", p=p, n_shots=8, depth=2, n_embd=64, n_head=2, vocab_size=p + 2)
    model = GPT(cfg.model, resolve_ops(backend=backend))
    with torch.no_grad():  # weights large enough that predictions depend on the context
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.normal_(0, 0.3)
    return model.to(dtype).eval(), cfg


def _full_grid(model, task, ex, p):
    q = np.stack(np.meshgrid(range(p), range(p), indexing="ij"), -1).reshape(-1, 2)
    want = torch.as_tensor((task[0] * q[:, 0] + task[1] * q[:, 1]) % p)
    out, logits = [], []
    for k in range(1, len(ex) + 1):
        seq = torch.as_tensor(np.concatenate([np.tile(ex[:k].reshape(-1), (p * p, 1)), q], 1))
        with torch.no_grad():
            lg = model(seq)[:, -1]
        logits.append(lg)
        out.append((lg.argmax(-1) == want).view(p, p).numpy())
    return np.stack(out), logits


@pytest.mark.parametrize("backend,dtype,p,k", [("reference", torch.float64, 7, 6), ("reference", torch.float32, 7, 6),
                                               ("fused", torch.float32, 5, 3)])  # fused: Triton's interpreter
def test_kshot_grid_equals_plain_forward_passes(backend, dtype, p, k):
    task = (3, 4)
    model, _ = _random_model(backend, dtype, p)
    rng = np.random.default_rng(1)
    pts = np.r_[rng.integers(0, p, (k - 2, 2)), [[0, 0]], rng.integers(0, p, (1, 2))]  # (0, 0) among them
    ex = np.c_[pts, (3 * pts[:, 0] + 4 * pts[:, 1]) % p]
    grid = kshot_grid(model, task, ex, p, vocab="full")
    full, logits = _full_grid(model, task, ex, p)
    np.testing.assert_array_equal(grid, full)
    preds, lg = grid_logits(model, ex, p)  # the default: argmax over the p number tokens, as the paper
    want_lg = torch.stack(logits)[..., :p].view(k, p, p, p)
    np.testing.assert_allclose(lg, want_lg.float().numpy(), atol=1e-4 if dtype == torch.float32 else 1e-9, rtol=1e-4)
    np.testing.assert_array_equal(preds, want_lg.argmax(-1).numpy())
    from fastgrok.analysis.probe import logit_lens
    lens = logit_lens(model, ex, p)  # (K, L, p, p): its last layer is the model's own answer
    assert lens.shape == (k, 2, p, p)
    np.testing.assert_array_equal(lens[:, -1], preds)
    assert 0.02 < grid.mean() < 0.98  # not a constant answer: the comparison means something
    tr = trace(model, torch.as_tensor(np.tile(ex.reshape(-1), (2, 1))))
    torch.testing.assert_close(tr.logits, model(torch.as_tensor(np.tile(ex.reshape(-1), (2, 1)))),
                               atol=1e-4 if dtype == torch.float32 else 1e-10, rtol=1e-4)


def test_attention_maps_and_head_features_shapes():
    model, _ = _random_model("reference", torch.float64)
    seq = torch.randint(0, 7, (11,))
    maps = attention_maps(model, seq)
    assert maps.shape == (2, 2, 11, 11)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 11), rtol=0, atol=1e-6)
    assert (maps.triu(1) == 0).all()  # causal
    ex = np.array([[1, 2, 4], [3, 3, 2]])
    f = head_features(model, ex, 7)
    assert f["heads"].shape == (2, 2, 49, 2, 64) and f["blocks"].shape == (2, 49, 2, 64)
    # the x token sees only x (and the context): rows with the same x agree there
    h = f["heads"][0, 0, :, 0].view(7, 7, 64)
    torch.testing.assert_close(h, h[:, :1].expand_as(h))
    fz = head_features(model, ex, 7, task=(2, 3))  # with the z token: x and y unchanged (causal), z appended
    assert fz["heads"].shape == (2, 2, 49, 3, 64) and fz["blocks"].shape == (2, 49, 3, 64)
    torch.testing.assert_close(fz["heads"][..., :2, :], f["heads"], atol=1e-6, rtol=1e-6)
    # the heads' outputs sum to the attention's output projection of the block
    layer0 = model.transformer.h[0]
    idx = torch.as_tensor(np.concatenate([np.tile(ex.reshape(-1), (49, 1)), np.stack(np.meshgrid(
        range(7), range(7), indexing="ij"), -1).reshape(-1, 2)], 1))
    x = model.transformer.wte(idx)
    attn_out = layer0.attn(layer0.ln_1(x))[:, -2:]  # (p², 2, C) at the varied example
    torch.testing.assert_close(f["heads"][0].sum(0).to(torch.float64), attn_out, atol=1e-5, rtol=1e-5)


# ---- the analyses on a trained run and a paper-format checkpoint ----------------------------------
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyze")
    cfg = Config.preset("tiny", p=5, n_shots=6, steps=60, eval_every=30, out_dir=str(root), run_name="tiny")
    train(cfg, quiet=True)
    return root / "tiny"


FAST = ["--noise-seqs", "256"]


def test_analyze_a_run_writes_every_figure_and_its_numbers(trained_run, tmp_path, capsys):
    out = tmp_path / "a"
    assert main(["analyze", str(trained_run), "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    for name in ANALYSES:
        assert (out / f"{name}.png").stat().st_size > 1000, name
        assert name in printed
        data = json.loads((out / f"{name}.json").read_text())
        assert data
    index = json.loads((out / "index.json").read_text())
    assert set(index["analyses"]) == set(ANALYSES) and index["p"] == 5 and index["step"] in (30, 60)
    kshot = json.loads((out / "kshot.json").read_text())
    for s in kshot["sets"].values():
        assert len(s["acc"]) == 6 and all(0 <= a <= 1 for a in s["acc"])
        assert s["half_width"] <= 0.02 and s["n_seqs"] >= 1000  # the interval the issue asks for
        assert all(lo <= a <= hi for lo, a, hi in zip(s["lo"], s["acc"], s["hi"]))
    grid = json.loads((out / "grid.json").read_text())
    K = grid["shots"]
    assert K == 5 and np.array(grid["model"]).shape == (K, 5, 5)
    assert grid["task_kind"] == "ood" and len(grid["context"]) == K
    ctx = np.array(grid["context"])
    np.testing.assert_array_equal(np.array(grid["strata"][1]), strata(ctx[:2], 5))
    assert grid["vocab"] == "numbers" and "logits[:, :, :p]" in grid["argmax"]
    model_ok = np.array(grid["model"])
    for k in range(K):  # the rows add up to the grid they come from
        assert sum(grid["rows"][n]["n"][k] for n in STRATA) == 25
        assert sum(grid["rows"][n]["right"][k] for n in STRATA) == model_ok[k].sum()
        assert grid["model_acc"][k] == pytest.approx(model_ok[k].mean())
    last = grid["logit_lens"]["layers"]["0"]  # a depth-1 model: the lens at its one block is its answer
    assert [last[n]["right"] for n in STRATA] == [grid["rows"][n]["right"] for n in STRATA]
    with np.load(out / "grid.npz") as z:
        assert z["logits"].shape == (K, 5, 5, 5) and np.array_equal(z["preds"], np.array(grid["preds"]))
        assert z["lens_preds"].shape == (K, 1, 5, 5)
        assert np.array_equal(z["logits"].argmax(-1), z["preds"])
    att = np.array(json.loads((out / "attention.json").read_text())["attention"])
    assert att.shape == (1, 2, 17, 17) and np.allclose(att.sum(-1), 1, atol=1e-3)
    emb = json.loads((out / "embedding.json").read_text())
    assert emb["primitive_root"] == 2 and emb["logs"] == [-1, 0, 1, 3, 2]
    noise = json.loads((out / "noise.json").read_text())
    for s in noise["sets"].values():
        acc, count = np.array(s["acc"], dtype=float), np.array(s["count"])
        assert count[np.triu_indices(6)].sum() == 0 and count[1:].sum() > 0  # only j < k
        assert np.nanmin(acc) >= 0 and np.nanmax(acc) <= 1
    with np.load(out / "cosine.npz") as z:
        assert z["heads"].shape == (1, 2, 3, 2, 25, 25) and z["blocks"].shape == (1, 3, 2, 25, 25)  # x y z, 2 norms


def test_grid_context_given_paper_draw_all_tasks_and_full_vocab(trained_run, tmp_path, capsys):
    run = str(trained_run)
    a = tmp_path / "given"
    assert main(["analyze", run, "--what", "grid", "--task", "1,3", "--context", "1,2; 3,4;0,0", "--no-figures",
                 "--quiet", "--out", str(a)]) == 0
    g = json.loads((a / "grid.json").read_text())
    assert g["context"] == [[1, 2, 2], [3, 4, 0], [0, 0, 0]] and g["context_draw"] == "given" and g["shots"] == 3
    assert g["rows"]["in_context"]["n"] == [1, 2, 3]  # the given points are the in-context queries, one per k
    b = tmp_path / "paper"
    assert main(["analyze", run, "--what", "grid", "--draw", "paper", "--no-figures", "--quiet", "--out", str(b)]) == 0
    g = json.loads((b / "grid.json").read_text())
    from fastgrok.analysis.report import paper_ids
    ids = paper_ids(5, 5)
    assert [c[:2] for c in g["context"]] == [[i // 5, i % 5] for i in ids] and g["context_draw"] == "paper"
    c = tmp_path / "all"
    assert main(["analyze", run, "--what", "grid", "--draw", "paper", "--all-tasks", "--vocab", "full", "--quiet",
                 "--out", str(c)]) == 0
    g = json.loads((c / "grid.json").read_text())
    subject = open_source(trained_run)
    n_id, n_ood = len(subject.tasks.pretrain), len(subject.tasks.ood)
    at = g["all_tasks"]
    assert g["vocab"] == "full" and len(at["per_task"]) == n_id + n_ood and at["kinds"].count("ood") == n_ood
    for kind, n_tasks in (("id", n_id), ("ood", n_ood)):
        pooled = at["pooled"][kind]
        for k in range(5):
            assert sum(pooled[n]["n"][k] for n in STRATA) == 25 * n_tasks
    with np.load(c / "grid.npz") as z:
        assert z["task_preds"].shape == (n_id + n_ood, 5, 5, 5) and z["task_logits"].shape[:2] == (n_id + n_ood, 5)
        i = at["tasks"].index(g["task"])  # the grid's own task is among them, with the same answers
        assert np.array_equal(z["task_preds"][i], z["preds"])
    assert (c / "grid.png").stat().st_size > 1000
    assert "outside Z_5²" in _err(capsys, ["analyze", run, "--context", "1,2;9,9"])
    assert "expected 2 comma-separated" in _err(capsys, ["analyze", run, "--context", "1,2;3"])
    assert "drop --shots" in _err(capsys, ["analyze", run, "--context", "1,2;3,4", "--shots", "3"])
    assert "pass one of the two" in _err(capsys, ["analyze", run, "--context", "1,2", "--draw", "paper"])
    assert "holds 1 … 5" in _err(capsys, ["analyze", run, "--context", "1,1;1,2;1,3;1,4;2,1;2,2"])


def test_label_noise_paper_protocol(trained_run, tmp_path):
    from fastgrok.analysis.probe import label_noise
    subject = open_source(trained_run)
    r = label_noise(subject.model, subject.cfg, subject.tasks, "ood_test", n_seqs=4096, seed=0)
    S = subject.cfg.task.n_shots
    count_all, count = r["count_all"], r["count"]
    assert count_all[np.triu_indices(S, 1)].sum() == 0  # j ≤ k: at least one of the k + 1 points clean
    assert count[np.triu_indices(S)].sum() == 0          # j < k
    # wrong z among shots 0 … k is the wrong z before shot k + 1: the same sequences, counted at the next shot
    np.testing.assert_array_equal(count_all[:-1], count[1:])
    # and with the query's z clean (j_all = 0) the sequences are a subset of those clean before it
    assert (count_all[1:, 0] <= count[1:, 0]).all() and (r["correct_all"][1:, 0] <= r["correct"][1:, 0]).all()
    # q ~ U(0, 1) per sequence: the wrong z among k + 1 points is uniform on 0 … k + 1, so each kept j holds
    # ≈ n/(k + 2) sequences; binomial, 5 standard deviations
    n = 4096
    for k in range(1, S):
        mean = n / (k + 2)
        assert np.all(np.abs(count_all[k, :k + 1] - mean) < 5 * np.sqrt(mean)), (k, count_all[k, :k + 1])
    out = tmp_path / "paper"
    analyze(subject, Options(what=("noise",), noise_protocol="paper", noise_seqs=512, figures=True), out)
    d = json.loads((out / "noise.json").read_text())
    assert d["protocol"] == "paper" and set(d["sets"]) == {"id_test", "ood_test", "mean"}
    a, b, m = (np.array(d["sets"][x]["acc"], dtype=float) for x in ("id_test", "ood_test", "mean"))
    np.testing.assert_allclose(m, (a + b) / 2, atol=2e-6)  # _r rounds to 6 digits
    assert (out / "noise.png").stat().st_size > 1000


def test_grid_legend_hides_no_curve(trained_run, tmp_path):
    """The strata panel's legend sits outside its axes (it covered the model's curve from k ≥ 7 before)."""
    pytest.importorskip("matplotlib")
    from fastgrok.analysis.figures import _strata_axes
    from fastgrok.sweep.plot import pyplot
    analyze(open_source(trained_run), Options(what=("grid",), figures=False), tmp_path)
    g = json.loads((tmp_path / "grid.json").read_text())
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    _strata_axes(ax, g["rows"], [n for n in STRATA if n != "outside_span"] + ["combination"], g["chance"], "t")
    fig.canvas.draw()
    legend, box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= box.x1 - 1  # entirely right of the axes (1 px of rounding)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("chance 1/p = 0.200") for t in labels) and any("ratio" in t for t in labels)
    plt.close(fig)


def test_analyze_is_deterministic_and_redraws_from_json(trained_run, tmp_path):
    subject = open_source(trained_run)
    opts = Options(noise_seqs=256, seed=3, figures=False)
    a, b = tmp_path / "a", tmp_path / "b"
    analyze(subject, opts, a)
    analyze(open_source(trained_run), opts, b)
    for name in ANALYSES:
        da, db = (json.loads((d / f"{name}.json").read_text()) for d in (a, b))
        da.pop("seconds", None), db.pop("seconds", None)
        assert da == db, name
    with np.load(a / "cosine.npz") as za, np.load(b / "cosine.npz") as zb:
        assert all(np.array_equal(za[k], zb[k]) for k in ("heads", "blocks"))
    other = tmp_path / "c"
    analyze(subject, Options(what=("grid",), seed=4, figures=False), other)
    assert json.loads((other / "grid.json").read_text())["context"] != json.loads((a / "grid.json").read_text())["context"]
    from fastgrok.analysis.figures import draw
    assert draw("grid", json.loads((a / "grid.json").read_text()), tmp_path / "g.png").stat().st_size > 1000


def test_default_weights_are_last_and_best_says_what_chose_it(trained_run, tmp_path, capsys):
    a, b = tmp_path / "last", tmp_path / "best"
    assert main(["analyze", str(trained_run), "--what", "embedding,grid", "--out", str(a)]) == 0
    assert "biased upward" not in capsys.readouterr().out
    index = json.loads((a / "index.json").read_text())
    assert index["weights"]["file"] == "last.pt" and index["step"] == 60 and index["weights"]["chosen_by"] is None
    assert main(["analyze", str(trained_run), "--what", "embedding,grid", "--checkpoint", "best", "--out", str(b)]) == 0
    assert "chosen on o.o.d. test accuracy" in capsys.readouterr().out
    for name in ("embedding", "grid", "index"):
        w = json.loads((b / f"{name}.json").read_text())["weights"]
        assert w["file"] == "best.pt" and w["chosen_by"] == "o.o.d. test accuracy" and "biased" in w["note"], name


def _paper_checkpoint(folder: Path) -> Path:
    """A depth-2 model saved in the paper's format under the paper's checkpoint name (fastgrok.paper.run_stem)."""
    from fastgrok.paper import parse, run_stem
    ns, _, _ = parse(["--p=7", "--base=7", "--n_tasks_pl=2", "--n_point_per_row=6", "--data_pct=60",
                      "--n_embd=32", "--n_head=2", "--n_layer=2", "--data_seed=3", "--steps=100"])
    head, tail = run_stem(ns)
    cfg = Config.preset("tiny", p=7, n_shots=6, depth=2, n_embd=32, n_head=2, vocab_size=7 + 18)
    torch.manual_seed(0)
    path = folder / f"{head}_t100{tail}.pth"
    save_reference_checkpoint(GPT(cfg.model), path)
    return path


def test_analyze_a_paper_checkpoint_reads_p_and_tasks_from_its_name(tmp_path, capsys):
    path = _paper_checkpoint(tmp_path)
    subject = open_source(path)
    assert subject.p == 7 and subject.cfg.task.n_shots == 6 and subject.cfg.task.data_seed == 3
    assert len(subject.tasks.pretrain) == 8 and subject.step == 100 and subject.cfg.model.vocab_size == 25
    from fastgrok.tasks import make_tasks
    assert torch.equal(subject.tasks.pretrain, make_tasks(subject.cfg.task).pretrain)
    assert main(["analyze", str(path), "--task", "2,3", "--shots", "4", "--layer", "1", "--head", "1", "--quiet",
                 "--tasks-from", "fastgrok", *FAST]) == 0
    assert capsys.readouterr().out == ""
    out = path.with_name(path.stem + ".analysis")
    for name in ANALYSES:
        assert (out / f"{name}.png").stat().st_size > 1000 and (out / f"{name}.json").is_file(), name
    grid = json.loads((out / "grid.json").read_text())
    assert grid["task"] == [2, 3] and grid["shots"] == 4 and np.array(grid["model"]).shape == (4, 7, 7)
    assert grid["task_kind"] == ("id" if [2, 3] in subject.tasks.pretrain.tolist() else "ood")
    assert json.loads((out / "embedding.json").read_text())["primitive_root"] == 3
    heads = json.loads((out / "heads.json").read_text())
    assert (heads["layer"], heads["head"]) == (1, 1) and np.array(heads["head_pcs"]).shape == (2, 2, 49, 2)
    kshot = json.loads((out / "kshot.json").read_text())
    assert kshot["chance"] == pytest.approx(1 / 7) and len(kshot["sets"]["ood_test"]["acc"]) == 6
    index = json.loads((out / "index.json").read_text())
    assert index["step"] == 100 and index["source"] == str(path)
    # a name that says nothing: --p and the task fields given beside it
    bare = tmp_path / "model.pth"
    bare.write_bytes(path.read_bytes())
    assert main(["analyze", str(bare), "--p", "7", "--n-pl", "2", "--n-shots", "6", "--what", "embedding",
                 "--no-figures", "--quiet"]) == 0
    # without --tasks-from the task set is not known: no set analyses, no i.d./o.o.d. label, said in one line
    other = tmp_path / "unknown"
    assert main(["analyze", str(path), "--task", "2,3", "--shots", "4", "--no-figures", "--out", str(other)]) == 0
    assert "tasks: not known" in capsys.readouterr().out
    index = json.loads((other / "index.json").read_text())
    assert "kshot" not in index["analyses"] and "noise" not in index["analyses"] and "grid" in index["analyses"]
    assert json.loads((other / "grid.json").read_text())["task_kind"] == "unknown"
    assert "--tasks-from fastgrok" in _err(capsys, ["analyze", str(path), "--what", "kshot"])
    assert "--tasks-from fastgrok" in _err(capsys, ["analyze", str(path), "--what", "grid", "--all-tasks"])


_err = one_line_error


def test_bad_input_is_one_line_and_exit_2(trained_run, tmp_path, capsys):
    run = str(trained_run)
    assert "outside Z_5²" in _err(capsys, ["analyze", run, "--task", "5,1"])
    assert "2 comma-separated integers" in _err(capsys, ["analyze", run, "--task", "1"])
    assert "1 … 5 examples" in _err(capsys, ["analyze", run, "--shots", "6"])
    assert "1 … 5 examples" in _err(capsys, ["analyze", run, "--shots", "0"])
    assert "layers 0 … 0" in _err(capsys, ["analyze", run, "--layer", "1"])
    assert "heads 0 … 1" in _err(capsys, ["analyze", run, "--head", "2"])
    assert "unknown analysis 'pictures'" in _err(capsys, ["analyze", run, "--what", "kshot,pictures"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((trained_run / "config.json").read_text())
    assert "no checkpoint" in _err(capsys, ["analyze", str(empty)])
    assert "no checkpoint (last.pt)" in _err(capsys, ["analyze", str(empty), "--checkpoint", "last"])
    assert "not a fastgrok run folder" in _err(capsys, ["analyze", str(tmp_path)])
    assert "does not exist" in _err(capsys, ["analyze", str(tmp_path / "nope")])
    bare = tmp_path / "model.pth"
    bare.write_bytes(_paper_checkpoint(tmp_path).read_bytes())
    assert "p cannot be known" in _err(capsys, ["analyze", str(bare)])
    assert "not an odd prime" in _err(capsys, ["analyze", str(bare), "--p", "9"])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    assert "corrupt" in _err(capsys, ["analyze", str(garbage), "--p", "7"])
    assert "saved in it" in _err(capsys, ["analyze", run, "--p", "7"])


def test_grid_benchmark_quick_appends_rows(tmp_path):
    """benchmarks/bench_analysis.py --quick: both paths timed, rows appended (no speed asserted)."""
    import subprocess
    import sys
    from fastgrok.bench.core import read_rows
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_analysis.py"
    for _ in range(2):
        r = subprocess.run([sys.executable, str(script), "--quick", "--out-dir", str(tmp_path)], capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "predictions differ at 0 of 1089" in r.stdout, r.stdout
    rows = read_rows(tmp_path / "analysis.csv")
    assert [r["provider"] for r in rows] == ["kv_cache", "full_sequences"] * 2
    assert all(r["unit"] == "s" and float(r["p50"]) > 0 and r["x"] == "p11_d2_w64_h4_K9" for r in rows)


def test_three_variables_get_the_analyses_that_fit(tmp_path, capsys):
    cfg = Config.preset("tiny", n_var=3, selection="random", n_id=8, n_pl=None, out_dir=str(tmp_path), run_name="nv3")
    train(cfg, quiet=True)
    run = tmp_path / "nv3"
    assert main(["analyze", str(run), "--no-figures", "--quiet", *FAST]) == 0
    index = json.loads((run / "analysis" / "index.json").read_text())
    assert list(index["analyses"]) == ["kshot", "attention", "embedding", "noise"]
    att = json.loads((run / "analysis" / "attention.json").read_text())
    assert att["labels"][:4] == ["v1_1", "v2_1", "v3_1", "z1"] and len(att["tokens"]) == 4 * 6 - 1
    assert "need n_var = 2" in _err(capsys, ["analyze", str(run), "--what", "grid,heads"])
    assert "needs n_var = 2" in _err(capsys, ["analyze", str(run), "--task", "1,2"])
