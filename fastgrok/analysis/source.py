"""What `fastgrok analyze` studies: a trained model with the config and task sets it was trained on.

A SOURCE is a fastgrok run folder (its best.pt or last.pt, with config.json: the tasks are rebuilt from it,
the very ones trained on) or a checkpoint file in the paper code's format. Such a file does not hold p (its
vocabulary has ~18 extra tokens) nor the task set: they come from its name, when it is the paper's (as
`fastgrok-paper` and the paper's scripts write it), and from config fields given beside it (--p, --n-pl,
…), which take precedence.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import runfolder
from ..checkpoint import CheckpointError, clean_state_dict, load_file, load_reference_checkpoint
from ..config import Config, FieldError
from ..tasks import Tasks, make_tasks
from . import checks
from .algorithms import check_prime

CHECKPOINTS = ("last", "best")  # the default order: last.pt (best.pt was chosen on o.o.d. test accuracy)
_CKPT_FILE = {"best": runfolder.BEST, "last": runfolder.LAST}

# The paper's checkpoint name (pre_training/icl_grokking.py; fastgrok.paper.run_stem): the fields it holds.
_PAPER_NAME = re.compile(
    r"parale(?P<parallelogram>True|False)_pltask(?P<pltask>\d+)_.*?_p(?P<p>\d+)_base(?P<base>\d+)"
    r"_row(?P<n_point_per_row>\d+)_ntask(?P<ntask>\d+)_nvar(?P<n_var>\d+)_dsplit(?:True|False)"
    r"_dfrac(?P<data_pct>[\d.]+)_(?P<act_name>[A-Za-z]+)_n(?P<n_embd>\d+)_h(?P<n_head>\d+)_d(?P<n_layer>\d+)"
    r"_lctx\d+_I(?P<seed>\d+)_dI(?P<data_seed>\d+)_[A-Za-z]+_bs(?P<bs>\d+)")


@dataclass
class Subject:
    """A model to study, in eval mode, and what it was trained on."""

    model: torch.nn.Module
    cfg: Config
    tasks: Tasks
    source: str          # the run folder or checkpoint file
    checkpoint: str      # the file the weights came from
    step: int | None     # the training step of those weights, where known
    out_dir: Path        # where the analysis writes by default

    @property
    def p(self) -> int:
        return self.cfg.task.p


def paper_name_fields(name: str) -> dict[str, Any] | None:
    """Config fields read off a checkpoint name in the paper's format, or None if it is not one."""
    m = _PAPER_NAME.search(name)
    if m is None:
        return None
    from ..paper import check_flags, parse, to_config
    g = m.groupdict()
    parallelogram = g["parallelogram"] == "True"
    pl = int(g["pltask"])
    n_pl = pl // 4 if parallelogram else pl
    argv = [f"--parallelogram={g['parallelogram']}", f"--n_tasks_pl={n_pl}", f"--n_tasks_rd={int(g['ntask']) - pl}",
            f"--p={g['p']}", f"--base={g['base']}", f"--n_point_per_row={g['n_point_per_row']}",
            f"--n_var={g['n_var']}", f"--data_pct={g['data_pct']}", f"--act_name={g['act_name']}",
            f"--n_embd={g['n_embd']}", f"--n_head={g['n_head']}", f"--n_layer={g['n_layer']}", f"--seed={g['seed']}",
            f"--data_seed={g['data_seed']}", f"--bs={g['bs']}", "--device=cpu"]
    try:
        ns, _, _ = parse(argv)
        check_flags(ns)
        cfg = to_config(ns)
    except (SystemExit, ValueError, TypeError):
        return None
    t = cfg.task
    fields = dict(p=t.p, n_var=t.n_var, selection=t.selection, n_rd=t.n_rd, alpha=t.alpha, data_seed=t.data_seed,
                  n_shots=t.n_shots, max_ood=t.max_ood, sampling=t.sampling, mlp=cfg.model.mlp)
    fields.update(dict(n_pl=t.n_pl) if t.selection == "parallelogram" else dict(n_id=t.n_id))
    step = re.search(r"_t(\d+)_T\d+", name)
    fields["_step"] = int(step.group(1)) if step else None
    return fields


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={name!r} is not a torch device (cpu, cuda, cuda:1, auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); use cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has GPUs 0 … {torch.cuda.device_count() - 1}")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: analyze runs on cpu or cuda")
    return dev


