"""Benchmarks: the helpers, the host pipeline, the renderer, and a --quick smoke run of every suite on CPU
(written to tmp_path; it proves they run, it asserts no speed)."""
import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastgrok import Config, make_tasks
from fastgrok.bench import kernels as bench_kernels, render as bench_render, tasks as bench_tasks
from fastgrok.bench.core import FIELDS, Recorder, Timing, append_rows, read_rows, row
from fastgrok.bench.cli import SUITES, run_suites
from fastgrok.bench.hostpipe import HostPipeline, attach, host_tokens, host_train_step, materialise
from fastgrok.trainer import build

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")



# ---- core helpers -----------------------------------------------------------------------------------
def test_timing_rate_swaps_quantiles():
    t = Timing.of([1.0, 2.0, 3.0, 4.0, 5.0])
    assert t.p50 == 3.0 and t.p20 < t.p50 < t.p80
    r = t.rate(6.0)
    assert r.p50 == pytest.approx(2.0) and r.p20 == pytest.approx(6.0 / t.p80) and r.p80 == pytest.approx(6.0 / t.p20)
    assert t.scaled(1e3).p50 == pytest.approx(3e3)


def test_rows_are_appended_never_overwritten(tmp_path):
    path = tmp_path / "x.csv"
    first = [row("b", "reference", "forward", "T", 95, Timing(1e-3, 9e-4, 1.1e-3), "ms", CPU, scale=1e3)]
    append_rows(path, first)
    append_rows(path, [row("b", "fused", "forward", "T", 95, [2e-3, 2e-3], "ms", CPU, scale=1e3)])
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(FIELDS) and len(lines) == 3  # one header, both rows
    rows = read_rows(path)
    assert [r["provider"] for r in rows] == ["reference", "fused"]
    assert float(rows[0]["p50"]) == pytest.approx(1.0) and rows[0]["unit"] == "ms"
    assert all(rows[0][f] for f in FIELDS)
    assert re.fullmatch(r"[0-9a-f]{7}(-dirty)?|unknown", rows[0]["git_sha"])


def test_nothing_below_bench_imports_it():
    for path in (ROOT / "fastgrok").rglob("*.py"):
        if "bench" in path.relative_to(ROOT / "fastgrok").parts:
            continue
        if path == ROOT / "fastgrok" / "cli.py":  # the CLI sits on top of everything, bench included
            continue
        src = path.read_text()
        assert not re.search(r"^\s*(from \.+bench|from fastgrok\.bench|import fastgrok\.bench)", src, re.M), path


# ---- host pipeline ----------------------------------------------------------------------------------
def test_materialise_is_every_equation():
    w = torch.tensor([[1, 2], [3, 4]])
    x = torch.tensor([[0, 1], [2, 3], [4, 4]])
    eq = materialise(w, x, 5)
    assert eq.shape == (2, 3, 3)
    assert eq[1, 1].tolist() == [2, 3, (3 * 2 + 4 * 3) % 5]


def test_host_pipeline_batches():
    cfg = Config.preset("tiny", batch_size=16)
    tasks = make_tasks(cfg.task)
    pipe = HostPipeline(cfg, tasks, CPU)
    L = cfg.task.n_var + 1
    for k in range(3):
        batch = pipe.batchgen()
        assert batch.shape == (16, L * cfg.task.n_shots) and batch.dtype == torch.int64
        ex = batch.view(16, cfg.task.n_shots, L)  # (B, S, n_var + 1)
        rows = torch.arange(k * 16, (k + 1) * 16)
        w = tasks.pretrain[rows % tasks.pretrain.shape[0]]  # the same rotation as on-device batches
        assert torch.equal(ex[..., -1], (ex[..., :-1] * w[:, None]).sum(-1) % cfg.task.p)
        allowed = {tuple(v) for v in tasks.train_inputs.tolist()}
        assert all(tuple(v) in allowed for v in ex[..., :-1].reshape(-1, cfg.task.n_var).tolist())
    again = HostPipeline(cfg, tasks, CPU)
    assert torch.equal(again.batchgen(), HostPipeline(cfg, tasks, CPU).batchgen())  # keyed by (seed, step)
    assert host_tokens(tasks) == sum(t.numel() for t in pipe.equations.values())


def test_host_pipeline_trains_the_same_session():
    cfg = Config.preset("tiny", device="cpu", compile="off")
    sess = build(cfg)
    host = attach(sess, HostPipeline(cfg, sess.tasks, CPU))
    assert host.model is sess.model and dict(host.ops.names)["batchgen"] == "host"
    before = [p.detach().clone() for p in sess.model.parameters()]
    loss = host_train_step(host, 0)
    assert isinstance(loss, float) and loss > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, sess.model.parameters()))


