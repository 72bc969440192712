"""Causal attention with RoPE fused into the loads: Triton forward and deterministic backward.

Computes exactly `fastgrok.rope.rope_attention_reference`: interleaved-pair RoPE (dims 2i, 2i+1
rotate by t·θ^(-2i/D), fp32 angles) on q and k, causal softmax(q kᵀ / sqrt(D)) v, optionally for
a slice of the queries only (`q_slice`: the last block needs outputs at the loss positions alone;
keys and values stay at every position). q and k load as contiguous (rows, D) tiles, their pairs
are split and rotated in registers (`tl.reshape` + `tl.split`, `tl.join` back), and no rotated
copy reaches memory. FlashAttention-2 tiling (Dao 2023, https://arxiv.org/abs/2307.08691):
online softmax in fp32 with exp2, the row log-sum-exp stored for the backward, which recomputes
the probabilities.

Shaped for memory-bound short sequences (the paper: T = 95, D = 128), two launches per layer:
- forward: a 1-D grid whose fastest index is the query block, so a head's blocks run side by
  side and its K and V come from DRAM once (T ≤ 128: one block, one program per head);
- backward, one launch: for T ≤ 128 one program per (batch, head) computes dK, dV (loop over
  key blocks, inner loop over queries) and then dQ (loop over query blocks, inner loop over
  keys), Delta = rowsum(dO ∘ O) inline; the second pass recomputes P instead of holding dQ for
  all rows, so nothing spills, nothing is atomic and the result is deterministic. Longer
  sequences split the same two passes over adjacent programs of one launch (key blocks, then
  query blocks, of one head).
Launch configurations are named candidates (CANDIDATES: tiles, warps, stages, whether the
backward splits at every T, a Delta pre-pass), chosen with `attention_candidate(name)` or
`candidate=`; today's measured kernel is "v2", the default DEFAULT_CANDIDATE ("split-w4": the
split backward at every T, 4 warps) comes from docs/kernels.md's latency model and the offline
compile, and benchmarks/kernel_ab.py times each on a GPU.
`traffic(...)` models the DRAM bytes each launch moves (see fastgrok.bench.sm90).

Layers: kernels → launchers (`rope_attn_forward`, `rope_attn_backward`) → custom ops
"fastgrok::rope_attn_fwd"/"rope_attn_bwd" (fused qkv projection) and
"fastgrok::rope_heads_fwd"/"rope_heads_bwd" ((B, H, T, D) tensors), opaque to torch.compile →
`fused_attention_qkv` (the registry's op, takes q_slice) and `rope_attention`.
"""
import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import (
    FP_FUSION,
    check_device,
    check_float_dtype,
    dot_precision,
    interpreted,
    launch,
    next_pow2,
    op_defined,
)

HEAD_DIMS = (32, 64, 128)  # D/2 ≥ 16 keeps every tl.dot dimension ≥ 16
LOG2E = 1.4426950408889634  # the kernels spell out log2(e) and ln(2): plain globals are not visible in @jit
ONE_PROGRAM_MAX_T = 128  # up to this T the backward is one program per head


# ───────────────────────────── kernels ─────────────────────────────


@triton.jit
def _rope_load(X, stride_xt, pos, valid, Cos, Sin, HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr):
    # Rows `pos` of one (T, D) head as a contiguous (BLOCK, D) tile, RoPE-rotated in fp32:
    # pairs (x_2i, x_2i+1) → (x_2i cos − x_2i+1 sin, x_2i+1 cos + x_2i sin), Cos/Sin (T, D/2).
    HALF: tl.constexpr = HEAD_DIM // 2
    offs_d = tl.arange(0, HEAD_DIM)
    offs_p = tl.arange(0, HALF)
    x = tl.load(X + pos[:, None] * stride_xt + offs_d[None, :], mask=valid[:, None], other=0.0).to(tl.float32)
    x_e, x_o = tl.split(tl.reshape(x, (BLOCK, HALF, 2)))
    cs = pos[:, None] * HALF + offs_p[None, :]
    cos = tl.load(Cos + cs, mask=valid[:, None], other=0.0)
    sin = tl.load(Sin + cs, mask=valid[:, None], other=0.0)
    return tl.reshape(tl.join(x_e * cos - x_o * sin, x_o * cos + x_e * sin), (BLOCK, HEAD_DIM))


@triton.jit
def _to_input_dtype(x, Like, UPCAST: tl.constexpr):
    # fp32 x cast to Like's element type, rounded to nearest even as on the GPU. The interpreter (UPCAST)
    # truncates fp32 → bf16 (docs TRITON_ON_CPU.md), a bias that grows with every sum of rounded terms; under it
    # bf16 is rounded first in fp32's own bits (bf16 is fp32's upper half), so the cast is exact and the CPU
    # computes the GPU's values. Compiled code is unchanged.
    if UPCAST:
        if Like.dtype.element_ty == tl.bfloat16:
            b = x.to(tl.int32, bitcast=True)
            b = (b + (0x7FFF + ((b >> 16) & 1))) & -65536
            x = b.to(tl.float32, bitcast=True)
    return x.to(Like.dtype.element_ty)


@triton.jit
def _rope_store_grad(DX, stride_xt, pos, valid, Cos, Sin, g, HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr,
                     UPCAST: tl.constexpr):
    # Store g, a (BLOCK, D) gradient w.r.t. the rotated rows, rotated back (RoPE's transpose),
    # as one contiguous tile.
    HALF: tl.constexpr = HEAD_DIM // 2
    offs_d = tl.arange(0, HEAD_DIM)
    offs_p = tl.arange(0, HALF)
    g_e, g_o = tl.split(tl.reshape(g, (BLOCK, HALF, 2)))
    cs = pos[:, None] * HALF + offs_p[None, :]
    cos = tl.load(Cos + cs, mask=valid[:, None], other=0.0)
    sin = tl.load(Sin + cs, mask=valid[:, None], other=0.0)
    dx = tl.reshape(tl.join(g_e * cos + g_o * sin, g_o * cos - g_e * sin), (BLOCK, HEAD_DIM))
    tl.store(DX + pos[:, None] * stride_xt + offs_d[None, :], _to_input_dtype(dx, DX, UPCAST), mask=valid[:, None])


@triton.jit
def _dot_operand(x, Like, UPCAST: tl.constexpr):
    # Round to the input dtype (Like's element type; the reference rounds rotated q, k too), so
    # GPU dots run on tensor cores; the interpreter computes 16-bit (bf16 above all) wrongly, so
    # it gets fp32 back.
    x = _to_input_dtype(x, Like, UPCAST)
    if UPCAST:
        x = x.to(tl.float32)
    return x


