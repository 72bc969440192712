"""benchmarks/gpu_lease.sh, the one prepared command of a GPU lease (gpu_check.sh, then kernel_ab.py), rehearsed
on the CPU (`--dry-run`) so a lease's one call can fail only on the GPU. Nothing here asserts a speed."""
import os
import subprocess
from pathlib import Path

from fastgrok.bench.core import read_rows

ROOT = Path(__file__).resolve().parent.parent


def _lease(*args: str, **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, OMP_NUM_THREADS="1", **env)
    full.pop("TRITON_INTERPRET", None)  # each script sets its own for a dry run
    return subprocess.run(["bash", "benchmarks/gpu_lease.sh", *args], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=600)


def test_dry_run_runs_the_check_then_the_ab(tmp_path):
    r = _lease("--dry-run", str(tmp_path / "out"), GPU_LEASE_ONLY="2",
               GPU_LEASE_AB_ARGS="--candidates split-w4 --finalists 0")
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-2000:])
    assert r.stdout.index("=== gpu_check") < r.stdout.index("kernel_ab |")  # gpu_check first, as the brief asks
    assert "gpu_check 0 stage(s) failed or cut; kernel_ab exit 0" in r.stdout
    assert read_rows(tmp_path / "out" / "check" / "ceilings.csv")
    ab = read_rows(tmp_path / "out" / "ab" / "kernels.csv")
    assert {r["provider"] for r in ab} >= {"fused-split-w4", "reference", "reference-compiled", "sdpa-math"}


def test_usage_errors_are_one_line(tmp_path):
    for args in ((), ("--nope", str(tmp_path)), (str(tmp_path / "a"), str(tmp_path / "b"))):
        r = _lease(*args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "gpu_lease" in r.stderr, (args, r)