# ---- plans ------------------------------------------------------------------------------------------
def test_kernel_plan_covers_paper_shapes_and_sweeps():
    cases = bench_kernels.plan(CPU, quick=False)
    labels = {(c.op, name, x) for c in cases for name, x in c.labels}
    for op in bench_kernels.OPS:
        assert (op, "shape", "paper") in labels
    assert {("attention", "T", t) for t in (32, 95, 256)} <= labels
    assert {("attention", "head_dim", d) for d in (32, 64, 128)} <= labels
    assert ("batchgen", "sampling", "distinct") in labels
    paper = next(c for c in cases if c.op == "attention" and c.is_main)
    assert paper.dims == dict(B=1024, H=4, T=95, D=128)
    items = bench_kernels.items(CPU, quick=False, compile="main")
    assert not any(i.provider == "fused" for i in items), "no interpreter timings on CPU"
    assert {i.case.is_main for i in items if i.provider == "reference-compiled"} == {True}
    assert not any(i.provider.endswith("compiled") for i in bench_kernels.items(CPU, quick=True, compile="off"))


def test_attention_bytes_and_flops():
    dims = dict(B=2, H=4, T=8, D=16)
    works = bench_kernels.setup("attention", dims, bench_kernels.implementation("attention", "reference"), CPU)
    n = 2 * 4 * 8 * 16 * 4  # fp32 bytes of one of q, k, v, out
    assert [works[m].nbytes for m in ("forward", "backward", "full")] == [4 * n, 8 * n, 12 * n]
    assert works["forward"].flops == 2.0 * 2 * 4 * 8 * 8 * 16
    out = works["forward"].fn()
    assert out.shape == (2, 8, 64)
    assert works["backward"].fn()[0].shape == (2, 8, 192)


def test_task_sweep_plan():
    assert bench_tasks.max_n_id("p29") == 840 and bench_tasks.max_n_id("p29-n3") == 29**3 - 1
    assert bench_tasks.selection_for("p29", 512) == "parallelogram"
    assert bench_tasks.selection_for("p29", 840) == "random"  # the parallelogram construction cannot reach it
    assert bench_tasks.selection_for("p29-n3", 512) == "random"
    plan = bench_tasks.plan(quick=False)
    assert plan["p29"] == [8, 32, 128, 512, 840]
    assert plan["p97"][-1] == 97**2 - 1 and 1024 in plan["p97"]
    cfg = bench_tasks.task_config("p97", 9408, CPU, bench_tasks.MODELS["cpu"])
    assert cfg.task.n_pretrain == 9408 and cfg.train.batch_size == 9408


def test_task_sweep_families_and_steps_above_the_batch(one_thread):
    """gpu_check's stage: some families; a step above the batch runs at batch n_id, scaled to the batch's rows."""
    assert list(bench_tasks.plan(False, ("p29", "p97"))) == ["p29", "p97"]
    assert bench_tasks.plan(False, toy=True) == {"p7": [8, 32, 48]}
    with pytest.raises(ValueError, match="unknown family p31"):
        bench_tasks.plan(False, ("p31",))
    above = bench_tasks.step_rows("p7", 48, CPU, True, False, batch=16)  # batch max(16, 48) = 48
    assert [r["unit"] for r in above] == ["ms/16 rows"]
    within = bench_tasks.step_rows("p7", 8, CPU, True, False, batch=16)
    assert [r["unit"] for r in within] == ["ms", "ms/16 rows"] and within[0]["p50"] == within[1]["p50"]


# ---- renderer ---------------------------------------------------------------------------------------
def _r(provider, x, p50, unit="ms", ts="2026-01-01T00:00:00+00:00", bench="attention", mode="forward", x_name="T"):
    r = row(bench, provider, mode, x_name, x, Timing(p50, p50 * 0.9, p50 * 1.1), unit, CPU)
    r["timestamp"] = ts
    return r


def test_render_latest_and_speedups(tmp_path):
    append_rows(tmp_path / "kernels.csv", [_r("reference", 95, 4.0), _r("fused", 95, 3.0),
                                           _r("fused", 95, 1.0, ts="2026-02-01T00:00:00+00:00"),
                                           _r("reference", 95, 100.0, unit="GB/s")])
    append_rows(tmp_path / "tasks.csv", [
        _r("reference", n, v, bench="tasks_step", mode="p29", x_name="n_id") for n, v in ((8, 10.0), (840, 10.2))] + [
        _r("reference", 840, 0.5, unit="s", bench="tasks_startup", mode="p29", x_name="n_id"),
        _r("reference", 9408, 7.0, unit="s", bench="tasks_startup", mode="p97", x_name="n_id")])
    md = bench_render.write(tmp_path).read_text()
    assert md.startswith("# Benchmark results") and "do not edit by hand" in md
    line = next(s for s in md.splitlines() if s.startswith("| forward | T=95 |") and "×" in s)
    assert "| 4 " in line and "| 1 " in line and "4.00×" in line  # the latest fused row, 4× the reference
    assert "✓ step time flat across n_id — p29" in md
    assert "✓ start-up at p29" in md and "✗ start-up at p97" in md
    assert md.index("## kernels.csv") < md.index("## tasks.csv")



