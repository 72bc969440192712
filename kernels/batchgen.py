"""Batch generation in Triton: one launch writes a whole batch of token ids from Philox counters.

Reproduces `fastgrok.data.generate_batch` bit for bit (that module's docstring is the
specification): the same Philox4x32-10 counters (`tl.randint(key, offset)` equals
`fastgrok.philox.philox_u32(key, offset)`), the same row → task rotation, the same point choice
for "iid", "paper" and "distinct" sampling, z = (w · x) mod p. Replaces the reference's chain
of torch ops (philox in ~60 int64 ops, a (B, N) sort for "distinct", gathers, a cat) with one
kernel, and reads `step` from device memory when it is a tensor, so a CUDA graph captured once
can be replayed for every step.

Layers: `_batchgen_kernel` → launcher `batchgen_forward` (validate, allocate, launch) → custom
op "fastgrok::batchgen" (opaque to torch.compile) → `fused_batchgen(task_vecs, inputs, p,
batch_size, n_shots, sampling, key, step)`, tensors and ints only; fastgrok.backends adapts it to
the registry's batchgen contract, `fastgrok.data.generate_batch`'s (source, step).
"""
from __future__ import annotations

import operator

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import FP_FUSION, check_device, interpreted, launch, next_pow2, op_defined

SAMPLINGS = {"iid": 0, "paper": 1, "distinct": 2}
#: "distinct" packs (u, q) as u · 2^QBITS + q in an int64, so it supports N ≤ 2^QBITS points.
QBITS = 30
MAX_DISTINCT_POINTS = 1 << QBITS


#: tl.randint with int64 offsets matches Philox4x32 on the (offset low, offset high) counter only
#: from Triton 3.4; older versions silently draw other batches.
MIN_TRITON = (3, 4)


def check_triton_version(version: str | None = None) -> None:
    """Raise RuntimeError unless Triton (or `version`) is at least MIN_TRITON."""
    version = triton.__version__ if version is None else version
    parts = tuple(int(x) for x in version.split("+")[0].split(".")[:2] if x.isdigit())
    if parts < MIN_TRITON:
        raise RuntimeError(f"the fused batch generator needs Triton >= {'.'.join(map(str, MIN_TRITON))} (its "
                           f"tl.randint with int64 offsets), found {version}; use batchgen='reference' or upgrade")


# ───────────────────────────── kernel ─────────────────────────────


