"""Options for running benchmarks/bench_kernels.py under pytest-benchmark (CPU)."""
from pathlib import Path

import pytest

from fastgrok.bench.core import Recorder


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("fastgrok bench")
    g.addoption("--bench-quick", action="store_true", help="small shapes (a smoke run)")
    g.addoption("--bench-compile", default="main", choices=("all", "main", "off"),
                help="torch.compile provider at every shape, the paper's only (default) or none")
    g.addoption("--bench-out", default=None, metavar="DIR",
                help="also append the rows to DIR/kernels.csv (default: pytest-benchmark's report only)")


@pytest.fixture(scope="session")
def bench_recorder(request: pytest.FixtureRequest) -> Recorder:
    out = request.config.getoption("--bench-out")
    return Recorder(Path(out) / "kernels.csv" if out else None, log=None)