def test_unreadable_csvs_are_named(tmp_path):
    """merge and render name the file they cannot read (#21); a CSV of other columns is not rendered."""
    from fastgrok.bench.core import merge
    src = tmp_path / "src"
    src.mkdir()
    (src / "kernels.csv").write_bytes(",".join(FIELDS).encode() + b"\nattention,caf\xe9\n")  # latin-1
    for call in (lambda: merge(src, tmp_path / "out"), lambda: bench_render.render(src)):
        with pytest.raises(ValueError, match=r"kernels\.csv: not UTF-8 text \(byte \d+\), not a benchmark CSV$"):
            call()
    (src / "kernels.csv").write_text(",".join(FIELDS) + "\nattention,fused\n")
    with pytest.raises(ValueError, match=r"kernels\.csv: row 1 has 2 fields, the header 14$"):
        bench_render.render(src)
    bad = _r("fused", 95, 1.0)
    bad["p50"] = "fast"
    (src / "kernels.csv").unlink()
    append_rows(src / "kernels.csv", [bad])
    with pytest.raises(ValueError, match=r"kernels\.csv: a row with a bad value \(ValueError: could not convert"):
        bench_render.render(src)
    (src / "kernels.csv").unlink()
    append_rows(src / "kernels.csv", [_r("fused", 95, 1.0)])
    (src / "cpu_phenomenon.csv").write_text("group,label,p\na,b,7\n")  # as bench_results/ holds one
    md = bench_render.render(src)
    assert "## kernels.csv" in md and "Not rendered (not long-format benchmark rows): cpu_phenomenon.csv." in md


# ---- smoke: every suite, --quick, on CPU ------------------------------------------------------------
def test_quick_smoke_every_suite(tmp_path, one_thread):
    recs = run_suites(list(SUITES), CPU, tmp_path, quick=True, log=None)
    for name, rec in recs.items():
        assert rec.rows, name
        assert not [n for n in rec.notes if " failed: " in n], rec.notes
        rows = read_rows(tmp_path / f"{name}.csv")
        assert len(rows) == len(rec.rows)
        assert all(float(r["p50"]) > 0 and r["device"].startswith("cpu") for r in rows)
    kernels = read_rows(tmp_path / "kernels.csv")
    assert {r["benchmark"] for r in kernels} == set(bench_kernels.OPS)
    assert {r["mode"] for r in kernels if r["benchmark"] == "attention"} == {"forward", "backward", "full"}
    assert {"ms", "GB/s", "TFLOP/s"} <= {r["unit"] for r in kernels}
    train = read_rows(tmp_path / "train.csv")
    assert {r["provider"] for r in train} == {"reference", "host-pipeline"}
    assert {"ms", "steps/s", "tokens/s", "TFLOP/s"} <= {r["unit"] for r in train}
    tasks = read_rows(tmp_path / "tasks.csv")
    assert {r["benchmark"] for r in tasks} == {"tasks_step", "tasks_startup", "tasks_eval"}
    assert {r["x"] for r in tasks if r["benchmark"] == "tasks_step" and r["mode"] == "p29"} == {"8", "840"}
    md = bench_render.write(tmp_path).read_text()
    assert "## kernels.csv" in md and "### train_step" in md and "Goals:" in md


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # torch.compile's own
def test_quick_compiled_provider(tmp_path, one_thread):
    """torch.compile costs seconds a graph on CPU: one op, one shape."""
    rec = Recorder(tmp_path / "kernels.csv", log=None)
    bench_kernels.run(CPU, rec, quick=True, compile="main", ops=("embedding",),
                      providers=("reference", "reference-compiled"))
    assert not [n for n in rec.notes if " failed: " in n], rec.notes
    compiled = [r for r in rec.rows if r["provider"] == "reference-compiled"]
    assert {r["mode"] for r in compiled} == {"forward", "backward", "full"}
    assert {r["x_name"] for r in compiled} >= {"shape"}


