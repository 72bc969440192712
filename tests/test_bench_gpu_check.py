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
    """The script's own plumbing (options, limits, summary, exit status) and stage 10, the time-boxed training
    run stopped by its timer's SIGINT, into a given folder."""
    out = tmp_path / "out"
    r = _script("--dry-run", "--only", "2,10", str(out), env_extra={"GPU_CHECK_RUN_SECONDS": "4"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 ceilings: ok" in r.stdout and "10 paper run: ok" in r.stdout and "1 gpu tests" not in r.stdout
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
    assert set(EXTRA) == {"ceilings", "profile", "paper-run", "sm90", "gpu-tests", "paper-code"}


# ---- commit stamping, the GPU tests' rows and the paper's loop, from a packed copy -------------------------

STANDIN = '''
import argparse, os, sys
sys.path.append(os.path.relpath(".."))  # as icl_grokking.py does: _src/ is found from its cwd's parent
import torch
import schedulefree, rotary_embedding_torch  # the paper's two extra imports (stub wheels here)
from _src.standin import tiny_model

p = argparse.ArgumentParser()  # strict: a flag the harness should not pass fails the run
for f in ("--device", "--mixed_precision", "--dist_backend"):
    p.add_argument(f)
for f in ("--n_layer", "--steps", "--warmup_steps", "--steps_per_record", "--n_val_step"):
    p.add_argument(f, type=int)
a = p.parse_args()
assert os.environ["RANK"] == "0" and os.environ["WORLD_SIZE"] == "1" and os.environ["MASTER_PORT"]
model = tiny_model(a.n_layer)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
for step in range(a.steps):
    loss = model(torch.ones(4, 8)).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
with open("../data/record.tab", "w") as f:  # the paper writes its records there: must land in a scratch folder
    f.write("step\\n")
with open(os.environ["STANDIN_LOG"], "a") as f:
    f.write(f"n_layer={a.n_layer} steps={a.steps} n_val_step={a.n_val_step} device={a.device}\\n")
'''
TINY_TESTS = '''
import pytest

@pytest.mark.gpu
def test_passes():
    pass

@pytest.mark.gpu
def test_fails():
    assert 1 == 2

@pytest.mark.gpu
def test_skips():
    pytest.skip("no reason")

def test_not_gpu():
    pass
'''


def _standin(root: Path) -> Path:
    """A folder shaped like the paper's repository: pre_training/icl_grokking.py, _src/, PAPER_COMMIT."""
    (root / "pre_training").mkdir(parents=True)
    (root / "_src").mkdir()
    (root / "pre_training" / "icl_grokking.py").write_text(STANDIN)
    (root / "_src" / "__init__.py").write_text("")
    (root / "_src" / "standin.py").write_text(
        "import torch\n\ndef tiny_model(depth):\n"
        "    return torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(depth)])\n")
    (root / "PAPER_COMMIT").write_text("abc1234\n")
    return root


def _wheel(dst: Path, name: str) -> Path:
    """A one-module wheel, by hand (the stand-ins of schedulefree and rotary_embedding_torch)."""
    import base64
    import hashlib
    import zipfile
    dist = f"{name}-0.0.1"
    files = {f"{name}.py": "STUB = True\n",
             f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n",
             f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
              f"{len(text.encode())}" for path, text in files.items()] + [f"{dist}.dist-info/RECORD,,"]
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record) + "\n"
    dst.mkdir(parents=True, exist_ok=True)
    whl = dst / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return whl


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def _outer_repo(path: Path) -> str:
    path.mkdir(parents=True)
    _git(path, "init", "-q")
    (path / "x.txt").write_text("x\n")
    _git(path, "add", "x.txt")
    _git(path, "commit", "-q", "-m", "outer")
    return _git(path, "rev-parse", "--short", "HEAD")


def test_stamp_from_a_copy_inside_another_repository(tmp_path, monkeypatch):
    from fastgrok.bench import stamp
    monkeypatch.delenv("FASTGROK_COMMIT", raising=False)
    outer_sha = _outer_repo(tmp_path / "outer")
    assert stamp.tree_commit(tmp_path / "outer") == outer_sha  # a repository's own root: git
    copy = tmp_path / "outer" / "tree"
    copy.mkdir()
    (copy / "a.py").write_text("")
    assert stamp.tree_commit(tmp_path / "outer") == outer_sha + "-dirty"  # an untracked file (packed too)
    assert stamp.tree_commit(copy) == "unknown"  # git answers with the outer repository's sha: not asked
    (copy / "FASTGROK_COMMIT").write_text("1234abc-dirty\n")
    assert stamp.tree_commit(copy) == "1234abc-dirty"
    monkeypatch.setenv("FASTGROK_COMMIT", "feedbee")
    assert stamp.tree_commit(copy) == "feedbee"  # the variable before the file
    assert stamp.tree_commit(tmp_path / "outer", env_var=None) == outer_sha + "-dirty"
    assert stamp.tree_commit(copy, "PAPER_COMMIT", env_var=None) == "unknown"


def test_gpu_tests_outcomes_and_window_samples(tmp_path):
    from fastgrok.bench.gputests import outcomes
    from fastgrok.bench.papercode import window_samples
    xml = tmp_path / "r.xml"
    xml.write_text('<testsuites><testsuite><testcase classname="tests.test_a" name="ok"/>'
                   '<testcase classname="tests.test_a" name="bad[x]"><failure message="m"/></testcase>'
                   '<testcase classname="tests.test_b" name="err"><error message="e"/></testcase>'
                   '<testcase classname="tests.test_b" name="sk"><skipped message="s"/></testcase>'
                   '</testsuite></testsuites>')
    counts, bad = outcomes(xml)
    assert dict(counts) == {"passed": 1, "failed": 1, "errors": 1, "skipped": 1}
    assert bad == [("failed", "tests.test_a::bad[x]"), ("error", "tests.test_b::err")]
    xml.write_text("<testsuites")
    with pytest.raises(ValueError, match="cannot be read"):
        outcomes(xml)
    # stamps[i] ends step i + 1: steps 3..6 after 2 warm-up steps, in windows of 2, each window's mean
    stamps = [0.0, 1.0, 3.0, 4.0, 8.0, 9.0, 100.0]
    assert window_samples(stamps, warmup=2, window=4, per_window=2) == [(4.0 - 1.0) / 2, (9.0 - 4.0) / 2]
    with pytest.raises(ValueError, match="7 optimizer steps stamped, 8 needed"):
        window_samples(stamps, warmup=2, window=6, per_window=2)


def _bench(*args, env_extra=None, cwd=ROOT):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "fastgrok", "bench", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_paper_code_refuses_in_one_line(tmp_path):
    """A folder that is not the paper's, and the paper's two packages missing: exit 2, one line naming them."""
    r = _bench("paper-code", "--device", "cpu", "--out-dir", str(tmp_path), "--paper-dir", str(tmp_path))
    assert r.returncode == 2 and "--paper-dir" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    paper = _standin(tmp_path / "paper")
    r = _bench("paper-code", "--device", "cpu", "--out-dir", str(tmp_path), "--paper-dir", str(paper))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "schedulefree, rotary_embedding_torch" in r.stderr and "wheels" in r.stderr
    assert not (tmp_path / "train.csv").exists()


@pytest.mark.slow
def test_script_dry_run_from_a_packed_copy(tmp_path):
    """gpu_pack.sh packs this tree, a stand-in of the paper's folder and two stub wheels into a folder inside
    another git repository; gpu_check.sh --dry-run there runs stage 1 (a tiny test folder: one pass, one
    failure, one skip) and stage 4 (the stand-in at depth 4 and 2, its packages installed from the wheels).
    Every fastgrok row carries this tree's commit, not the outer repository's; the paper's rows its own."""
    from fastgrok.bench.stamp import tree_commit
    env = {k: v for k, v in os.environ.items() if k != "FASTGROK_COMMIT"}
    ours = tree_commit(ROOT, env_var=None)
    outer_sha = _outer_repo(tmp_path / "outer")
    paper = _standin(tmp_path / "paper")
    for name in ("schedulefree", "rotary_embedding_torch"):
        _wheel(tmp_path / "wheels", name)
    tree = tmp_path / "outer" / "tree"
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_pack.sh"), str(tree), "--paper-dir", str(paper),
                        "--wheels", str(tmp_path / "wheels")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tree / "FASTGROK_COMMIT").read_text().strip() == ours != outer_sha
    assert (tree / "paper" / "PAPER_COMMIT").read_text().strip() == "abc1234"
    assert not (tree / ".git").exists() and (tree / "benchmarks" / "gpu_check.sh").is_file()

    tests = tmp_path / "tiny_tests"
    tests.mkdir()
    (tests / "test_tiny.py").write_text(TINY_TESTS)
    log = tmp_path / "standin.log"
    out = tmp_path / "out"
    env.pop("TRITON_INTERPRET", None)
    r = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", "--only", "1,4", "--paper-dir", "paper",
                        "--wheels", "wheels", str(out)], capture_output=True, text=True, cwd=tree, timeout=600,
                       env={**env, "PYTHON": sys.executable, "GPU_CHECK_TESTS": str(tests), "STANDIN_LOG": str(log)})
    text = r.stdout[-4000:] + r.stderr[-3000:]
    assert r.returncode == 1, text  # one stage failed: stage 1, its one failing test
    assert f"| git {ours}" in r.stdout and "1 gpu tests: FAILED" in r.stdout, text
    assert "4 paper code, depth 4 and 2: ok" in r.stdout, text

    rows = read_rows(out / "gpu_tests.csv")
    counts = {r["unit"]: float(r["p50"]) for r in rows if r["mode"] == "-m gpu"}
    assert counts["passed"] == 1 and counts["failed"] == 1 and counts["skipped"] == 1 and counts["errors"] == 0
    assert counts["s"] > 0
    assert [r["x"] for r in rows if r["mode"] == "failed"] == ["tiny_tests.test_tiny::test_fails"]
    train = read_rows(out / "train.csv")
    assert {r["git_sha"] for r in rows} == {ours} and {r["git_sha"] for r in train} == {"paper@abc1234"}
    assert {(r["provider"], r["benchmark"], r["x"]) for r in train} == {
        ("paper-code", "train_step", c) for c in ("paper-d4", "paper-d2")}
    assert {r["unit"] for r in train} == {"ms", "steps/s", "tokens/s", "s"}
    assert all(float(r["p50"]) > 0 for r in train)
    runs = log.read_text().splitlines()
    assert runs == [f"n_layer={d} steps=11 n_val_step=0 device=cpu" for d in (4, 2)]  # 3 + 6 + a margin of 2
    assert not (paper / "data").exists() and not (tree / "paper" / "data").exists()  # the copy is only read