@triton.jit(do_not_specialize=["step", "seed"])
def _batchgen_kernel(
    TaskVecs, Inputs, Out, StepPtr,
    step, seed, B, S, N, n_tasks, p,
    stride_tn, stride_tv, stride_in, stride_iv, stride_ob,
    N_VAR: tl.constexpr, SAMPLING: tl.constexpr, STEP_FROM_PTR: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr, CHUNK: tl.constexpr,
):
    # Batch generation: Out[r, s·(N_VAR+1) + j] = x_j, Out[r, s·(N_VAR+1) + N_VAR] = (w·x) mod p for
    # x = Inputs[point(r, s)], w = TaskVecs[(step·B + r) mod n_tasks]; points from tl.randint(seed, ·).
    # Grid (cdiv(B, BLOCK_R),): each program owns BLOCK_R whole rows (BLOCK_S ≥ S shots each).
    # Integer-exact, int64 counters and offsets; "distinct" streams the N keys in CHUNKs and keeps the
    # S smallest packed (u << 30 | q) per row, so ties go to the lower q like a stable sort.
    # Replaces fastgrok.data.generate_batch (philox_u32 + torch.sort + gathers), bit for bit.
    MAXI: tl.constexpr = 0x7FFFFFFFFFFFFFFF
    SENTINEL: tl.constexpr = 0x4000000000000000  # 2^62 > every packed key (< 2^62)
    QMASK: tl.constexpr = 0x3FFFFFFF  # 2^30 - 1
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)  # (R,)
    row_ok = rows < B
    if STEP_FROM_PTR:
        step0 = tl.load(StepPtr).to(tl.int64)
    else:
        step0 = step.to(tl.int64)
    base = step0 * B + rows  # (R,) global sequence number
    task = base % n_tasks
    task = tl.where(task < 0, task + n_tasks, task)  # floor mod, as torch (only matters for step < 0)
    sidx = tl.arange(0, BLOCK_S)  # (S,)
    shot_ok = sidx < S
    if SAMPLING == 2:  # distinct: S smallest (u_q, q) over q < N, ascending
        kept = tl.where(shot_ok, sidx.to(tl.int64) + SENTINEL, -1)  # distinct sentinels, then padding
        best = tl.zeros([BLOCK_R, BLOCK_S], dtype=tl.int64) + kept[None, :]  # (R, S) packed keys kept
        thr = tl.max(best, axis=1)  # (R,) largest kept; padding (-1) is never the max, never replaced
        ctr0 = base * N
        for c0 in range(0, N, CHUNK):
            q = c0 + tl.arange(0, CHUNK)  # (C,)
            u = tl.randint(seed, ctr0[:, None] + q[None, :]).to(tl.int64) & 0xFFFFFFFF  # (R, C)
            keys = tl.where((q < N)[None, :] & row_ok[:, None], (u << 30) | q[None, :], MAXI)
            m = tl.min(keys, axis=1)
            go = m < thr
            while tl.max(go.to(tl.int32), axis=0) > 0:  # insert the chunk's minima while they beat the max
                best = tl.where(go[:, None] & (best == thr[:, None]), m[:, None], best)
                keys = tl.where(go[:, None] & (keys == m[:, None]), MAXI, keys)
                thr = tl.max(best, axis=1)
                m = tl.min(keys, axis=1)
                go = m < thr
        pts = best & QMASK  # (R, S) point indices, unordered
        pos = tl.zeros([BLOCK_R, BLOCK_S], dtype=tl.int64)  # shot of each kept point: its rank
        cand = tl.where(shot_ok[None, :], best, MAXI)
        for s in range(0, S):
            least = tl.min(cand, axis=1)
            hit = cand == least[:, None]
            pos = tl.where(hit, s, pos)
            cand = tl.where(hit, MAXI, cand)
    else:
        if SAMPLING == 1:  # paper: the row's slot r // n_tasks replaces r
            ctr_row = step0 * B + rows // n_tasks
        else:
            ctr_row = base
        u = tl.randint(seed, ctr_row[:, None] * S + sidx[None, :]).to(tl.int64) & 0xFFFFFFFF  # (R, S)
        pts = u % N
        pos = tl.zeros([BLOCK_R, BLOCK_S], dtype=tl.int64) + sidx[None, :]
    mask = row_ok[:, None] & shot_ok[None, :]
    out_ptr = Out + rows[:, None] * stride_ob + pos * (N_VAR + 1)  # (R, S)
    z = tl.zeros([BLOCK_R, BLOCK_S], dtype=tl.int64)
    for j in tl.static_range(N_VAR):
        x = tl.load(Inputs + pts * stride_in + j * stride_iv, mask=mask, other=0).to(tl.int64)
        w = tl.load(TaskVecs + task * stride_tn + j * stride_tv, mask=row_ok, other=0).to(tl.int64)
        z += x * w[:, None]
        tl.store(out_ptr + j, x, mask=mask)
    z = z % p
    z = tl.where(z < 0, z + p, z)  # floor mod, as torch (only for negative task entries)
    tl.store(out_ptr + N_VAR, z, mask=mask)


# ───────────────────────────── launcher ─────────────────────────────