# ---- CLI --------------------------------------------------------------------------------------------
def _cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "fastgrok", "bench", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_cli_render_and_errors(tmp_path):
    append_rows(tmp_path / "train.csv", [_r("reference", "A", 3.0, bench="train_step", mode="step", x_name="config")])
    r = _cli("render", "--out-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "train_step" in (tmp_path / "README.md").read_text()
    if not torch.cuda.is_available():
        r = _cli("kernels", "--quick", "--device", "cuda", "--out-dir", str(tmp_path / "none"))
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "CUDA" in r.stderr, r.stderr
        assert not (tmp_path / "none").exists()
    r = _cli("everything")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_cli_appends_without_overwriting(tmp_path, one_thread):
    """One real CLI run (the tasks suite, quick) into a folder that already holds rows."""
    old = [_r("reference", 8, 1.0, bench="tasks_step", mode="p29", x_name="n_id")]
    append_rows(tmp_path / "tasks.csv", old)
    r = _cli("tasks", "--quick", "--out-dir", str(tmp_path))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    rows = read_rows(tmp_path / "tasks.csv")
    assert rows[0]["timestamp"] == old[0]["timestamp"] and len(rows) > 1
    with open(tmp_path / "tasks.csv") as f:
        assert sum(1 for line in csv.reader(f) if line[0] == "benchmark") == 1
    assert "tasks_step" in r.stdout and (tmp_path / "README.md").exists()


def test_render_names_the_statistic_and_sets_the_paper_loop_beside_ours(tmp_path):
    """Ratios say they are medians; routed providers sit after their base; the paper's loop gets its own
    comparison with its mean and its median (the train_step rows' medians are of 10-step window means)."""
    step = lambda p, v, mode="step": _r(p, "paper-d4", v, bench="train_step", mode=mode, x_name="config")  # noqa: E731
    append_rows(tmp_path / "train.csv", [step("reference", 40.0), step("fused-compiled (embedding: reference)", 10.0),
                                         step("fused-compiled", 20.0), step("paper-code", 36.0),
                                         step("paper-code", 42.0, mode="step-mean")])
    md = bench_render.render(tmp_path)
    head = next(s for s in md.splitlines() if s.startswith("| mode | x |"))
    assert "fused-compiled × (median)" in head and "reference's median ÷ the provider's" in md
    assert head.index("| fused-compiled |") < head.index("fused-compiled (embedding: reference)") < head.index("paper-code")
    assert "| fused-compiled | 20 | 2.10× | 1.80× |" in md  # paper mean 42 ÷ 20, median 36 ÷ 20
    assert "| fused-compiled (embedding: reference) | 10 | 4.20× | 3.60× |" in md


def test_h200_import_relabels_full_model_mfu_and_adds_executed_and_paper_rows(tmp_path):
    """benchmarks/import_h200_20261204.py: full-model TFLOP/s and MFU % relabelled, executed ones derived
    from the ms quantiles, the paper's loop as paper-code rows (median `step`, mean `step-mean`)."""
    import importlib.util
    import json

    from fastgrok.trainer import train_flops_per_step

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "import_h200_20261204.py"
    spec = importlib.util.spec_from_file_location("import_h200", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    src = tmp_path / "src"
    gpu = dict(device="NVIDIA H200", torch="2.11.0+cu130", triton="3.6.0", git_sha="6f843f4")
    ms = _r("fused-compiled", "paper-d4", 20.0, bench="train_step", mode="step", x_name="config") | gpu
    mfu = ms | dict(unit="MFU %", p50="37.7", p20="37", p80="38")
    append_rows(src / "train.csv", [ms, mfu])
    (src / "paper_code_h200.json").write_text(json.dumps(
        {"torch": "2.11.0+cu130", "ms_per_step": {"median": 36.0, "mean": 42.0}}))
    assert mod.main([str(src), str(tmp_path / "stage")]) == 0
    rows = {(r["provider"], r["mode"], r["unit"]): r for r in read_rows(tmp_path / "stage" / "train.csv")}
    assert rows[("fused-compiled", "step", "MFU % (full model)")]["p50"] == "37.7"
    executed = 100 * train_flops_per_step(Config.preset("paper-d4")) / 989e12 / 20e-3
    got = rows[("fused-compiled", "step", "MFU %")]
    assert float(got["p50"]) == pytest.approx(executed, rel=1e-5) and got["timestamp"] == ms["timestamp"]
    assert float(got["p20"]) < float(got["p50"]) < float(got["p80"])  # a rate's p20 comes from the time's p80
    assert float(rows[("paper-code", "step-mean", "steps/s")]["p50"]) == pytest.approx(1e3 / 42.0, rel=1e-5)
    assert rows[("paper-code", "step", "ms")]["git_sha"].startswith("ICL_Modular_Arithmetic@")
    assert mod.main([str(src), str(tmp_path / "stage")]) == 2  # a staging folder already written: refused
