"""Checkpoints: atomic writes, fastgrok's own format, and the paper code's state_dict format."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

import torch
from torch import Tensor

from .config import ModelConfig


class CheckpointError(ValueError):
    """A checkpoint or run folder that is missing, corrupt or does not fit."""


def _atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through a temporary file in the same folder, fsync, then rename over `path`: a crash
    leaves the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:  # a full disk at write or fsync: name the file
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save, atomically. torch's zip writer reports a failed write (a full disk) as a RuntimeError
    ("unexpected pos …"): it becomes the OSError it stands for, so callers handle one kind."""
    def save(f: IO[bytes]) -> None:
        try:
            torch.save(obj, f)
        except RuntimeError as e:
            folder = Path(path).parent
            try:
                free = shutil.disk_usage(folder).free
            except OSError:
                free = None
            if free is not None and free < 1 << 20:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from None
            raise OSError(errno.EIO, f"torch could not write the file ({str(e).splitlines()[0][:160]})") from None
    _atomic_write(path, save)


def atomic_write_text(text: str, path: str | Path) -> None:
    _atomic_write(path, lambda f: f.write(text.encode()))


def read_json_object(path: str | Path) -> dict[str, Any] | None:
    """A small JSON file's object (what atomic_write_text wrote), or None where it is missing, unreadable,
    half written or not an object."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def load_file(path: str | Path) -> Any:
    """torch.load with one clear error for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a damaged file
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or not a torch file ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None


# ---- the paper code's format ---------------------------------------------------------------------
_PREFIXES = ("_orig_mod.", "module.")
_ROTARY = re.compile(r"transformer\.h\.\d+\.attn\.rotary_emb\.")


def _unwrap(obj: Any) -> dict[str, Tensor]:
    """A bare state_dict from a state_dict or a training checkpoint holding one."""
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                return _unwrap(obj[key])
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            return obj
    raise CheckpointError("no model state_dict found in the checkpoint")


def clean_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Strip torch.compile ("_orig_mod.") and DDP ("module.") prefixes, however nested."""
    out = {}
    for k, v in sd.items():
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
            k = k.replace("._orig_mod.", ".")
        out[k] = v
    return out


def infer_model_config(sd: dict[str, Tensor], **overrides: Any) -> ModelConfig:
    """Depth, width, vocab, heads and MLP kind read off a paper-format state_dict."""
    try:
        vocab, n_embd = sd["transformer.wte.weight"].shape
    except KeyError:
        raise CheckpointError("not a GPT state_dict: 'transformer.wte.weight' is missing") from None
    depth = 1 + max((int(m.group(1)) for k in sd if (m := re.match(r"transformer\.h\.(\d+)\.", k))), default=-1)
    if depth < 1:
        raise CheckpointError("the state_dict holds no transformer block ('transformer.h.0.*')")
    found: dict[str, Any] = dict(depth=depth, n_embd=n_embd, vocab_size=vocab)
    freqs = sd.get("transformer.h.0.attn.rotary_emb.freqs")
    if freqs is not None:
        head_dim = 2 * freqs.numel()
        if n_embd % head_dim:
            raise CheckpointError(f"rotary freqs give head_dim {head_dim}, which does not divide n_embd {n_embd}")
        found["n_head"] = n_embd // head_dim
        if freqs.numel() > 1:  # freqs[i] = θ^(-2i/D); fp32 storage blurs θ, so snap to 4 digits if exact
            raw = float(freqs[1].double() ** (-head_dim / 2))
            snapped = float(f"{raw:.4g}")
            again = 1.0 / (snapped ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
            found["rope_theta"] = snapped if torch.allclose(again, freqs.float(), rtol=1e-6, atol=0) else raw
    if "transformer.h.0.mlp.w1.weight" in sd:
        found["mlp"] = "swiglu"
    elif "transformer.h.0.mlp.c_fc.weight" in sd:
        found["widen"] = sd["transformer.h.0.mlp.c_fc.weight"].shape[0] // n_embd
    found.update({k: v for k, v in overrides.items()})
    if "n_head" not in found:
        raise CheckpointError("the head count cannot be read from this state_dict (no rotary_emb.freqs): pass n_head=")
    return ModelConfig(**found)


def from_paper_state_dict(sd: dict[str, Tensor], model: torch.nn.Module) -> None:
    """Load a paper-format state_dict into a fastgrok GPT (strict, apart from RoPE buffers)."""
    sd = {k: v for k, v in clean_state_dict(sd).items() if not _ROTARY.match(k)}
    if "lm_head.weight" not in sd:  # tied: one copy is enough
        sd["lm_head.weight"] = sd["transformer.wte.weight"]
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"state_dict does not fit the model: missing {missing[:6]}, unexpected {unexpected[:6]}")


def to_paper_state_dict(model: torch.nn.Module) -> dict[str, Tensor]:
    """The model's weights under the paper code's keys, with each layer's rotary freqs."""
    cfg: ModelConfig = model.cfg
    D = cfg.head_dim
    freqs = 1.0 / (cfg.rope_theta ** (torch.arange(0, D, 2)[: D // 2].float() / D))
    sd = {k: v.detach().cpu().clone() for k, v in clean_state_dict(model.state_dict()).items()}
    for i in range(cfg.depth):
        sd[f"transformer.h.{i}.attn.rotary_emb.freqs"] = freqs.clone()
    return sd


def load_reference_checkpoint(path: str | Path, **overrides: Any) -> torch.nn.Module:
    """A GPT from a checkpoint saved by the paper's code (or by `save_reference_checkpoint`).

    Depth, width, vocab size, head count (from rotary freqs) and MLP width are read from the
    state_dict; `overrides` set what cannot be read (e.g. mlp="gelu", backend="fused").
    """
    from .model import GPT
    sd = clean_state_dict(_unwrap(load_file(path)))
    try:
        cfg = infer_model_config(sd, **overrides)
    except TypeError as e:
        raise ValueError(f"bad override for load_reference_checkpoint: {e}") from None
    model = GPT(cfg)
    from_paper_state_dict(sd, model)
    return model


def save_reference_checkpoint(model: torch.nn.Module, path: str | Path) -> None:
    """Save the model's weights in the paper code's state_dict format (atomically)."""
    from .model import GPT
    if not isinstance(model, GPT):
        raise TypeError(f"save_reference_checkpoint(model, path) takes a fastgrok GPT, got {type(model).__name__} "
                        f"{model!r:.60}")
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TypeError(f"save_reference_checkpoint: path must name a file, got {path!r:.60}")
    atomic_save(to_paper_state_dict(model), path)
