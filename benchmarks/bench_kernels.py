"""Kernel benchmarks: attention, embedding and batchgen in every provider (reference, reference
torch.compile, fused), modes forward / backward / full, at the paper's shapes and across a sweep.

    python benchmarks/bench_kernels.py [--quick] [--out-dir bench_results] [--device auto] [--compile main]
        the same as `fastgrok bench kernels`: do_bench on CUDA, wall-clock windows on CPU; appends
        to OUT_DIR/kernels.csv and re-renders OUT_DIR/README.md
    python -m pytest benchmarks/bench_kernels.py [--bench-quick] [--bench-out DIR] [--benchmark-autosave]
        the CPU cases through pytest-benchmark (its statistics, --benchmark-compare); with
        --bench-out the medians and 20/80 % quantiles are appended to DIR/kernels.csv as well
"""
from __future__ import annotations

import sys

import torch

from fastgrok.bench import kernels as bench_kernels
from fastgrok.bench.core import Timing


def pytest_generate_tests(metafunc) -> None:
    if "item" in metafunc.fixturenames:
        c = metafunc.config
        found = bench_kernels.items(torch.device("cpu"), quick=c.getoption("--bench-quick"),
                                    compile=c.getoption("--bench-compile"))
        metafunc.parametrize("item", found, ids=[i.id for i in found])


def test_kernel(benchmark, item, bench_recorder) -> None:
    work = item.setup()
    benchmark.group = f"{item.case.op}-{item.mode}-{item.case.labels[0][0]}"
    benchmark.extra_info.update(provider=item.provider, shape=dict(item.case.shape), bytes=work.nbytes)
    benchmark(work.fn)
    per_call = [d / benchmark.stats.iterations for d in benchmark.stats.stats.data]
    bench_recorder.add(item.rows(work, Timing.of(per_call)))


if __name__ == "__main__":
    from fastgrok.bench.cli import script_main
    sys.exit(script_main("kernels", description=__doc__.splitlines()[0]))
