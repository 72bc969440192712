"""The GPU test run as rows: `pytest -m gpu` over the tree's tests, its outcome appended to gpu_tests.csv,
so a device's correctness lives beside its speed in bench_results/, not only in a log.

Rows (benchmark `gpu_tests`, provider `pytest`, mode `-m gpu`, x_name `tests`, x the paths run): one per
outcome count (units passed, failed, errors, skipped; the count in p50) and the run's wall time (s); then
one per test that failed or errored (mode `failed`/`error`, x_name `test`, x its node id, value 1).
Counts come from pytest's junit XML, so the run's own output goes to the log untouched. With `workers`
(and pytest-xdist importable) the tests run in that many processes: they check values, not speed.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import torch

from .core import Recorder, Timing, row
from .stamp import ROOT

OUTCOMES = ("passed", "failed", "errors", "skipped")


def outcomes(xml_path: str | Path) -> tuple[Counter, list[tuple[str, str]]]:
    """(counts per outcome, [(outcome, node id) of each failed or errored test]) from a junit XML file."""
    try:
        tree = ET.parse(xml_path)
    except (OSError, ET.ParseError) as e:
        raise ValueError(f"gpu-tests: pytest's report {xml_path} cannot be read: {e}") from None
    counts: Counter = Counter({k: 0 for k in OUTCOMES})
    bad = []
    for case in tree.getroot().iter("testcase"):
        cls, name = case.get("classname", ""), case.get("name", "")
        node = f"{cls}::{name}" if cls else name  # e.g. tests.test_kernels_attention::test_gpu_matches_reference[…]
        kinds = {child.tag for child in case}
        if "error" in kinds:
            counts["errors"] += 1
            bad.append(("error", node))
        elif "failure" in kinds:
            counts["failed"] += 1
            bad.append(("failed", node))
        elif "skipped" in kinds:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts, bad


def command(xml: Path, tests: tuple[str, ...], workers: int) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rfEs", f"--junitxml={xml}"]
    if workers > 1 and importlib.util.find_spec("xdist") is not None:
        cmd += ["-n", str(workers)]
    return cmd + list(tests)


def run(device: torch.device, rec: Recorder, *, quick: bool = False, compile: str = "main",
        tests: tuple[str, ...] | None = None, workers: int | None = None) -> None:
    """Run `pytest -m gpu` on `tests` (default: this tree's tests/) and record its outcome."""
    tests = tuple(tests) if tests else (str(ROOT / "tests"),)
    for t in tests:
        if not Path(t.split("::")[0]).exists():
            raise ValueError(f"--tests: {t!r} does not exist (an installed fastgrok has no tests/: run from a checkout)")
    workers = 0 if workers is None else workers
    if workers > 1 and importlib.util.find_spec("xdist") is None:
        rec.log(f"gpu-tests: pytest-xdist is not installed here, the tests run in one process (not {workers})")
    with tempfile.TemporaryDirectory(prefix="fastgrok-gpu-tests-") as tmp:
        xml = Path(tmp) / "report.xml"
        cmd = command(xml, tests, workers)
        rec.log("gpu-tests: " + " ".join(cmd))
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd)
        interrupted = False
        try:
            rc = proc.wait()
        except KeyboardInterrupt:  # gpu_check's time limit: pytest got the SIGINT too and writes its report
            interrupted = True
            try:
                rc = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
        seconds = time.perf_counter() - t0
        if not xml.is_file():
            rec.note(f"gpu-tests failed: pytest exited {rc} without a report" + (" (interrupted)" if interrupted else ""))
            return
        counts, bad = outcomes(xml)
    label = ",".join(Path(t).name if Path(t).is_dir() else t for t in tests)
    r = lambda mode, x_name, x, v, unit: row("gpu_tests", "pytest", mode, x_name, x, Timing(v, v, v), unit,  # noqa: E731
                                             device)
    rows = [r("-m gpu", "tests", label, counts[k], k) for k in OUTCOMES] + [r("-m gpu", "tests", label, seconds, "s")]
    rows += [r(kind, "test", node, 1, kind) for kind, node in bad]
    rec.add(rows, log=False)
    summary = ", ".join(f"{counts[k]} {k}" for k in OUTCOMES)
    rec.log(f"gpu-tests: {summary} in {seconds:.0f} s (pytest exit {rc}{', interrupted' if interrupted else ''})")
    if bad:
        rec.note(f"gpu-tests: {len(bad)} test(s) failed: " + ", ".join(node for _, node in bad))
    elif interrupted:
        rec.note("gpu-tests failed: interrupted before the end (the counts are of the tests that ran)")
    elif rc not in (0, 5):  # 5: nothing collected
        rec.note(f"gpu-tests failed: pytest exited {rc}")
    elif sum(counts.values()) == 0:
        rec.note("gpu-tests: no test is marked gpu under " + label)