def _ready(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    return model.to(device).eval()


def _reference_cfg(cfg: Config) -> Config:
    """The model's config with the reference backend wherever a fused op cannot run here."""
    from ..backends import check_runnable
    try:
        check_runnable(cfg.model, torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
        return cfg
    except ValueError:
        return cfg.override(backend="reference", attention=None, embedding=None, batchgen=None)


def from_run(run_dir: Path, checkpoint: str | None, device: torch.device) -> Subject:
    from ..model import GPT
    cfg = _reference_cfg(runfolder.load_config(run_dir))
    names = [checkpoint] if checkpoint else list(CHECKPOINTS)
    path = next((run_dir / _CKPT_FILE[n] for n in names if (run_dir / _CKPT_FILE[n]).is_file()), None)
    if path is None:
        which = " or ".join(_CKPT_FILE[n] for n in names)
        raise ValueError(f"run folder {str(run_dir)!r} has no checkpoint ({which}): train it first "
                         f"(fastgrok train --resume {run_dir})")
    state = load_file(path)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path} holds no model state_dict")
    checks.check_saved_config(state, cfg, path, runfolder.CONFIG)
    model = GPT(cfg.model)
    try:
        model.load_state_dict(clean_state_dict(state["model"]))
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit the model of {runfolder.CONFIG}: {str(e).splitlines()[0]}") from None
    step = state.get("step")
    return Subject(_ready(model, device), cfg, make_tasks(cfg.task), str(run_dir), str(path),
                   int(step) if isinstance(step, int) else None, run_dir / "analysis")


def from_checkpoint(path: Path, fields: dict[str, Any], device: torch.device) -> Subject:
    """A paper-format checkpoint: model fields from its weights, task fields from its name and `fields`."""
    from_name = paper_name_fields(path.name) or {}
    step = from_name.pop("_step", None)
    checks.check_name_agrees(path, from_name, fields)
    task = {**from_name, **fields}
    if "p" not in task:
        raise ValueError(f"{path.name}: p cannot be known (the name is not in the paper's format and a checkpoint "
                         "does not hold p): pass --p (and the task fields it was trained with: --n-pl, --alpha, "
                         "--data-seed, --n-shots)")
    check_prime(task["p"])
    model_fields = {k: v for k, v in task.items() if k in ("mlp", "backend", "rope_theta")}
    try:
        model = load_reference_checkpoint(path, **model_fields)
    except TypeError as e:
        raise ValueError(f"{path}: {e}") from None
    mc = model.cfg
    # the paper's headline task set where neither the name nor a flag says otherwise (as the "paper" preset)
    flat = {} if {"n_pl", "n_id", "selection"} & task.keys() else {"n_pl": 128}
    flat.update({"alpha": 0.6, **{k: v for k, v in task.items() if k not in model_fields}})
    flat.update(depth=mc.depth, n_embd=mc.n_embd, n_head=mc.n_head, mlp=mc.mlp, widen=mc.widen,
                vocab_size=mc.vocab_size, rope_theta=mc.rope_theta, backend=mc.backend, device="cpu")
    cfg = Config.from_flat(flat)
    if mc.vocab_size < cfg.task.p:
        raise FieldError("p", f"p={cfg.task.p} does not fit the checkpoint's vocabulary of {mc.vocab_size} tokens")
    return Subject(_ready(model, device), cfg, make_tasks(cfg.task), str(path), str(path), step,
                   path.with_name(path.stem + ".analysis"))


def open_source(source: str | Path, *, checkpoint: str | None = None, device: str = "auto",
                fields: dict[str, Any] | None = None) -> Subject:
    """The Subject of a run folder or a paper-format checkpoint file (see the module docstring)."""
    if not isinstance(source, (str, Path)) or str(source) == "":
        raise TypeError(f"source must be a run folder or a checkpoint path, got {source!r:.60}")
    if checkpoint is not None and checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint={checkpoint!r} is not one of {', '.join(CHECKPOINTS)}")
    path = Path(source)
    dev = _device(device)
    fields = dict(fields or {})
    if path.is_dir():
        if fields:
            raise ValueError(f"a run folder's config is saved in it: drop {', '.join(sorted(fields))}")
        subject = from_run(path, checkpoint, dev)
    elif path.is_file() and path.name in _CKPT_FILE.values() and (path.parent / runfolder.CONFIG).is_file():
        if fields or checkpoint is not None:  # a run's own last.pt / best.pt: studied with its folder's config
            raise ValueError(f"{path} is a run folder's checkpoint: its config is saved beside it; drop "
                             f"{', '.join(sorted(fields)) or '--checkpoint'}")
        subject = from_run(path.parent, next(k for k, v in _CKPT_FILE.items() if v == path.name), dev)
    elif path.is_file():
        if checkpoint is not None:
            raise ValueError("--checkpoint picks best.pt or last.pt in a run folder; this source is a file")
        subject = from_checkpoint(path, fields, dev)
    else:
        raise ValueError(f"{str(path)!r} does not exist (a run folder or a checkpoint file)")
    check_prime(subject.p)
    checks.check_weights(subject.model, subject.checkpoint)
    return subject
