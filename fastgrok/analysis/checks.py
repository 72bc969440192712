"""What `fastgrok analyze` checks before it computes (issue 33): the options' types, work and memory bounded,
the weights finite, a run folder's checkpoint trained on that folder's config, and a paper-format name that
the flags contradict. Each failure is one ValueError/TypeError naming the option, field or file.
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

MAX_NOISE_SEQS = 1 << 20   # label noise: 2^20 sequences per set give a ±0.1 % interval (4096: ±1.5 %)
ANALYSIS_BATCH = 256        # the rows probe.py evaluates at once (kshot_curve, label_noise)

# Options' fields by kind; a field not named here is left to check_options in report.py.
_INTS = ("shots", "layer", "head", "seed", "noise_seqs", "kshot_max_seqs")
_OPTIONAL = ("shots", "layer", "head")


def check_option_types(opts: Any) -> None:
    """Options' fields have their types (Options(shots='3') names shots, not a comparison deep inside)."""
    names = {f.name for f in fields(opts)}
    for name in _INTS:
        if name not in names:
            continue
        value = getattr(opts, name)
        if value is None and name in _OPTIONAL:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"Options.{name} must be an int{' or None' if name in _OPTIONAL else ''}, got "
                            f"{type(value).__name__} {value!r:.40}")
    if "half_width" in names and (isinstance(opts.half_width, bool) or not isinstance(opts.half_width, (int, float))):
        raise TypeError(f"Options.half_width must be a number, got {type(opts.half_width).__name__}")
    if "figures" in names and not isinstance(opts.figures, bool):
        raise TypeError(f"Options.figures must be True or False, got {type(opts.figures).__name__} {opts.figures!r:.40}")
    if "what" in names and (not isinstance(opts.what, tuple) or not all(isinstance(w, str) for w in opts.what)):
        raise TypeError(f"Options.what must be a tuple of analysis names, got {opts.what!r:.60}")
    task = getattr(opts, "task", None)
    if task is not None and (not isinstance(task, tuple) or len(task) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in task)):
        raise TypeError(f"Options.task must be a pair of ints (a, b) or None, got {task!r:.60}")
    if opts.seed < 0:
        raise ValueError(f"--seed {opts.seed} must be ≥ 0 (it seeds the fixed context's and the label noise's draws)")
    if opts.noise_seqs > MAX_NOISE_SEQS:
        raise ValueError(f"--noise-seqs {opts.noise_seqs} is more than {MAX_NOISE_SEQS} (2^20, a ±0.1 % interval); "
                         "the work grows with it (10^8 took over 10 minutes)")


def check_out(out: Any) -> None:
    """--out '' would write into the current folder: it names no folder."""
    if out is not None and not str(out).strip():
        raise ValueError(f"--out {str(out)!r} names no folder (leave it out for the source's analysis/ folder)")


def check_fits(subject: Any) -> None:
    """The model's forward at the analysis batch, estimated as for training (fastgrok.memory, which errs high),
    against the device: --n-shots 200000 is refused here, not in the allocator."""
    from ..memory import check_fits as fits
    cfg = subject.cfg
    try:
        cfg = cfg.override(batch_size=ANALYSIS_BATCH)
    except ValueError:  # fewer rows than pre-training tasks is refused for training: keep the trained batch
        pass
    device = next(subject.model.parameters()).device
    try:
        fits(cfg, device)
    except ValueError as e:
        raise ValueError(f"analyze {subject.checkpoint}: {e}") from None


def check_weights(model: torch.nn.Module, path: str) -> None:
    """NaN or inf weights make every analysis meaningless (and SVDs fail without naming anything)."""
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"{path}: the weights hold NaN or inf values ({', '.join(bad[:3])}"
                         f"{', …' if len(bad) > 3 else ''}): nothing to analyse; pick an earlier checkpoint")


def check_saved_config(state: dict[str, Any], cfg: Any, path: Path, config_file: str) -> None:
    """A run folder's checkpoint carries the config it was trained with: it must be the folder's (a best.pt of
    an n_var = 3 run copied into an n_var = 2 run has the same shapes and would be analysed as the wrong one)."""
    saved = state.get("config")
    if not isinstance(saved, dict):
        return  # an older checkpoint without its config: the folder's config.json is all there is
    from ..config import Config
    try:
        own = Config.from_dict(saved)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: its saved config is damaged ({e})") from None
    ignore = {"out_dir", "run_name", "device", "dtype", "compile", "backend", "attention", "embedding", "batchgen"}
    a, b = own.to_flat(), cfg.to_flat()
    diff = [f"{k}={a.get(k)!r} (in {config_file}: {b.get(k)!r})" for k in sorted(set(a) | set(b))
            if k not in ignore and a.get(k) != b.get(k)]
    if diff:
        raise ValueError(f"{path} was trained with another config than its folder's {config_file}: "
                         f"{', '.join(diff[:4])}{' …' if len(diff) > 4 else ''}")


# What a paper-format name fixes about the model itself; the other task fields may be given over it (a longer
# context: --n-shots; another task set: --n-pl, --alpha, …), as the module docstring of source.py says.
NAME_FIXES = ("p", "n_var", "mlp")


def check_name_agrees(path: Path, from_name: dict[str, Any], given: dict[str, Any]) -> None:
    """A flag that contradicts what a paper-format name says of the model (…_p5_… with --p 7, …_relu_… with
    --mlp gelu): the weights were trained so, whatever the flag says."""
    clash = [f"--{k.replace('_', '-')} {v} (the name says {from_name[k]})" for k, v in given.items()
             if k in NAME_FIXES and k in from_name and from_name[k] != v]
    if clash:
        raise ValueError(f"{path.name}: {', '.join(clash)}; the name is the paper's record of its run: rename the "
                         "file if it is wrong, or leave the flag out")
