"""Experiment trackers: TensorBoard and Weights & Biases (`log = "tensorboard,wandb"`, `fastgrok train --log`).

Per evaluation (at its step): each set's loss and accuracy (all shots and last shot, task means), the k-shot
curve (a table: shot × set), the phase label, the learning rate, tokens, the training loss since the previous
evaluation, steps/s, MFU (where the device's peak is known) and peak memory; the resolved config as
hyperparameters at the start; the summary at the end. Written by rank 0 alone.

Where and how a resume continues:
    RUN/tensorboard/   TensorBoard's event files; a resume at step S opens the same folder with purge_step S+1,
                       so events past S (logged before a crash) are hidden, as TensorBoard defines it
    RUN/wandb/         W&B's run files; the run id is kept in RUN/tracking.json and a resume continues it
                       (resume="allow"). Without an API key (WANDB_API_KEY or ~/.netrc) W&B runs offline,
                       said in one line (`wandb sync RUN/wandb/offline-run-*` uploads it later); WANDB_MODE wins.
An evaluation is logged after its checkpoint is saved, so a resume never runs a logged step again (a crash
between the two leaves that one evaluation out of the tracker; metrics.jsonl has it).
The packages are imported only when asked for: `check` names the missing extra before training starts.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import sys
from pathlib import Path
from typing import Any, Callable

from . import runfolder
from .checkpoint import atomic_write_text, read_json_object
from .config import TRACKERS, Config

SETS = ("train", "id_test", "ood_train", "ood_test")
SET_METRICS = ("loss", "acc", "loss_last", "acc_last", "task_mean_acc", "task_mean_acc_last")
EXTRAS = {"tensorboard": ("torch.utils.tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}  # → (module, extra)


def trackers(cfg: Config) -> tuple[str, ...]:
    return tuple(t for t in cfg.train.log.split(",") if t)


def check(cfg: Config) -> None:
    """One line (ValueError) for a tracker asked for whose package is missing or broken, before anything runs."""
    import importlib
    for name in trackers(cfg):
        module, extra = EXTRAS[name]
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ValueError(f"log={name!r} needs the {extra} package ({e.__class__.__name__}: "
                             f"{str(e).splitlines()[0][:80] if str(e) else module}): pip install \"fastgrok[{extra}]\""
                             ) from None


def scalars(rec: dict[str, Any], perf: dict[str, float | None]) -> dict[str, float]:
    """The numbers of one evaluation under their tracker names ('ood_test/acc_last', 'lr', 'perf/mfu', …)."""
    out: dict[str, float] = {"train_loss": rec["train_loss"], "lr": rec["lr"], "tokens": float(rec["tokens"])}
    for s in SETS:
        for m in SET_METRICS:
            value = rec["sets"][s].get(m)
            if isinstance(value, (int, float)):
                out[f"{s}/{m}"] = float(value)
        out[f"solved/{s}"] = float(rec["solved"][s])
    for k, v in perf.items():
        if v is not None and math.isfinite(v):
            out[f"perf/{k}"] = float(v)
    return out


def kshot_rows(rec: dict[str, Any]) -> list[list[float]]:
    """The k-shot curves of one evaluation: rows [shot, train, id_test, ood_train, ood_test]."""
    curves = [rec["sets"][s]["kshot"] for s in SETS]
    return [[k, *(float(c[k]) for c in curves)] for k in range(len(curves[0]))]


def _markdown(rows: list[list[float]]) -> str:
    head = "| shot | " + " | ".join(SETS) + " |\n|" + "---|" * (len(SETS) + 1) + "\n"
    return head + "\n".join(f"| {int(r[0])} | " + " | ".join(f"{v:.3f}" for v in r[1:]) + " |" for r in rows)


def _hparams(cfg: Config, context: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in cfg.to_flat().items()}
    if context.get("group"):
        flat["sweep"] = context["group"]
    for k, v in (context.get("point") or {}).items():
        flat[f"grid/{k}"] = v
    return flat


class TensorBoard:
    def __init__(self, run_dir: Path, cfg: Config, start: int, context: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter
        self.dir = run_dir / runfolder.TENSORBOARD
        self.writer = SummaryWriter(str(self.dir), purge_step=start + 1 if start else None)
        self.hparams = _hparams(cfg, context)
        if not start:
            self.writer.add_text("config", "```\n" + json.dumps(cfg.to_dict(), indent=2) + "\n```", 0)

    def log(self, rec: dict[str, Any], perf: dict[str, float | None]) -> None:
        step = rec["step"]
        for k, v in scalars(rec, perf).items():
            self.writer.add_scalar(k, v, step)
        self.writer.add_text("phase", rec["phase"], step)
        self.writer.add_text("kshot", _markdown(kshot_rows(rec)), step)
        self.writer.flush()

    def finish(self, summary: dict[str, Any]) -> None:
        self.writer.add_text("summary", "```\n" + json.dumps(summary, indent=2, default=str) + "\n```", summary["steps"])
        keep = (int, float, str, bool)
        hp = {k: v for k, v in self.hparams.items() if isinstance(v, keep)}
        metrics = {f"hparam/{k}": float(v) for k, v in (summary.get("final") or {}).get("ood_test", {}).items()}
        if summary.get("best_ood_test_acc") is not None:
            metrics["hparam/best_ood_test_acc"] = float(summary["best_ood_test_acc"])
        self.writer.add_hparams(hp, metrics, run_name=".", global_step=summary["steps"])

    def close(self, ok: bool) -> None:
        self.writer.close()


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc
    from urllib.parse import urlparse
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandB:
    INIT_TIMEOUT_S = 15.0  # online: how long W&B may take to reach its server before we go offline

    def __init__(self, run_dir: Path, cfg: Config, start: int, context: dict[str, Any], say: Callable[[str], None]):
        import wandb
        self.wandb = wandb
        state = read_json_object(run_dir / runfolder.TRACKING) or {}
        run_id = state.get("wandb_id")
        if not isinstance(run_id, str) or not run_id:
            run_id = secrets.token_hex(4)
            atomic_write_text(json.dumps({**state, "wandb_id": run_id}), run_dir / runfolder.TRACKING)
        mode = os.environ.get("WANDB_MODE") or None
        if mode is None and not _has_wandb_key():
            mode = "offline"
            say(f"wandb: no API key (WANDB_API_KEY or ~/.netrc): logging offline to {run_dir / runfolder.WANDB}/ "
                f"(upload later: wandb sync {run_dir / runfolder.WANDB}/offline-run-*)")
        kw = dict(project=os.environ.get("WANDB_PROJECT", "fastgrok"), dir=str(run_dir), id=run_id, resume="allow",
                  name=run_dir.name, group=context.get("group") or None, config=_hparams(cfg, context),
                  job_type="train")
        try:
            self.run = wandb.init(mode=mode, settings=self._settings(), **kw)
        except Exception as e:  # noqa: BLE001 — a server out of reach must not stop training
            if mode == "offline":
                raise
            say(f"wandb: cannot reach the server ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); "
                f"logging offline to {run_dir / runfolder.WANDB}/")
            wandb.teardown()  # the failed attempt still holds the run id in W&B's service process
            self.run = wandb.init(mode="offline", settings=self._settings(), **kw)

    def _settings(self) -> Any:
        return self.wandb.Settings(console="off", silent=True, init_timeout=self.INIT_TIMEOUT_S)

    def log(self, rec: dict[str, Any], perf: dict[str, float | None]) -> None:
        data: dict[str, Any] = dict(scalars(rec, perf))
        data["phase"] = rec["phase"]
        data["kshot"] = self.wandb.Table(columns=["shot", *SETS], data=kshot_rows(rec))
        self.run.log(data, step=rec["step"])

    def finish(self, summary: dict[str, Any]) -> None:
        for k, v in summary.items():
            if k == "final" and isinstance(v, dict):
                for s, m in v.items():
                    for name, x in m.items():
                        self.run.summary[f"final/{s}/{name}"] = x
            elif isinstance(v, (int, float, str, bool)) or v is None:
                self.run.summary[k] = v

    def close(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)
        if self.wandb.run is None:  # no other run of this process: stop W&B's service, which flushes the run file
            self.wandb.teardown()


class Trackers:
    """The trackers of one training call (empty: every method does nothing)."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def log(self, rec: dict[str, Any], perf: dict[str, float | None]) -> None:
        for t in self.items:
            t.log(rec, perf)

    def finish(self, summary: dict[str, Any]) -> None:
        for t in self.items:
            t.finish(summary)

    def close(self, ok: bool) -> None:
        items, self.items = self.items, []
        for t in items:
            t.close(ok)


def start(cfg: Config, run_dir: Path, start_step: int, context: dict[str, Any] | None,
          say: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> Trackers:
    """The trackers cfg.log asks for, writing into run_dir (the same tracker run on resume)."""
    context = context or {}
    items: list[Any] = []
    try:
        for name in trackers(cfg):
            if name == "tensorboard":
                items.append(TensorBoard(run_dir, cfg, start_step, context))
            elif name == "wandb":
                items.append(WandB(run_dir, cfg, start_step, context, say))
    except BaseException:
        Trackers(items).close(False)
        raise
    return Trackers(items)


def peak_memory_gib(device: Any) -> float | None:
    """Peak memory so far: the CUDA allocator's on a GPU, the process's resident set on the CPU."""
    import torch
    if getattr(device, "type", None) == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    except (ImportError, OSError):
        return None


__all__ = ["TRACKERS", "Trackers", "check", "start", "scalars", "kshot_rows", "peak_memory_gib"]