@triton.jit
def _rope_operand(X, stride_xt, pos, valid, Cos, Sin, Like, HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr,
                  UPCAST: tl.constexpr, PIN: tl.constexpr):
    # Rows `pos` of q or k rotated (_rope_load) as a dot operand, rotated once. The backward uses each such
    # tile in two dots (k: the B operand of S = q kᵀ and of dQ += dS k; q likewise in the dK/dV loop), and
    # Triton's layout pass, left alone, recomputes the rotation in each dot's operand layout (replicated
    # over threads, cos/sin staged through shared memory): twice the FMAs. An identity it cannot look
    # through (a non-pure `mov`, which ptxas deletes) keeps the rotation in the load's layout and converts
    # the result instead — on mma.sync tiles a third fewer instructions a step (split-w4's SASS loop bodies
    # 739 → 408 for dQ, 972 → 675 for dK/dV; benchmarks/attention_sass.py --no-pin shows the other). Values
    # are unchanged. PIN: the candidate's `pin` for 16-bit inputs (block_config), never under the
    # interpreter (it has no inline asm).
    x = _rope_load(X, stride_xt, pos, valid, Cos, Sin, HEAD_DIM, BLOCK)
    if PIN:
        x = tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=False, pack=1)
    return _dot_operand(x, Like, UPCAST)


@triton.jit
def _load_rows(X, stride_xt, rows, valid, HEAD_DIM: tl.constexpr, UPCAST: tl.constexpr):
    # A plain (BLOCK, D) tile of rows `rows` (v, o, dO), fp32 under the interpreter.
    offs_d = tl.arange(0, HEAD_DIM)
    x = tl.load(X + rows[:, None] * stride_xt + offs_d[None, :], mask=valid[:, None], other=0.0)
    if UPCAST:
        x = x.to(tl.float32)
    return x


@triton.jit
def _rope_attn_fwd_kernel(
    Q, K, V, Cos, Sin, Out, Lse,
    stride_qb, stride_qh, stride_qt,
    stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt,
    stride_ob, stride_oh, stride_ot,
    stride_lb, stride_lh,
    H, T, TQ, q_start, q_step, n_blocks, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr, PIN: tl.constexpr,
):
    # Causal RoPE attention forward for the TQ queries at positions q_start + r·q_step:
    # Out[r] = softmax(rope(q) rope(k)ᵀ / sqrt(D), keys ≤ position) v, Lse[r] = the row
    # log-sum-exp (natural log, fp32). 1-D grid B·H·n_blocks, query block fastest: a head's
    # blocks are adjacent, so its K and V are read from DRAM once (T ≤ 128: one program per head).
    # fp32 accumulators, online softmax in base 2 (FlashAttention-2, arXiv 2307.08691); replaces
    # apply_rope ×2 + SDPA of fastgrok.rope.rope_attention_reference.
    pid = tl.program_id(0)
    bh = pid // n_blocks
    r0 = (pid % n_blocks) * BLOCK_M
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    Out += b * stride_ob + h * stride_oh
    Lse += b * stride_lb + h * stride_lh

    offs_r = r0 + tl.arange(0, BLOCK_M)
    row_ok = offs_r < TQ
    pos = q_start + offs_r * q_step  # (BLOCK_M,) absolute query positions
    q = _rope_operand(Q, stride_qt, pos, row_ok, Cos, Sin, Q, HEAD_DIM, BLOCK_M, UPCAST, PIN)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running row max (base 2)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running row sum
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    hi = q_start + (tl.minimum(r0 + BLOCK_M, TQ) - 1) * q_step + 1  # keys after the last query are masked
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        key_ok = offs_n < T
        k = _rope_operand(K, stride_kt, offs_n, key_ok, Cos, Sin, Q, HEAD_DIM, BLOCK_N, UPCAST, PIN)
        v = _load_rows(V, stride_vt, offs_n, key_ok, HEAD_DIM, UPCAST)
        s = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION)
        keep = (offs_n[None, :] <= pos[:, None]) & key_ok[None, :]
        s = tl.where(keep, s * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))  # finite: key 0 is in the first block of every row
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc += tl.dot(_dot_operand(p, Q, UPCAST), v, input_precision=INPUT_PRECISION)
        m_i = m_new

    acc = acc / l_i[:, None]
    offs_d = tl.arange(0, HEAD_DIM)
    tl.store(Out + offs_r[:, None] * stride_ot + offs_d[None, :], _to_input_dtype(acc, Out, UPCAST), mask=row_ok[:, None])
    tl.store(Lse + offs_r, (m_i + tl.log2(l_i)) * 0.6931471805599453, mask=row_ok)


@triton.jit
def _query_rows(Out, DO, Lse, stride_ot, stride_dot, offs_r, row_ok, HEAD_DIM: tl.constexpr, UPCAST: tl.constexpr,
                PRE_DELTA: tl.constexpr):
    # dO, lse·log2(e) and Delta = rowsum(dO ∘ O) (fp32) of query rows offs_r: Delta inline,
    # recomputed where needed (its rows are in L1/L2); with PRE_DELTA, Out is the head's Delta row
    # (fp32, written by _rope_attn_bwd_delta_kernel) and Delta is loaded.
    do = _load_rows(DO, stride_dot, offs_r, row_ok, HEAD_DIM, UPCAST)
    if PRE_DELTA:
        delta = tl.load(Out + offs_r, mask=row_ok, other=0.0)
    else:
        o = _load_rows(Out, stride_ot, offs_r, row_ok, HEAD_DIM, False)
        delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
    lse2 = tl.load(Lse + offs_r, mask=row_ok, other=0.0) * 1.4426950408889634
    return do, lse2, delta


