"""Weights that travel: a run folder or a paper-format checkpoint as a folder of plain files (`fastgrok export`).

An export folder holds
    model.safetensors   the model's weights under fastgrok's (= the paper code's) parameter names; the tied
                        head is stored once, as transformer.wte.weight
    config.json         the resolved config (a paper checkpoint's: its model fields, its task fields from its
                        name or the flags given)
    tasks.json          the task set: pre-training and o.o.d. task vectors, train and test input points
    export.json         where it came from: source, checkpoint file, step, fastgrok version, format
`load_exported(DIR)` builds the GPT back from the first two with config.py, model.py and safetensors alone
(no trainer, no pickle). `--format transformer-lens` writes a TransformerLens model instead
(interop.export_transformer_lens).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import runfolder
from .checkpoint import CheckpointError, atomic_write_text, clean_state_dict
from .config import Config

WEIGHTS, TASKS, EXPORT = "model.safetensors", "tasks.json", "export.json"
TIED = "lm_head.weight"  # stored as transformer.wte.weight (safetensors holds no shared tensors)


def need(module: str, extra: str) -> Any:
    """Import an optional dependency, or one line naming the extra that installs it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(f"{module} is not installed: pip install \"fastgrok[{extra}]\"") from None


@dataclass
class Loaded:
    """A model to export, with what it was trained on."""

    model: torch.nn.Module
    cfg: Config
    source: str
    checkpoint: str
    step: int | None


def _reference(cfg: Config) -> Config:
    """An exported model runs anywhere: the reference backend (parameter names are shared by both)."""
    return cfg.override(backend="reference", attention=None, embedding=None, batchgen=None)


def open_model(source: str | Path, checkpoint: str | None = None, fields: dict[str, Any] | None = None) -> Loaded:
    """A run folder (last.pt, else best.pt, as analyze; `checkpoint` picks one), a run's own checkpoint file, or a
    paper-format checkpoint (task fields from its name and `fields`): read by analyze's loader, with its checks."""
    from .analysis.source import open_source
    s = open_source(source, checkpoint=checkpoint, device="cpu", fields=fields)
    return Loaded(s.model.eval(), _reference(s.cfg), s.source, s.checkpoint, s.step)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict to store: contiguous fp32 CPU copies, the tied head once."""
    sd = clean_state_dict(model.state_dict())
    return {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in sd.items() if k != TIED}


def task_lists(cfg: Config) -> dict[str, Any]:
    from .tasks import make_tasks
    t = make_tasks(cfg.task)
    return {"p": t.p, "pretrain": t.pretrain.tolist(), "ood": t.ood.tolist(),
            "train_inputs": t.train_inputs.tolist(), "test_inputs": t.test_inputs.tolist()}


def _out_dir(loaded: Loaded, out: str | Path | None, fmt: str) -> Path:
    if out is not None:
        if str(out) == "":
            raise ValueError("--out '' names no folder")
        return Path(out)
    src = Path(loaded.source)
    suffix = "export" if fmt == "safetensors" else "tl"
    return src / suffix if src.is_dir() else src.with_name(f"{src.stem}.{suffix}")


def _provenance(loaded: Loaded, fmt: str) -> dict[str, Any]:
    from . import __version__
    return {"format": fmt, "source": loaded.source, "checkpoint": loaded.checkpoint, "step": loaded.step,
            "fastgrok": __version__, "torch": torch.__version__}


def write_safetensors(loaded: Loaded, out: Path) -> list[Path]:
    st = need("safetensors.torch", "safetensors")
    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": "fastgrok", "step": str(loaded.step)}
    tmp = out / f".{WEIGHTS}.tmp"
    st.save_file(weights(loaded.model), str(tmp), metadata=meta)
    tmp.replace(out / WEIGHTS)
    atomic_write_text(json.dumps(loaded.cfg.to_dict(), indent=2), out / runfolder.CONFIG)
    atomic_write_text(json.dumps(task_lists(loaded.cfg)), out / TASKS)
    atomic_write_text(json.dumps(_provenance(loaded, "safetensors"), indent=2), out / EXPORT)
    return [out / WEIGHTS, out / runfolder.CONFIG, out / TASKS, out / EXPORT]


def output_folder(source: str | Path, fmt: str, out: str | Path | None, checkpoint: str | None,
                  fields: dict[str, Any] | None) -> tuple[Loaded, Path]:
    """The model to export and the folder to write (default: RUN/export/ or RUN/tl/, CKPT.export/ or CKPT.tl/
    beside a checkpoint file)."""
    loaded = open_model(source, checkpoint, fields)
    folder = _out_dir(loaded, out, fmt)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {str(folder)!r} is a file, not a folder")
    return loaded, folder


def export(source: str | Path, out: str | Path | None = None, checkpoint: str | None = None,
           fields: dict[str, Any] | None = None) -> list[Path]:
    """Export a run folder or a paper checkpoint as safetensors; returns the files written.
    (`--format transformer-lens` is fastgrok.interop.export_transformer_lens.)"""
    need("safetensors.torch", "safetensors")  # before the model is loaded
    return write_safetensors(*output_folder(source, "safetensors", out, checkpoint, fields))


def exported_config(folder: str | Path) -> Config:
    """The resolved config of an export folder."""
    path = Path(folder) / runfolder.CONFIG
    try:
        return Config.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ValueError(f"{str(folder)!r} is not an export folder (no {runfolder.CONFIG})") from None
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{path} is unreadable or not a config: {e}") from None


def load_exported(folder: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The GPT of an export folder (model.safetensors + config.json), in eval mode; needs no trainer."""
    st = need("safetensors.torch", "safetensors")
    from .model import GPT
    cfg = exported_config(folder)
    path = Path(folder) / WEIGHTS
    if not path.is_file():
        raise ValueError(f"{str(folder)!r} holds no {WEIGHTS}")
    try:
        sd = st.load_file(str(path))
    except Exception as e:  # safetensors raises its own error kinds for a damaged file
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({type(e).__name__}: {e})") from None
    sd[TIED] = sd.get("transformer.wte.weight")
    model = GPT(_reference(cfg).model)
    try:
        model.load_state_dict(sd)
    except (RuntimeError, TypeError) as e:
        raise CheckpointError(f"{path} does not fit {runfolder.CONFIG}: {str(e).splitlines()[0][:200]}") from None
    return model.to(device).eval()
