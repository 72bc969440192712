"""benchmarks/gpu_check.sh and the suites it runs, rehearsed on the CPU at toy size (fused kernels under
Triton's interpreter, graphs compiled with aot_eager), so the first GPU call can fail only on the GPU.
Rows go to tmp_path, never to bench_results/; nothing here asserts a speed."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastgrok.bench.cli import EXTRA, run_suites
from fastgrok.bench.core import FIELDS, TOY, append_rows, merge, read_rows
from fastgrok.bench.train import train_configs

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"



def _failures(rec):
    return [n for n in rec.notes if " failed: " in n]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's own
def test_stages_at_toy_size(tmp_path, one_thread):
    """Stages 1, 3, 4 and 5 of gpu_check through the same entry point as the CLI, every provider included."""
    recs = run_suites(["ceilings", "kernels", "profile"], CPU, tmp_path, compile="main", log=None, toy=True,
                      compile_backend="aot_eager", ops=("embedding", "batchgen"), configs=("paper-d4",), top=5)
    recs |= run_suites(["train"], CPU, tmp_path, compile="all", log=None, toy=True, compile_backend="aot_eager",
                       batch_sizes=(1024, 2048), providers=("fused-compiled", "reference", "host-pipeline"))
    for name, rec in recs.items():
        assert rec.rows and not _failures(rec), (name, rec.notes)
    ceilings = read_rows(tmp_path / "ceilings.csv")
    assert {r["benchmark"] for r in ceilings} == {"copy", "matmul"}
    assert {"GB/s", "TFLOP/s"} <= {r["unit"] for r in ceilings}
    kernels = read_rows(tmp_path / "kernels.csv")
    assert {(r["benchmark"], r["provider"]) for r in kernels} == {
        (op, p) for op in ("embedding", "batchgen") for p in ("reference", "reference-compiled", "fused")}
    assert "shape" in {r["x_name"] for r in kernels} and not {"n_embd", "n_shots"} & {r["x_name"] for r in kernels}
    train = read_rows(tmp_path / "train.csv")
    assert {(r["provider"], r["x"]) for r in train if r["unit"] == "ms"} == {
        (p, x) for p in ("fused-compiled", "reference", "host-pipeline") for x in ("toy", "toy B16")}
    profile = read_rows(tmp_path / "profile.csv")
    ranks = [r["x"] for r in profile if r["unit"] == "ms"]
    assert ranks[0].startswith("#00 all") and len(ranks) == 6 and ranks[1].startswith("#01 ")
    assert {r["provider"] for r in profile} == {"fused-compiled"}
    shares = [float(r["p50"]) for r in profile if r["unit"] == "% of kernel time"][1:]
    assert 0 < sum(shares) <= 100.0001 and shares == sorted(shares, reverse=True)


def test_toy_batch_sizes_scale_and_names_are_checked():
    cfgs = train_configs(CPU, False, batch_sizes=(1024, 4096), toy=True)
    assert {n: c.train.batch_size for n, c in cfgs.items()} == {"toy": TOY["batch_size"], "toy B32": 32}
    with pytest.raises(ValueError, match="paper-d9"):
        train_configs(torch.device("cuda"), False, names=("paper-d9",))
    with pytest.raises(ValueError, match="unknown train provider"):
        run_suites(["train"], CPU, None, log=None, providers=("fastest",))


def _script(*args, env_extra=None, timeout=600):
    env = {**os.environ, "PYTHON": sys.executable, **(env_extra or {})}
    env.pop("TRITON_INTERPRET", None)  # the script sets it itself in a dry run
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=timeout)


@pytest.mark.slow
def test_script_dry_run_ceilings_and_paper_run(tmp_path):
    """The script's own plumbing (options, limits, summary, exit status) and stage 6, the time-boxed training
    run stopped by its timer's SIGINT, into a given folder."""
    out = tmp_path / "out"
    r = _script("--dry-run", "--only", "1,6", str(out), env_extra={"GPU_CHECK_RUN_SECONDS": "4"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "1 ceilings: ok" in r.stdout and "6 paper run: ok" in r.stdout and "2 gpu tests" not in r.stdout
    assert (out / "ceilings.csv").is_file() and (out / "README.md").is_file()
    rows = read_rows(out / "paper_run.csv")
    assert {r["unit"] for r in rows} >= {"ms", "train loss", "train acc", "ood_test acc"}
    (jsonl,) = out.glob("paper_run-*.jsonl")
    steps = [json.loads(line)["step"] for line in jsonl.read_text().splitlines()]
    assert steps and steps == sorted(steps) and steps[0] == 2
    assert sorted({int(r["x"]) for r in rows}) == steps


def test_script_rejects_unknown_options():
    r = _script("--fast")
    assert r.returncode == 2 and "unknown option --fast" in r.stderr


def test_merge_appends_only_new_rows(tmp_path):
    def one(x):
        return {**{f: "1" for f in FIELDS}, "benchmark": "copy", "x": x}
    here, there = tmp_path / "here", tmp_path / "there"
    append_rows(here / "ceilings.csv", [one("a")])
    append_rows(there / "ceilings.csv", [one("a"), one("b")])
    append_rows(there / "profile.csv", [one("c")])
    (there / "paper_run-1.jsonl").write_text("{}\n")
    lines = merge(there, here)
    assert [r["x"] for r in read_rows(here / "ceilings.csv")] == ["a", "b"]
    assert [r["x"] for r in read_rows(here / "profile.csv")] == ["c"]
    assert (here / "paper_run-1.jsonl").read_text() == "{}\n" and len(lines) == 3
    merge(there, here)  # again: nothing new
    assert len(read_rows(here / "ceilings.csv")) == 2
    with pytest.raises(ValueError, match="not a folder"):
        merge(tmp_path / "none", here)


def test_extra_suites_are_not_in_all():
    assert set(EXTRA) == {"ceilings", "profile", "paper-run", "sm90"}
