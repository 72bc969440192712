"""fastgrok: a fast trainer for the in-context modular-arithmetic experiments of "Learning to grok"
(He et al., 2024, arXiv 2406.02550). Nothing here imports triton; kernels load on demand."""
from __future__ import annotations

__version__ = "0.1.0"

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