@triton.jit
def _bwd_dkdv_block(
    Q, K, V, Cos, Sin, Out, DO, Lse, DK, DV,
    stride_qt, stride_kt, stride_vt, stride_ot, stride_dot, stride_dkt, stride_dvt,
    T, TQ, q_start, q_step, start_n, sm_scale, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr, PRE_DELTA: tl.constexpr, PIN: tl.constexpr,
):
    # dK, dV of keys [start_n, start_n + BLOCK_N): loop over the queries at or after them,
    # P = exp2(S·log2e/sqrt(D) − lse·log2e), dV += Pᵀ dO, dS = P ∘ (dO Vᵀ − Delta), dK += dSᵀ Q.
    offs_n = start_n + tl.arange(0, BLOCK_N)
    key_ok = offs_n < T
    k = _rope_operand(K, stride_kt, offs_n, key_ok, Cos, Sin, Q, HEAD_DIM, BLOCK_N, UPCAST, PIN)
    v = _load_rows(V, stride_vt, offs_n, key_ok, HEAD_DIM, UPCAST)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    first = (tl.maximum(start_n - q_start, 0) + q_step - 1) // q_step  # first query row at or after start_n
    for r0 in range(first, TQ, BLOCK_M):
        offs_r = r0 + tl.arange(0, BLOCK_M)
        row_ok = offs_r < TQ
        pos = q_start + offs_r * q_step
        q = _rope_operand(Q, stride_qt, pos, row_ok, Cos, Sin, Q, HEAD_DIM, BLOCK_M, UPCAST, PIN)
        do, lse2, delta = _query_rows(Out, DO, Lse, stride_ot, stride_dot, offs_r, row_ok, HEAD_DIM, UPCAST, PRE_DELTA)
        # Transposed scores (keys × queries), so Pᵀ and dSᵀ are dot operands straight from registers.
        s_t = tl.dot(k, tl.trans(q), input_precision=INPUT_PRECISION)
        keep = (offs_n[:, None] <= pos[None, :]) & row_ok[None, :]
        p_t = tl.where(keep, tl.exp2(s_t * qk_scale - lse2[None, :]), 0.0)
        dv += tl.dot(_dot_operand(p_t, Q, UPCAST), do, input_precision=INPUT_PRECISION)
        dp_t = tl.dot(v, tl.trans(do), input_precision=INPUT_PRECISION)
        ds_t = _dot_operand(p_t * (dp_t - delta[None, :]), Q, UPCAST)
        dk += tl.dot(ds_t, q, input_precision=INPUT_PRECISION)
    _rope_store_grad(DK, stride_dkt, offs_n, key_ok, Cos, Sin, dk * sm_scale, HEAD_DIM, BLOCK_N, UPCAST)
    offs_d = tl.arange(0, HEAD_DIM)
    tl.store(DV + offs_n[:, None] * stride_dvt + offs_d[None, :], _to_input_dtype(dv, DV, UPCAST), mask=key_ok[:, None])


