"""Shared test set-up. Triton's interpreter must be switched on before anything imports triton."""
import os

# Tests measure no speed; one thread each keeps them fast on a shared 2-core machine (OpenMP
# spin-waits collapse when oversubscribed). Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import signal  # noqa: E402

import torch  # noqa: E402

# A test run started as a background job (`cmd &` in a script) inherits SIGINT ignored; the Ctrl-C tests
# need Python's own handler (and their subprocesses the default disposition, which exec then gives them).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")
    config.addinivalue_line("markers", "slow: longer CPU test")
    config.addinivalue_line("markers", "slurm: needs a SLURM cluster (tests/slurm_cluster.sh; skipped without one)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """Timing runs on one thread: two threads on a busy 2-core machine spin-wait for each other."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
