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

from .config import Config, ModelConfig, TaskConfig, TrainConfig  # noqa: E402
from .data import SPLITS, eval_batch, generate_batch, sample_batch, split_source  # noqa: E402
from .model import GPT  # noqa: E402
from .tasks import Tasks, make_tasks  # noqa: E402
from .train import TrainResult, train  # noqa: E402
from .checkpoint import load_reference_checkpoint, save_reference_checkpoint  # noqa: E402

__all__ = [
    "Config", "TaskConfig", "ModelConfig", "TrainConfig", "Tasks", "make_tasks", "sample_batch", "eval_batch",
    "generate_batch", "split_source", "SPLITS", "GPT", "train", "TrainResult", "load_reference_checkpoint",
    "save_reference_checkpoint",
]