@triton.jit
def _bwd_dq_block(
    Q, K, V, Cos, Sin, Out, DO, Lse, DQ,
    stride_qt, stride_kt, stride_vt, stride_ot, stride_dot, stride_dqt,
    T, TQ, q_start, q_step, r0, sm_scale, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr, PRE_DELTA: tl.constexpr, PIN: tl.constexpr,
):
    # dQ of query rows [r0, r0 + BLOCK_M): loop over keys up to the last query's position,
    # P and dS recomputed as in _bwd_dkdv_block, dQ += dS K; every row summed in a fixed order.
    offs_r = r0 + tl.arange(0, BLOCK_M)
    row_ok = offs_r < TQ
    pos = q_start + offs_r * q_step
    q = _rope_operand(Q, stride_qt, pos, row_ok, Cos, Sin, Q, HEAD_DIM, BLOCK_M, UPCAST, PIN)
    do, lse2, delta = _query_rows(Out, DO, Lse, stride_ot, stride_dot, offs_r, row_ok, HEAD_DIM, UPCAST, PRE_DELTA)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    hi = q_start + (tl.minimum(r0 + BLOCK_M, TQ) - 1) * q_step + 1
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        key_ok = offs_n < T
        k = _rope_operand(K, stride_kt, offs_n, key_ok, Cos, Sin, Q, HEAD_DIM, BLOCK_N, UPCAST, PIN)
        v = _load_rows(V, stride_vt, offs_n, key_ok, HEAD_DIM, UPCAST)
        s = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION)
        keep = (offs_n[None, :] <= pos[:, None]) & row_ok[:, None]
        p = tl.where(keep, tl.exp2(s * qk_scale - lse2[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=INPUT_PRECISION)
        ds = _dot_operand(p * (dp - delta[:, None]), Q, UPCAST)
        dq += tl.dot(ds, k, input_precision=INPUT_PRECISION)
    _rope_store_grad(DQ, stride_dqt, pos, row_ok, Cos, Sin, dq * sm_scale, HEAD_DIM, BLOCK_M, UPCAST)


@triton.jit
def _zero_unqueried(DQ, stride_dqt, T, TQ, q_start, q_step, HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr):
    # With a query slice, dQ is zero at the positions that were not queried.
    offs_d = tl.arange(0, HEAD_DIM)
    for t0 in range(0, T, BLOCK):
        t = t0 + tl.arange(0, BLOCK)
        rel = tl.maximum(t - q_start, 0)
        queried = (t >= q_start) & (rel % q_step == 0) & (rel // q_step < TQ)
        zero = tl.zeros([BLOCK, HEAD_DIM], dtype=DQ.dtype.element_ty)
        tl.store(DQ + t[:, None] * stride_dqt + offs_d[None, :], zero, mask=((t < T) & ~queried)[:, None])


@triton.jit
def _rope_attn_bwd_delta_kernel(
    Out, DO, Delta, stride_ob, stride_oh, stride_ot, stride_dob, stride_doh, stride_dot, H, TQ, n_blocks,
    HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr,
):
    # The backward's pre-pass (candidates with pre_delta): Delta = rowsum(dO ∘ O) in fp32 for BLOCK query
    # rows of one head, into a contiguous (B, H, TQ) buffer; grid B·H·n_blocks. FlashAttention-2's
    # preprocessing step: the main kernel then loads one float per query row instead of an O tile.
    pid = tl.program_id(0)
    bh = pid // n_blocks
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_r = (pid % n_blocks) * BLOCK + tl.arange(0, BLOCK)
    row_ok = offs_r < TQ
    do = _load_rows(DO + b * stride_dob + h * stride_doh, stride_dot, offs_r, row_ok, HEAD_DIM, False)
    o = _load_rows(Out + b * stride_ob + h * stride_oh, stride_ot, offs_r, row_ok, HEAD_DIM, False)
    tl.store(Delta + bh.to(tl.int64) * TQ + offs_r, tl.sum(do.to(tl.float32) * o.to(tl.float32), 1), mask=row_ok)


@triton.jit
def _rope_attn_bwd_kernel(
    Q, K, V, Cos, Sin, Out, DO, Lse, DQ, DK, DV,
    stride_qb, stride_qh, stride_qt,
    stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt,
    stride_ob, stride_oh, stride_ot,
    stride_dob, stride_doh, stride_dot,
    stride_lb, stride_lh,
    stride_dqb, stride_dqh, stride_dqt,
    stride_dkb, stride_dkh, stride_dkt,
    stride_dvb, stride_dvh, stride_dvt,
    H, T, TQ, q_start, q_step, n_kblocks, n_qblocks, sm_scale, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_M2: tl.constexpr, BLOCK_N2: tl.constexpr, ONE_PROGRAM: tl.constexpr, SLICED: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr, PRE_DELTA: tl.constexpr, PIN: tl.constexpr,
):
    # Causal RoPE attention backward in one launch, deterministic, no atomics, Delta inline.
    # ONE_PROGRAM (T ≤ 128): grid B·H, each program does its head's dK, dV (key blocks of
    # BLOCK_N, queries in BLOCK_M) then dQ (query blocks of BLOCK_M2, keys in BLOCK_N2).
    # Else grid B·H·(n_kblocks + n_qblocks), a head's programs adjacent: one key block or one
    # query block each. dK, dQ rotated back by RoPE's transpose. fp32 accumulators; FA-2 backward.
    pid = tl.program_id(0)
    if ONE_PROGRAM:
        bh = pid
        job = 0
    else:
        bh = pid // (n_kblocks + n_qblocks)
        job = pid % (n_kblocks + n_qblocks)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    Out += b * stride_ob + h * stride_oh
    DO += b * stride_dob + h * stride_doh
    Lse += b * stride_lb + h * stride_lh
    DQ += b * stride_dqb + h * stride_dqh
    DK += b * stride_dkb + h * stride_dkh
    DV += b * stride_dvb + h * stride_dvh
    if ONE_PROGRAM:
        for start_n in range(0, T, BLOCK_N):
            _bwd_dkdv_block(Q, K, V, Cos, Sin, Out, DO, Lse, DK, DV,
                            stride_qt, stride_kt, stride_vt, stride_ot, stride_dot, stride_dkt, stride_dvt,
                            T, TQ, q_start, q_step, start_n, sm_scale, qk_scale,
                            HEAD_DIM, BLOCK_M, BLOCK_N, INPUT_PRECISION, UPCAST, PRE_DELTA, PIN)
        for r0 in range(0, TQ, BLOCK_M2):
            _bwd_dq_block(Q, K, V, Cos, Sin, Out, DO, Lse, DQ,
                          stride_qt, stride_kt, stride_vt, stride_ot, stride_dot, stride_dqt,
                          T, TQ, q_start, q_step, r0, sm_scale, qk_scale,
                          HEAD_DIM, BLOCK_M2, BLOCK_N2, INPUT_PRECISION, UPCAST, PRE_DELTA, PIN)
        if SLICED:
            _zero_unqueried(DQ, stride_dqt, T, TQ, q_start, q_step, HEAD_DIM, BLOCK_N)
    else:
        if job < n_kblocks:
            _bwd_dkdv_block(Q, K, V, Cos, Sin, Out, DO, Lse, DK, DV,
                            stride_qt, stride_kt, stride_vt, stride_ot, stride_dot, stride_dkt, stride_dvt,
                            T, TQ, q_start, q_step, job * BLOCK_N, sm_scale, qk_scale,
                            HEAD_DIM, BLOCK_M, BLOCK_N, INPUT_PRECISION, UPCAST, PRE_DELTA, PIN)
        else:
            _bwd_dq_block(Q, K, V, Cos, Sin, Out, DO, Lse, DQ,
                          stride_qt, stride_kt, stride_vt, stride_ot, stride_dot, stride_dqt,
                          T, TQ, q_start, q_step, (job - n_kblocks) * BLOCK_M2, sm_scale, qk_scale,
                          HEAD_DIM, BLOCK_M2, BLOCK_N2, INPUT_PRECISION, UPCAST, PRE_DELTA, PIN)
            if SLICED:
                if job == n_kblocks:
                    _zero_unqueried(DQ, stride_dqt, T, TQ, q_start, q_step, HEAD_DIM, BLOCK_N2)


# ───────────────────────────── tiles and traffic ─────────────────────────────


# GPU tiles per (head_dim, bytes per element): forward (BLOCK_M, BLOCK_N, num_warps, num_stages),
# backward (BLOCK_M, BLOCK_N, BLOCK_M2, BLOCK_N2, num_warps, num_stages) — dK/dV pass, then dQ
# pass. Picked with `python -m fastgrok.bench.sm90` (offline sm_90 compiles: no spills, shared
# memory within the H100's 227 KiB). The forward's BLOCK_M is capped by the query count, so for
# T ≤ 128 one query block covers the head. These are candidate "v2"'s (measured on the H200:
# docs/kernels.md); the other candidates below change the 16-bit entries.
_GPU_TILES = {
    (32, 2): dict(fwd=(128, 64, 4, 2), bwd=(32, 64, 64, 32, 4, 1)),
    (64, 2): dict(fwd=(128, 64, 8, 2), bwd=(32, 64, 64, 32, 8, 1)),
    (128, 2): dict(fwd=(128, 32, 8, 2), bwd=(32, 32, 32, 32, 8, 1)),  # 64-wide spills under Triton 3.6
    (32, 4): dict(fwd=(64, 32, 4, 1), bwd=(16, 32, 32, 16, 4, 1)),
    (64, 4): dict(fwd=(32, 16, 8, 1), bwd=(16, 16, 16, 16, 8, 1)),
    (128, 4): dict(fwd=(16, 16, 8, 1), bwd=(16, 16, 16, 16, 8, 1)),
}


@dataclass(frozen=True)
class Candidate:
    """One launch configuration of the attention kernels, chosen by name (an A/B on the GPU times each).

    `tiles` overrides entries of _GPU_TILES per (head_dim, itemsize) and pass ("fwd"/"bwd"); `split`:
    the backward's dK/dV and dQ run as separate programs (one per key block, one per query block,
    a head's programs adjacent) at every T, not only past ONE_PROGRAM_MAX_T; `pre_delta`: Delta =
    rowsum(dO ∘ O) in a pre-pass launch (_rope_attn_bwd_delta_kernel) instead of inline per tile step; `pin`:
    rotated q and k tiles computed once and converted to each dot's layout (_rope_operand), not recomputed
    in each (v2, the kernel measured on the H200, had no pin; the same values either way) — 16-bit inputs
    only, where the SASS showed the gain: fp32 (ieee dots on the FMA units, v2's small tiles) keeps the code
    the H200 checked."""

    about: str
    split: bool = False
    pre_delta: bool = False
    pin: bool = True
    tiles: tuple[tuple[tuple[int, int], str, tuple[int, ...]], ...] = ()

    def config(self, D: int, itemsize: int) -> dict[str, tuple[int, ...]]:
        out = dict(_GPU_TILES[(D, itemsize)])
        for key, part, t in self.tiles:
            if key == (D, itemsize):
                out[part] = t
        return out


def _all16(part: str, tiles: dict[int, tuple[int, ...]]) -> tuple:
    """The same override for bf16 and fp16 (itemsize 2) at each head dim given."""
    return tuple(((D, 2), part, t) for D, t in tiles.items())


def _d128(bwd: tuple[int, ...], fwd: tuple[int, ...] | None = None) -> tuple:
    """16-bit overrides at the paper's head dim only: the backward's tiles, and the forward's if given."""
    return _all16("bwd", {128: bwd}) + (_all16("fwd", {128: fwd}) if fwd else ())


# split-w4's 16-bit tiles: the split backward at 4 warps, 2 stages; 32-64-query forward blocks at 4 warps.
_W4_TILES = (_all16("bwd", {32: (32, 64, 64, 32, 4, 2), 64: (32, 32, 32, 32, 4, 2), 128: (32, 32, 32, 32, 4, 2)})
             + _all16("fwd", {32: (64, 64, 4, 2), 64: (32, 64, 4, 2), 128: (32, 32, 4, 2)}))

# docs/kernels.md derives each from the latency model fitted to the H200's figures; the offline
# compile (bench_results/kernel_report*.md) gives their registers and spills. Unmeasured on GPU
# except "v2".
CANDIDATES: dict[str, Candidate] = {
    "v2": Candidate("the kernels measured on the H200 (2026-12-04): backward one program per head for T ≤ 128, "
                    "the rotation not pinned", pin=False),
    "split": Candidate("backward: dK/dV and dQ in separate programs (3 + 3 per head at T = 95), v2's tiles",
                       split=True),
    "split-w4": Candidate(
        "split backward at 4 warps, 2-3 stages; forward query blocks of 32-64 at 4 warps: 2-4 programs per SM",
        split=True, tiles=_W4_TILES),
    "split-w4-unpinned": Candidate(
        "split-w4 without the rotation's pin (the rotation recomputed in each dot's operand layout, as in v2): "
        "what the pin is worth, measured", split=True, pin=False, tiles=_W4_TILES),
    "split-w4-s1": Candidate(
        "split-w4 at one stage at D = 128 (other head dims: v2's tiles, split; no loads in flight across steps; "
        "220 registers, still 2 programs per SM): the fewest instructions of the mma.sync candidates, is the "
        "prefetch worth more?", split=True,
        tiles=_d128((32, 32, 32, 32, 4, 1), (32, 32, 4, 2))),
    "split-w4-delta": Candidate(
        "split-w4 with Delta = rowsum(dO ∘ O) from a pre-pass launch: no O tile and no row sum in the tile steps",
        split=True, pre_delta=True, tiles=_W4_TILES),
    # The tile sweep (D = 128, the paper's head dim; other head dims keep v2's tiles, split): spill-free in the
    # offline compile, spanning what the latency model cannot rank — wgmma (64-row dot operands, Hopper's
    # asynchronous tensor-core path: HGMMA in the SASS) against mma.sync, 8 warps against 4, 1 against 3
    # programs per SM, pipeline depth. benchmarks/kernel_ab.py times every one at the paper's shape and takes
    # the fastest few on to the train step.
    "wg64-w8": Candidate(
        "split backward on wgmma: 64-key dK/dV and 64-query dQ programs stepping over 32 rows, 8 warps, 3 stages "
        "(2 stages spill under Triton 3.6); forward 64-query blocks on wgmma, 4 warps",
        split=True, tiles=_d128((32, 64, 64, 32, 8, 3), (64, 32, 4, 2))),
    "wg64-r16-w8": Candidate(
        "wg64-w8 stepping over 16 rows (more, shorter steps; fewer registers); forward at 3 stages",
        split=True, tiles=_d128((16, 64, 64, 16, 8, 3), (64, 32, 4, 3))),
    "split-w8": Candidate(
        "split backward, 32 × 32 tiles at 8 warps, 2 stages (mma.sync; 212 registers); forward 64-query blocks "
        "over every key at once on wgmma (one step per program), 8 warps",
        split=True, tiles=_d128((32, 32, 32, 32, 8, 2), (64, 128, 8, 1))),
    "split16x16-w4": Candidate(
        "split backward, 16 × 16 tiles at 4 warps (162 registers: 3 programs per SM); forward 32-query blocks",
        split=True, tiles=_d128((16, 16, 16, 16, 4, 2), (32, 32, 4, 2))),
}
DEFAULT_CANDIDATE = "split-w4"  # by the model and the offline compile (docs/kernels.md); the GPU A/B decides
_active = [DEFAULT_CANDIDATE]  # the launchers' candidate; attention_candidate() sets it for a block of code


def check_candidate(name: str) -> str:
    if name not in CANDIDATES:
        raise ValueError(f"attention candidate {name!r} is not one of {', '.join(CANDIDATES)}")
    return name


@contextlib.contextmanager
def attention_candidate(name: str) -> Iterator[None]:
    """Within it every attention launch (custom ops and compiled models too: the ops read it when they
    run) takes candidate `name`'s configuration; for A/B timing (benchmarks/kernel_ab.py)."""
    _active.append(check_candidate(name))
    try:
        yield
    finally:
        _active.pop()


def active_candidate() -> str:
    return _active[-1]


def block_config(T: int, TQ: int, D: int, itemsize: int, interpret: bool,
                 candidate: str | None = None) -> dict[str, Any]:
    """Tiles of the forward and backward launch for T keys, TQ queries, head_dim D, whether the backward
    splits dK/dV from dQ, its Delta pre-pass and the rotation's pin (see Candidate); the active candidate
    unless one is named."""
    cand = CANDIDATES[check_candidate(candidate or active_candidate())]
    split = cand.split or T > ONE_PROGRAM_MAX_T
    q_tile = min(128, max(16, next_pow2(TQ)))  # ≥ 16 for tl.dot
    k_tile = min(128, max(16, next_pow2(T)))
    if interpret:  # few, big blocks: the interpreter pays per program and per op, not per element
        return dict(fwd=(q_tile, k_tile, 4, 1), bwd=(q_tile, k_tile, q_tile, k_tile, 4, 1), split=split,
                    pre_delta=cand.pre_delta, pin=False)  # the interpreter has no inline asm
    tiles = cand.config(D, itemsize)
    fm, fn, fw, fs = tiles["fwd"]
    bm, bn, bm2, bn2, bw, bs = tiles["bwd"]
    return dict(fwd=(min(fm, q_tile), min(fn, k_tile), fw, fs),
                bwd=(min(bm, q_tile), min(bn, k_tile), min(bm2, q_tile), min(bn2, k_tile), bw, bs), split=split,
                pre_delta=cand.pre_delta, pin=cand.pin and itemsize == 2)


def traffic(B: int, H: int, T: int, D: int, itemsize: int, TQ: int | None = None,
            candidate: str | None = None) -> dict[str, dict[str, int]]:
    """Modelled DRAM bytes of each launch: {"forward"|"backward": {"read", "write", "launches"}}.

    Model: a head's programs are adjacent in launch order (one program for T ≤ 128), so every
    tensor row a launch touches comes from DRAM once and re-reads within the head hit L2; the
    fp32 cos/sin tables (T, D/2) are read once per launch. TQ is the query count (q_slice).
    Forward reads q (TQ rows), k, v (T rows), writes out (TQ rows) and lse; backward reads q,
    out, dO (TQ rows), k, v and lse, writes dq (T rows: zeros where not queried), dk, dv; a candidate
    with pre_delta (default: the active one) reads dO once more and writes and reads Delta (fp32, TQ
    rows), in two launches.
    """
    TQ = T if TQ is None else TQ
    heads, row = B * H, D * itemsize
    tables = 2 * T * (D // 2) * 4
    fwd = dict(read=heads * (TQ + 2 * T) * row + tables, write=heads * (TQ * row + TQ * 4), launches=1)
    bwd = dict(read=heads * (3 * TQ * row + 2 * T * row + TQ * 4) + tables, write=heads * 3 * T * row, launches=1)
    if CANDIDATES[check_candidate(candidate or active_candidate())].pre_delta:
        bwd = dict(read=bwd["read"] + heads * (TQ * row + TQ * 4), write=bwd["write"] + heads * TQ * 4, launches=2)
    return {"forward": fwd, "backward": bwd}


def ideal_bytes(B: int, H: int, T: int, D: int, itemsize: int) -> dict[str, int]:
    """The floor: forward reads q, k, v and writes out (4n); backward reads q, k, v, out, dO, writes dq, dk, dv (8n)."""
    n = B * H * T * D * itemsize
    return {"forward": 4 * n, "backward": 8 * n}


# ───────────────────────────── launchers ─────────────────────────────


@functools.lru_cache(maxsize=32)
def _rope_table(T: int, D: int, theta: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """cos, sin (T, D/2) fp32, bit-identical to fastgrok.rope.rope_angles(T, D, theta).cos()/.sin()."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, device=device)[: D // 2].float() / D))  # (D/2,)
    t = torch.arange(T, device=device, dtype=torch.float32)  # (T,)
    ang = t[:, None] * inv_freq[None, :]  # (T, D/2)
    return ang.cos().contiguous(), ang.sin().contiguous()


def query_positions(q_slice: slice | None, T: int) -> tuple[int, int, int]:
    """(start, step, count) of the query positions range(T)[q_slice]; step ≥ 1."""
    if q_slice is None:
        return 0, 1, T
    if not isinstance(q_slice, slice):
        raise TypeError(f"q_slice must be a slice or None, got {type(q_slice).__name__}")
    r = range(T)[q_slice]
    if len(r) == 0:
        return 0, 1, 0
    if r.step < 0:
        raise ValueError(f"q_slice={q_slice!r} runs backwards; the fused kernel takes increasing positions (step ≥ 1)")
    return r.start, r.step, len(r)


def _check_heads(tensors: dict[str, Tensor], T: int | None = None) -> tuple[int, int, int, int]:
    """Validate (B, H, ·, D) tensors with one dtype and device (and T rows unless T is None); return B, H, T, D."""
    first_name, first = next(iter(tensors.items()))
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        check_device(t, name)
        check_float_dtype(t, name)
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, H, T, D), got {tuple(t.shape)}")
        want = first.shape if T is None else (*first.shape[:2], T, first.shape[3])
        if t.shape != want:
            raise ValueError(f"{name} has shape {tuple(t.shape)}; it must be {tuple(want)}")
        if t.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {first_name} has {first.dtype}; they must match")
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device} but {first_name} is on {first.device}; they must match")
        if t.stride(-1) != 1 and t.shape[-1] > 1:
            raise ValueError(f"{name} has last-dim stride {t.stride(-1)}; it must be 1 (head dims contiguous)")
    B, H, T_, D = first.shape
    if D not in HEAD_DIMS:
        raise ValueError(f"head_dim D={D} is not supported; valid head dims are {HEAD_DIMS}")
    return B, H, T_, D


def _check_lse(lse: Tensor, shape: tuple[int, int, int], device: torch.device, name: str = "lse") -> None:
    if lse.shape != shape or lse.dtype != torch.float32 or not lse.is_contiguous() or lse.device != device:
        raise ValueError(
            f"{name} must be a contiguous float32 tensor of shape {shape} on {device}, "
            f"got {lse.dtype} {tuple(lse.shape)} on {lse.device} (contiguous={lse.is_contiguous()})"
        )


def _check_theta(theta: float) -> float:
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not math.isfinite(theta) or theta <= 0:
        raise ValueError(f"theta={theta!r}; RoPE's base must be a finite positive number")
    return float(theta)


def _new_heads(B: int, H: int, T: int, D: int, like: Tensor) -> Tensor:
    """(B, H, T, D) view of a contiguous (B, T, H, D) buffer: `.transpose(1, 2).reshape(B, T, H*D)` is free."""
    return torch.empty(B, T, H, D, dtype=like.dtype, device=like.device).transpose(1, 2)


def rope_attn_forward(
    q: Tensor, k: Tensor, v: Tensor, theta: float = 10000.0, *, q_slice: slice | None = None,
    out: Tensor | None = None, lse: Tensor | None = None, input_precision: str | None = None,
    candidate: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Causal RoPE attention forward. q, k, v (B, H, T, D), any strides with the last one 1.

    With q_slice only the queries at positions range(T)[q_slice] (T' of them; every key and
    value). Returns out (B, H, T', D) — a view of a (B, T', H, D) buffer unless `out` is given —
    and lse (B, H, T') fp32, the natural-log log-sum-exp of each row's scaled scores.
    `input_precision` is tl.dot's (default "ieee" for fp32: exact; ignored by the interpreter).
    `candidate` names a launch configuration of CANDIDATES (default: the active one, see
    attention_candidate).
    """
    B, H, T, D = _check_heads({"q": q, "k": k, "v": v})
    theta = _check_theta(theta)
    q_start, q_step, TQ = query_positions(q_slice, T)
    precision = dot_precision(q.dtype, input_precision)
    if out is None:
        out = _new_heads(B, H, TQ, D, q)
    else:
        _check_heads({"q": q, "out": out} if TQ == T else {"out": out, "q": q[:, :, :TQ]}, TQ)
    if lse is None:
        lse = torch.empty(B, H, TQ, dtype=torch.float32, device=q.device)
    else:
        _check_lse(lse, (B, H, TQ), q.device)
    if out.numel() == 0:
        return out, lse
    cos, sin = _rope_table(T, D, theta, q.device)
    config = block_config(T, TQ, D, q.element_size(), interpreted(), candidate)
    BLOCK_M, BLOCK_N, warps, stages = config["fwd"]
    n_blocks = triton.cdiv(TQ, BLOCK_M)
    launch(
        _rope_attn_fwd_kernel, (B * H * n_blocks,),
        q, k, v, cos, sin, out, lse,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        lse.stride(0), lse.stride(1),
        H, T, TQ, q_start, q_step, n_blocks, LOG2E / math.sqrt(D),
        HEAD_DIM=D, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
        INPUT_PRECISION=precision, UPCAST=interpreted(), PIN=config["pin"] and not interpreted(),
        num_warps=warps, num_stages=stages, enable_fp_fusion=FP_FUSION,
    )
    return out, lse


def rope_attn_backward(
    do: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, theta: float = 10000.0, *,
    q_slice: slice | None = None, dq: Tensor | None = None, dk: Tensor | None = None, dv: Tensor | None = None,
    input_precision: str | None = None, candidate: str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients (dq, dk, dv) of `rope_attn_forward` for upstream gradient `do`, in one launch, deterministic.

    `out`, `lse` are what the forward returned (T' query rows with q_slice; `do` has T' rows too);
    dq (zero at positions not queried), dk, dv are (B, H, T, D) and may be given (any strides
    with the last one 1, e.g. slices of one dqkv buffer), else views of (B, T, H, D) buffers.
    `candidate` as for rope_attn_forward.
    """
    B, H, T, D = _check_heads({"q": q, "k": k, "v": v})
    q_start, q_step, TQ = query_positions(q_slice, T)
    _check_heads({"q": q, "do": do, "out": out} if TQ == T else {"do": do, "out": out}, TQ)
    if do.dtype != q.dtype or out.dtype != q.dtype:
        raise TypeError(f"do ({do.dtype}) and out ({out.dtype}) must have q's dtype {q.dtype}")
    _check_lse(lse, (B, H, TQ), q.device)
    theta = _check_theta(theta)
    precision = dot_precision(q.dtype, input_precision)
    dq = _new_heads(B, H, T, D, q) if dq is None else dq
    dk = _new_heads(B, H, T, D, q) if dk is None else dk
    dv = _new_heads(B, H, T, D, q) if dv is None else dv
    _check_heads({"q": q, "dq": dq, "dk": dk, "dv": dv})
    if q.numel() == 0:
        return dq, dk, dv
    if TQ == 0:  # nothing queried: no gradient reaches q, k or v
        return dq.zero_(), dk.zero_(), dv.zero_()
    cos, sin = _rope_table(T, D, theta, q.device)
    config = block_config(T, TQ, D, q.element_size(), interpreted(), candidate)
    BM, BN, BM2, BN2, warps, stages = config["bwd"]
    one_program = not config["split"]
    n_kblocks, n_qblocks = triton.cdiv(T, BN), triton.cdiv(TQ, BM2)
    programs = B * H * (1 if one_program else n_kblocks + n_qblocks)
    sm_scale = 1.0 / math.sqrt(D)
    o_arg, o_strides = out, out.stride()[:3]
    if config["pre_delta"]:  # Delta (B, H, TQ) first; the main kernel takes it where it would read O
        o_arg = torch.empty(B, H, TQ, dtype=torch.float32, device=q.device)
        o_strides = (H * TQ, TQ, 1)
        rows = min(64, next_pow2(TQ))
        n_dblocks = triton.cdiv(TQ, rows)
        launch(_rope_attn_bwd_delta_kernel, (B * H * n_dblocks,), out, do, o_arg,
               out.stride(0), out.stride(1), out.stride(2), do.stride(0), do.stride(1), do.stride(2),
               H, TQ, n_dblocks, HEAD_DIM=D, BLOCK=rows, num_warps=4, enable_fp_fusion=FP_FUSION)
    launch(
        _rope_attn_bwd_kernel, (programs,),
        q, k, v, cos, sin, o_arg, do, lse, dq, dk, dv,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        *o_strides,
        do.stride(0), do.stride(1), do.stride(2),
        lse.stride(0), lse.stride(1),
        dq.stride(0), dq.stride(1), dq.stride(2),
        dk.stride(0), dk.stride(1), dk.stride(2),
        dv.stride(0), dv.stride(1), dv.stride(2),
        H, T, TQ, q_start, q_step, n_kblocks, n_qblocks, sm_scale, sm_scale * LOG2E,
        HEAD_DIM=D, BLOCK_M=BM, BLOCK_N=BN, BLOCK_M2=BM2, BLOCK_N2=BN2,
        ONE_PROGRAM=one_program, SLICED=TQ != T,
        INPUT_PRECISION=precision, UPCAST=interpreted(), PRE_DELTA=config["pre_delta"],
        PIN=config["pin"] and not interpreted(),
        num_warps=warps, num_stages=stages, enable_fp_fusion=FP_FUSION,
    )
    return dq, dk, dv


def _unit_stride(t: Tensor) -> Tensor:
    """Upstream gradients may come with any strides (even expanded, stride 0): make dims contiguous."""
    return t if t.stride(-1) == 1 else t.contiguous()


def _as_slice(q_start: int, q_step: int, q_len: int, T: int) -> slice | None:
    """The custom ops carry a query slice as three ints; None when it is every position."""
    if (q_start, q_step, q_len) == (0, 1, T):
        return None
    return slice(q_start, q_start + q_step * q_len, q_step)


# ───────────────────────────── custom ops: (B, H, T, D) tensors ─────────────────────────────


def _heads_fwd_impl(q: Tensor, k: Tensor, v: Tensor, theta: float) -> tuple[Tensor, Tensor]:
    return rope_attn_forward(q, k, v, theta)


def _heads_fwd_fake(q: Tensor, k: Tensor, v: Tensor, theta: float) -> tuple[Tensor, Tensor]:
    B, H, T, D = q.shape
    return _new_heads(B, H, T, D, q), q.new_empty(B, H, T, dtype=torch.float32)


def _heads_bwd_impl(do: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                    theta: float) -> tuple[Tensor, Tensor, Tensor]:
    return rope_attn_backward(_unit_stride(do), q, k, v, out, lse, theta)


def _heads_bwd_fake(do: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                    theta: float) -> tuple[Tensor, Tensor, Tensor]:
    B, H, T, D = q.shape
    return tuple(_new_heads(B, H, T, D, q) for _ in range(3))


def _heads_setup_context(ctx, inputs: tuple, output: tuple) -> None:
    q, k, v, theta = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.theta = theta


def _heads_backward(ctx, dout: Tensor, dlse: Tensor | None) -> tuple[Tensor, Tensor, Tensor, None]:
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = torch.ops.fastgrok.rope_heads_bwd(dout, q, k, v, out, lse, ctx.theta)
    return dq, dk, dv, None


# ───────────────────────────── custom ops: the fused qkv projection ─────────────────────────────


def _split_qkv(qkv: Tensor, n_head: int) -> tuple[Tensor, Tensor, Tensor]:
    """Strided (B, H, T, D) views of q, k, v inside qkv (B, T, 3·H·D); no copies."""
    if not isinstance(qkv, Tensor) or qkv.dim() != 3:
        raise ValueError(f"qkv must be a (B, T, 3·C) tensor, got {getattr(qkv, 'shape', type(qkv).__name__)}")
    B, T, C3 = qkv.shape
    if isinstance(n_head, bool) or not isinstance(n_head, int) or n_head < 1 or C3 % (3 * n_head):
        raise ValueError(f"qkv's last dim {C3} must be 3·n_head·head_dim; got n_head={n_head!r}")
    D = C3 // (3 * n_head)
    q, k, v = _unit_stride(qkv).view(B, T, 3, n_head, D).unbind(2)  # (B, T, H, D) each
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D) each


def _qkv_fwd_impl(qkv: Tensor, n_head: int, theta: float, q_start: int, q_step: int,
                  q_len: int) -> tuple[Tensor, Tensor]:
    q, k, v = _split_qkv(qkv, n_head)
    out, lse = rope_attn_forward(q, k, v, theta, q_slice=_as_slice(q_start, q_step, q_len, qkv.shape[1]))
    B, H, TQ, D = out.shape  # out: (B, H, T', D) view of (B, T', H, D)
    return out.transpose(1, 2).reshape(B, TQ, H * D), lse  # (B, T', C), free


def _qkv_fwd_fake(qkv: Tensor, n_head: int, theta: float, q_start: int, q_step: int,
                  q_len: int) -> tuple[Tensor, Tensor]:
    B, T, C3 = qkv.shape
    return qkv.new_empty(B, q_len, C3 // 3), qkv.new_empty(B, n_head, q_len, dtype=torch.float32)


def _qkv_bwd_impl(dout: Tensor, qkv: Tensor, out: Tensor, lse: Tensor, n_head: int, theta: float,
                  q_start: int, q_step: int, q_len: int) -> Tensor:
    B, T, C3 = qkv.shape
    D = C3 // (3 * n_head)
    q, k, v = _split_qkv(qkv, n_head)
    o = out.view(B, q_len, n_head, D).transpose(1, 2)  # (B, H, T', D)
    do = _unit_stride(dout).reshape(B, q_len, n_head, D).transpose(1, 2)  # (B, H, T', D)
    dqkv = torch.empty(B, T, 3, n_head, D, dtype=qkv.dtype, device=qkv.device)
    dq, dk, dv = (g.transpose(1, 2) for g in dqkv.unbind(2))  # (B, H, T, D) views
    rope_attn_backward(do, q, k, v, o, lse, theta, q_slice=_as_slice(q_start, q_step, q_len, T), dq=dq, dk=dk, dv=dv)
    return dqkv.view(B, T, C3)


def _qkv_bwd_fake(dout: Tensor, qkv: Tensor, out: Tensor, lse: Tensor, n_head: int, theta: float,
                  q_start: int, q_step: int, q_len: int) -> Tensor:
    return torch.empty_like(qkv, memory_format=torch.contiguous_format)


def _qkv_setup_context(ctx, inputs: tuple, output: tuple) -> None:
    qkv, n_head, theta, q_start, q_step, q_len = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(qkv, out, lse)
    ctx.args = (n_head, theta, q_start, q_step, q_len)


def _qkv_backward(ctx, dout: Tensor, dlse: Tensor | None) -> tuple:
    qkv, out, lse = ctx.saved_tensors
    return torch.ops.fastgrok.rope_attn_bwd(dout, qkv, out, lse, *ctx.args), None, None, None, None, None


def _register_ops() -> None:
    """Define the four "fastgrok::rope_*" ops once per process (re-imports are no-ops)."""
    if op_defined("fastgrok::rope_attn_fwd"):
        return
    lib = torch.library
    fwd = lib.custom_op("fastgrok::rope_attn_fwd", _qkv_fwd_impl, mutates_args=(), schema=(
        "(Tensor qkv, int n_head, float theta, int q_start, int q_step, SymInt q_len) -> (Tensor, Tensor)"))
    fwd.register_fake(_qkv_fwd_fake)
    lib.custom_op("fastgrok::rope_attn_bwd", _qkv_bwd_impl, mutates_args=(), schema=(
        "(Tensor dout, Tensor qkv, Tensor out, Tensor lse, int n_head, float theta, int q_start, int q_step, "
        "SymInt q_len) -> Tensor")).register_fake(_qkv_bwd_fake)
    fwd.register_autograd(_qkv_backward, setup_context=_qkv_setup_context)
    heads = lib.custom_op("fastgrok::rope_heads_fwd", _heads_fwd_impl, mutates_args=(),
                          schema="(Tensor q, Tensor k, Tensor v, float theta) -> (Tensor, Tensor)")
    heads.register_fake(_heads_fwd_fake)
    lib.custom_op("fastgrok::rope_heads_bwd", _heads_bwd_impl, mutates_args=(), schema=(
        "(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, float theta) -> (Tensor, Tensor, Tensor)"
    )).register_fake(_heads_bwd_fake)
    heads.register_autograd(_heads_backward, setup_context=_heads_setup_context)


_register_ops()


def rope_attention(q: Tensor, k: Tensor, v: Tensor, theta: float = 10000.0) -> Tensor:
    """Causal attention over RoPE-rotated q, k: q, k, v (B, H, T, D) → (B, H, T, D), = rope_attention_reference.

    Through the custom op "fastgrok::rope_heads_fwd", so it compiles with fullgraph=True."""
    return torch.ops.fastgrok.rope_heads_fwd(q, k, v, theta)[0]


def fused_attention_qkv(qkv: Tensor, n_head: int, theta: float = 10000.0, q_slice: slice | None = None) -> Tensor:
    """Causal RoPE attention on a fused projection: qkv (B, T, 3·C) → (B, T, C), or (B, T', C) at q_slice.

    Equals fastgrok.backends.attention_reference; reads q, k, v straight from qkv's strides and,
    with q_slice, computes only those queries (forward and backward). Compiles fullgraph.
    """
    T = qkv.shape[1] if isinstance(qkv, Tensor) and qkv.dim() == 3 else 0
    q_start, q_step, q_len = query_positions(q_slice, T)
    return torch.ops.fastgrok.rope_attn_fwd(qkv, n_head, theta, q_start, q_step, q_len)[0]


fused_attention_qkv.supports_q_slice = True  # type: ignore[attr-defined]
