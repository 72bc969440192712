"""Memory a config needs, estimated before anything is allocated, against what the device has.

The estimate is arithmetic on the config (no tensor is built), so a config that cannot fit is refused
in milliseconds instead of being killed by the OOM killer minutes later. It counts, in bytes:
- tasks: the p^n_var input points and task indices `make_tasks` enumerates on the host, and the
  input tables each batch source keeps on the device;
- batches: token ids and Philox counters of one batch (for sampling="distinct" a key per row and point);
- params: weights, gradients and AdamW's two moments (16 bytes a parameter);
- activations: what autograd keeps for the backward pass, ≈ depth · B · T · C · (8 + 2·widen) elements
  (residual, LayerNorms, qkv, attention output, MLP hidden before and after the activation), plus
  attention probabilities B · H · T² per layer and the logits at the z positions.
- runtime: a fixed allowance for the libraries' own buffers (measured ≈ 200 MiB on a CPU).
Measured on a CPU (peak RSS growth over 2 steps): quick preset 126 MiB estimated + runtime vs 259 MiB;
quick at batch 1024 1.9 GiB vs 1.1 GiB; paper at batch 512 5.0 GiB vs 2.9 GiB: on the high side, never
below. The refusal prints each part so a user can judge.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .config import Config
from .model import swiglu_hidden


def human_bytes(n: float) -> str:
    """1536 → '1.5 KiB'."""
    n = float(min(n, 2**80))  # p**n_var can exceed a float; anything this big is "huge" anyway
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def num_params(cfg: Config) -> int:
    """Parameters of the GPT of cfg.model (tied embedding once), without building it."""
    m = cfg.model
    C = m.n_embd
    mlp = 3 * C * swiglu_hidden(C, m.widen) if m.mlp == "swiglu" else 2 * m.widen * C * C
    block = 4 * C * C + mlp + 4 * C  # attention, MLP, two LayerNorms (weight and bias)
    return m.vocab_size * C + m.depth * block + 2 * C


def estimate(cfg: Config, device: torch.device | str = "cpu", world_size: int = 1) -> dict[str, int]:
    """Bytes per part (tasks, batches, params, activations, runtime) and their sum under "total", for one
    process; under DDP (`world_size` ranks) a rank holds batch_size / world_size rows of each batch."""
    device = torch.device(device)
    t, m, tr = cfg.task, cfg.model, cfg.train
    B, S, C, V = max(1, tr.batch_size // world_size), t.n_shots, m.n_embd, m.vocab_size
    T = t.seq_len - 1
    n_points = t.p**t.n_var
    # make_tasks: the permuted point indices, their base-p digits, and the o.o.d. candidates (arange,
    # setdiff, permutation): ≈ (n_var + 4) int64 per point on the host; on CUDA the sources keep
    # the train inputs three times and the test inputs twice.
    tasks = 8 * n_points * (t.n_var + 4)
    if device.type == "cuda":
        tasks += 8 * n_points * t.n_var * 3
    per_row = n_points if t.sampling == "distinct" else S
    batches = 8 * B * (per_row * 6 + t.seq_len)  # counters and Philox rounds (int64) + tokens
    params = 16 * num_params(cfg)
    amp = tr.dtype in ("bf16", "fp16") or (tr.dtype == "auto" and device.type == "cuda")
    elem = 2 if amp else 4
    hidden = swiglu_hidden(C, m.widen) * 3 / C if m.mlp == "swiglu" else 2 * m.widen
    per_layer = B * T * C * (8 + hidden) * elem + 2 * B * m.n_head * T * T * 4
    logits = 3 * B * S * V * 4
    activations = int(m.depth * per_layer + per_layer + logits)  # one layer's backward transients on top
    runtime = (512 if device.type == "cuda" else 256) * 2**20
    parts = dict(tasks=tasks, batches=batches, params=params, activations=activations, runtime=runtime)
    parts["total"] = sum(parts.values())
    return parts


def _cgroup_available() -> int | None:
    """Bytes this process's cgroup may still use (containers: the OOM killer's real limit)."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit == "max" or int(limit) >= 2**60:
                return None
            return int(limit) - int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
    return None


def available(device: torch.device | str = "cpu") -> int | None:
    """Bytes free for a run on the device: CUDA's free memory, or the host's available RAM (MemAvailable,
    within the cgroup limit); None where it cannot be told."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    found = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    group = _cgroup_available()
    return min(found, group) if group is not None else found


def check_fits(cfg: Config, device: torch.device | str = "cpu", budget: int | None = None, *, world_size: int = 1,
               sharing: int = 1) -> dict[str, int]:
    """Raise a ValueError (with the estimate and the budget) when cfg cannot fit the device; else the estimate.

    Under DDP each of the `world_size` ranks holds its share of the batch; `sharing` processes (the ranks on
    this node, on the CPU) draw on the same memory, so each may use 1/sharing of what is available."""
    device = torch.device(device)
    need = estimate(cfg, device, world_size)
    budget = available(device) if budget is None else budget
    if budget is not None:
        budget //= max(1, sharing)
    if budget is not None and need["total"] > budget:
        big = max((k for k in need if k != "total"), key=need.__getitem__)
        parts = ", ".join(f"{k} {human_bytes(v)}" for k, v in need.items() if k != "total")
        hint = {"tasks": "p or n_var", "batches": "batch_size or n_shots (or sampling='iid')",
                "params": "depth, n_embd or widen", "activations": "batch_size, n_shots, depth or n_embd",
                "runtime": "other programs' memory use"}[big]
        where = f"is free on {device}" if device.type == "cuda" else "of RAM is available"
        raise ValueError(f"this config needs about {human_bytes(need['total'])} ({parts}) but only "
                         f"{human_bytes(budget)} {where}: lower {hint}")
    return need
