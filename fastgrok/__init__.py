"""fastgrok: a fast trainer for the in-context modular-arithmetic experiments of "Learning to grok"
(He et al., 2024, arXiv 2406.02550). Nothing here imports triton; kernels load on demand."""
from __future__ import annotations

__version__ = "0.1.0"


def _source_tree_kernels() -> None:
    """Imported straight from a checkout (its root on sys.path: PYTHONPATH=., as on the GPU machines, or
    `python -m` from the root): the kernels sit in the top-level kernels/ folder, which an install maps to
    fastgrok.kernels (pyproject's package-dir). Let the package's search path reach that folder too."""
    import os
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file() or not (root / "kernels" / "__init__.py").is_file():
        return  # an installed wheel: the kernels are inside the package
    on_path = any(Path(p or os.getcwd()).resolve() == root for p in sys.path if isinstance(p, str))
    if on_path and str(root) not in __path__:  # noqa: F821  (the package's own __path__)
        __path__.append(str(root))  # noqa: F821


_source_tree_kernels()

# The public names load on first use, so `fastgrok train` reaches its own Ctrl-C handling before torch is
# imported (a Ctrl-C during start-up is then one line, not a traceback) and `--help` is quick.
_EXPORTS = {
    "Config": "config", "TaskConfig": "config", "ModelConfig": "config", "TrainConfig": "config",
    "Tasks": "tasks", "make_tasks": "tasks", "SPLITS": "data", "eval_batch": "data", "generate_batch": "data",
    "sample_batch": "data", "split_source": "data", "GPT": "model", "train": "trainer", "TrainResult": "trainer",
    "load_reference_checkpoint": "checkpoint", "save_reference_checkpoint": "checkpoint",
    "load_exported": "export",
}
__all__ = list(_EXPORTS)
# The public submodules, imported on first access too: `import fastgrok; fastgrok.sweep.open_sweep(...)`.
# (`fastgrok.train` is the function above; its module is `fastgrok.trainer`.)
_SUBMODULES = ("config", "tasks", "data", "model", "trainer", "runfolder", "distributed", "sweep", "ops", "backends",
               "metrics", "checkpoint", "paper", "sets", "memory", "envinfo", "bench", "analysis",
               "export", "interop", "tracking")


def __getattr__(name: str):
    import importlib
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'fastgrok' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))