def _blocks(B: int, S: int, N: int, distinct: bool, interpret: bool) -> tuple[int, int, int]:
    """BLOCK_R, BLOCK_S, CHUNK. The interpreter wants few, big blocks; the GPU ~1k-element tiles.

    Floors of 16 keep every tl.arange well clear of degenerate sizes; padding is masked.
    """
    BLOCK_S = max(16, next_pow2(S))
    CHUNK = max(16, min(next_pow2(N), 4096 if interpret else 1024)) if distinct else 1
    tile = (16384 if interpret else 1024) if distinct else (8192 if interpret else 1024)
    width = CHUNK if distinct else BLOCK_S
    BLOCK_R = max(1, min(next_pow2(B), tile // max(width, BLOCK_S)))
    return BLOCK_R, BLOCK_S, CHUNK


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}; it must be a positive int")
    return value


def _check_table(t: object, name: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    check_device(t, name)
    if t.dtype != torch.int64:
        raise TypeError(f"{name} has dtype {t.dtype}; it must be int64")
    if t.dim() != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(f"{name} must have shape (rows ≥ 1, n_var ≥ 1), got {tuple(t.shape)}")


def _split_step(step: object, device: torch.device) -> tuple[Tensor | None, int]:
    """(0-dim int64 tensor on `device` for the kernel to read, None) or (None, the step as an int)."""
    if isinstance(step, Tensor):
        if step.dim() != 0 or step.dtype != torch.int64:
            raise TypeError(f"step must be an int or a 0-dim int64 tensor, got a {step.dtype} tensor "
                            f"of shape {tuple(step.shape)}")
        if step.device == device:
            return step, 0
        if step.device.type == "cpu":  # a host scalar: reading it costs no device sync (as in the reference)
            return None, int(step)
        raise ValueError(f"step is on {step.device} but the tables are on {device}; they must match")
    if isinstance(step, bool):
        raise TypeError("step must be an int or a 0-dim int64 tensor, got bool")
    try:
        value = operator.index(step)
    except TypeError:
        raise TypeError(f"step must be an int or a 0-dim int64 tensor, got {type(step).__name__}") from None
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"step={value} does not fit in int64")
    return None, value


def batchgen_forward(
    task_vecs: Tensor, inputs: Tensor, p: int, batch_size: int, n_shots: int, sampling: str,
    key: int, step: int | Tensor, out: Tensor | None = None,
) -> Tensor:
    """Batch `step` as token ids (B, (n_var+1)·S) int64: task_vecs (n_tasks, n_var), inputs (N, n_var) int64.

    `step` is an int or a 0-dim int64 tensor on the tables' device (read by the kernel, never
    synced: safe under CUDA-graph capture). `out` (contiguous int64 of the output shape) may be given.
    """
    _check_table(task_vecs, "task_vecs")
    _check_table(inputs, "inputs")
    if inputs.device != task_vecs.device:
        raise ValueError(f"inputs is on {inputs.device} but task_vecs is on {task_vecs.device}; they must match")
    if inputs.shape[1] != task_vecs.shape[1]:
        raise ValueError(f"inputs has n_var={inputs.shape[1]} coordinates but task_vecs has {task_vecs.shape[1]}")
    p, B, S = _positive_int("p", p), _positive_int("batch_size", batch_size), _positive_int("n_shots", n_shots)
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling={sampling!r} is not one of {', '.join(map(repr, SAMPLINGS))}")
    if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < 2**64:
        raise ValueError(f"key={key!r}; the Philox key must be an int in [0, 2^64)")
    (n_tasks, n_var), N = task_vecs.shape, inputs.shape[0]
    distinct = sampling == "distinct"
    if distinct and S > N:
        raise ValueError(f"sampling='distinct' needs n_shots ≤ the number of input points, got n_shots={S} > N={N}")
    if distinct and N > MAX_DISTINCT_POINTS:
        raise ValueError(f"sampling='distinct' supports at most {MAX_DISTINCT_POINTS} input points, got N={N}")
    if N >= 2**31 or n_tasks >= 2**31:
        raise ValueError(f"inputs ({N} rows) and task_vecs ({n_tasks} rows) must have fewer than 2^31 rows")
    device = task_vecs.device
    step_t, step_int = _split_step(step, device)
    per_row = N if distinct else S
    if step_t is None and not -(2**63) <= (abs(step_int) + 1) * B * per_row < 2**63:
        raise ValueError(f"step={step_int} overflows the int64 Philox counters: (|step| + 1)·B·{per_row} ≥ 2^63")
    shape = (B, (n_var + 1) * S)
    if out is None:
        out = torch.empty(shape, dtype=torch.int64, device=device)
    elif (not isinstance(out, Tensor) or out.shape != shape or out.dtype != torch.int64
          or not out.is_contiguous() or out.device != device):
        raise ValueError(f"out must be a contiguous int64 tensor of shape {shape} on {device}")
    check_triton_version()
    seed = key - 2**64 if key >= 2**63 else key  # same 64 bits, passed as int64; tl.randint reads them as uint64
    BLOCK_R, BLOCK_S, CHUNK = _blocks(B, S, N, distinct, interpreted())
    launch(
        _batchgen_kernel, (triton.cdiv(B, BLOCK_R),),
        task_vecs, inputs, out, task_vecs if step_t is None else step_t,  # the pointer is read only if STEP_FROM_PTR
        step_int, seed, B, S, N, n_tasks, p,
        task_vecs.stride(0), task_vecs.stride(1), inputs.stride(0), inputs.stride(1), out.stride(0),
        N_VAR=n_var, SAMPLING=SAMPLINGS[sampling], STEP_FROM_PTR=step_t is not None,
        BLOCK_R=BLOCK_R, BLOCK_S=BLOCK_S, CHUNK=CHUNK, enable_fp_fusion=FP_FUSION,
    )
    return out


# ───────────────────────────── custom op and public entry ─────────────────────────────


def _op_impl(task_vecs: Tensor, inputs: Tensor, step_t: Tensor | None, step_i: int, p: int,
             batch_size: int, n_shots: int, sampling: str, key: int) -> Tensor:
    step = step_t if step_t is not None else step_i
    return batchgen_forward(task_vecs, inputs, p, batch_size, n_shots, sampling, key, step)


def _op_fake(task_vecs: Tensor, inputs: Tensor, step_t: Tensor | None, step_i: int, p: int,
             batch_size: int, n_shots: int, sampling: str, key: int) -> Tensor:
    return task_vecs.new_empty(batch_size, (task_vecs.shape[1] + 1) * n_shots)


def _register_op() -> None:
    """Define "fastgrok::batchgen" once per process (re-imports are no-ops)."""
    if op_defined("fastgrok::batchgen"):
        return
    torch.library.custom_op(
        "fastgrok::batchgen", _op_impl, mutates_args=(),
        schema="(Tensor task_vecs, Tensor inputs, Tensor? step_t, int step_i, int p, int batch_size, "
               "int n_shots, str sampling, int key) -> Tensor",
    ).register_fake(_op_fake)


_register_op()


def fused_batchgen(task_vecs: Tensor, inputs: Tensor, p: int, batch_size: int, n_shots: int, sampling: str,
                   key: int, step: int | Tensor) -> Tensor:
    """`batchgen_forward` through the custom op (compiles fullgraph; CUDA-graph safe with a tensor step):
    token ids (B, (n_var + 1)·S) int64 on the tables' device, bit-identical to fastgrok.data.generate_batch."""
    if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < 2**63:
        # the custom op carries the key as a signed int64; the launcher itself takes [0, 2^64) (and says why not)
        return batchgen_forward(task_vecs, inputs, p, batch_size, n_shots, sampling, key, step)
    step_t, step_i = (step, 0) if isinstance(step, Tensor) else _split_step(step, task_vecs.device)
    return torch.ops.fastgrok.batchgen(task_vecs, inputs, step_t, step_i, p, batch_size, n_shots, sampling, key)
