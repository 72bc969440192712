"""The first-release RoPE attention kernels, kept for one release so benchmarks can measure old against new.

Selected only by the benchmarks (provider "fused-v1"); the model uses fastgrok.kernels.rope_attention.
Three backward launches (pre-pass, dk/dv, dq) beyond one key block, grid (B·H, blocks), even/odd RoPE loads.

Causal attention with RoPE fused into the loads: Triton forward and deterministic backward.

Computes exactly `fastgrok.rope.rope_attention_reference`: interleaved-pair RoPE (dims 2i, 2i+1
rotate by t·θ^(-2i/D), fp32 angles) on q and k, causal softmax(q kᵀ / sqrt(D)) v. q and k are
rotated in registers as they load — split into their even and odd dims, so q kᵀ is two dots
over D/2 — and no rotated copy ever reaches memory. FlashAttention-2 tiling
(Dao 2023, https://arxiv.org/abs/2307.08691): online softmax in fp32 with exp2, the row
log-sum-exp stored for the backward, which recomputes the probabilities. The backward has no
atomics: one program per key block owns dk and dv; dq comes from the same program when all keys
fit one key block (see `_block_config`), else from a second kernel per query block.

Layers: kernels → launchers (`rope_attn_forward`, `rope_attn_backward`) → `RopeAttention`
(autograd, any-stride (B, H, T, D) inputs) → `rope_attention`. For the model and
`torch.compile`: `fused_attention_qkv(qkv, n_head, theta)` on the fused projection (B, T, 3C),
through the custom ops "fastgrok::rope_attn_v1_fwd" / "fastgrok::rope_attn_v1_bwd".
"""
import functools
import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import (
    FP_FUSION,
    check_device,
    check_float_dtype,
    dot_precision,
    interpreter_active,
    next_pow2,
    op_defined,
)

HEAD_DIMS = (32, 64, 128)  # D/2 ≥ 16 keeps every tl.dot dimension ≥ 16
LOG2E = 1.4426950408889634  # the kernels spell out log2(e) and ln(2): plain globals are not visible in @jit


# ───────────────────────────── kernels ─────────────────────────────


@triton.jit
def _rope_tile(X, stride_xt, offs_t, T, Cos, Sin, HALF: tl.constexpr):
    # Load rows offs_t of one (T, D) head as its even and odd dims and rotate them, fp32:
    # (x_2i, x_2i+1) → (x_2i cos − x_2i+1 sin, x_2i+1 cos + x_2i sin), Cos/Sin (T, D/2) fp32.
    offs_p = tl.arange(0, HALF)
    rows = offs_t[:, None] < T
    ptr = X + offs_t[:, None] * stride_xt + 2 * offs_p[None, :]
    x_e = tl.load(ptr, mask=rows, other=0.0).to(tl.float32)
    x_o = tl.load(ptr + 1, mask=rows, other=0.0).to(tl.float32)
    cs = offs_t[:, None] * HALF + offs_p[None, :]
    cos = tl.load(Cos + cs, mask=rows, other=0.0)
    sin = tl.load(Sin + cs, mask=rows, other=0.0)
    return x_e * cos - x_o * sin, x_o * cos + x_e * sin


@triton.jit
def _rope_store_grad(DX, stride_xt, offs_t, T, Cos, Sin, g_e, g_o, HALF: tl.constexpr):
    # Store a gradient taken w.r.t. the rotated tensor, rotated back (the transpose of
    # _rope_tile's rotation) into the even/odd dims of rows offs_t.
    offs_p = tl.arange(0, HALF)
    rows = offs_t[:, None] < T
    cs = offs_t[:, None] * HALF + offs_p[None, :]
    cos = tl.load(Cos + cs, mask=rows, other=0.0)
    sin = tl.load(Sin + cs, mask=rows, other=0.0)
    ptr = DX + offs_t[:, None] * stride_xt + 2 * offs_p[None, :]
    tl.store(ptr, (g_e * cos + g_o * sin).to(DX.dtype.element_ty), mask=rows)
    tl.store(ptr + 1, (g_o * cos - g_e * sin).to(DX.dtype.element_ty), mask=rows)


@triton.jit
def _dot_operand(x, Like, UPCAST: tl.constexpr):
    # Round to the input dtype (Like's element type; the reference rounds rotated q, k too), so
    # GPU dots run on tensor cores; the interpreter computes 16-bit (bf16 above all) wrongly, so
    # it gets fp32 back.
    x = x.to(Like.dtype.element_ty)
    if UPCAST:
        x = x.to(tl.float32)
    return x


@triton.jit
def _probs_and_dscores(qe, qo, ke, ko, v, do, lse2, delta, offs_m, offs_n, T, qk_scale,
                       INPUT_PRECISION: tl.constexpr):
    # Recompute P = exp2(S·log2e/sqrt(D) − lse·log2e) for a (query, key) block pair and
    # dS = P ∘ (dO vᵀ − delta); rows past T and keys after the query get P = 0.
    s = tl.dot(qe, tl.trans(ke), input_precision=INPUT_PRECISION)
    s += tl.dot(qo, tl.trans(ko), input_precision=INPUT_PRECISION)
    keep = (offs_n[None, :] <= offs_m[:, None]) & (offs_m[:, None] < T)
    p = tl.where(keep, tl.exp2(s * qk_scale - lse2[:, None]), 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision=INPUT_PRECISION)
    return p, p * (dp - delta[:, None])


@triton.jit
def _rope_attn_fwd_kernel(
    Q, K, V, Cos, Sin, Out, Lse,
    stride_qb, stride_qh, stride_qt,
    stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt,
    stride_ob, stride_oh, stride_ot,
    stride_lb, stride_lh,
    H, T, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    # Causal RoPE attention forward: Out = softmax(rope(q) rope(k)ᵀ / sqrt(D), causal) v, and
    # Lse = the row log-sum-exp (natural log, fp32) for the backward.
    # Grid (B·H, cdiv(T, BLOCK_M)): one program per query block of one head, looping over key
    # blocks up to the diagonal (a single iteration when T ≤ BLOCK_N).
    # Numerics: fp32 accumulators, online softmax in base 2 (FlashAttention-2, arXiv 2307.08691);
    # replaces apply_rope ×2 + SDPA of fastgrok.rope.rope_attention_reference.
    HALF: tl.constexpr = HEAD_DIM // 2
    pid_bh = tl.program_id(0)
    start_m = tl.program_id(1) * BLOCK_M
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    Out += b * stride_ob + h * stride_oh
    Lse += b * stride_lb + h * stride_lh

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    qe, qo = _rope_tile(Q, stride_qt, offs_m, T, Cos, Sin, HALF)
    qe = _dot_operand(qe, Q, UPCAST)
    qo = _dot_operand(qo, Q, UPCAST)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running row max (base 2)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running row sum
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    hi = tl.minimum(start_m + BLOCK_M, T)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        ke, ko = _rope_tile(K, stride_kt, offs_n, T, Cos, Sin, HALF)
        ke = _dot_operand(ke, Q, UPCAST)
        ko = _dot_operand(ko, Q, UPCAST)
        v = tl.load(V + offs_n[:, None] * stride_vt + offs_d[None, :], mask=offs_n[:, None] < T, other=0.0)
        if UPCAST:
            v = v.to(tl.float32)
        s = tl.dot(qe, tl.trans(ke), input_precision=INPUT_PRECISION)
        s += tl.dot(qo, tl.trans(ko), input_precision=INPUT_PRECISION)
        keep = (offs_n[None, :] <= offs_m[:, None]) & (offs_n[None, :] < T)
        s = tl.where(keep, s * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))  # finite: key 0 is in the first block of every row
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc += tl.dot(_dot_operand(p, Q, UPCAST), v, input_precision=INPUT_PRECISION)
        m_i = m_new

    acc = acc / l_i[:, None]
    rows = offs_m < T
    tl.store(Out + offs_m[:, None] * stride_ot + offs_d[None, :], acc.to(Out.dtype.element_ty), mask=rows[:, None])
    tl.store(Lse + offs_m, (m_i + tl.log2(l_i)) * 0.6931471805599453, mask=rows)


@triton.jit
def _rope_attn_bwd_preprocess_kernel(
    Out, DO, Delta,
    stride_ob, stride_oh, stride_ot,
    stride_dob, stride_doh, stride_dot,
    stride_lb, stride_lh,
    H, T,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
):
    # Backward pre-pass for long sequences: Delta = rowsum(dO ∘ O) (fp32, (B, H, T)), the
    # softmax-gradient correction term, computed once instead of once per key block.
    # Grid (B·H, cdiv(T, BLOCK_M)). Not launched when T ≤ BLOCK_N: the dk/dv kernel then
    # computes it inline. FlashAttention-2 backward (arXiv 2307.08691, Alg. 2).
    pid_bh = tl.program_id(0)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    rows = offs_m[:, None] < T
    Out += b * stride_ob + h * stride_oh
    DO += b * stride_dob + h * stride_doh
    o = tl.load(Out + offs_m[:, None] * stride_ot + offs_d[None, :], mask=rows, other=0.0)
    do = tl.load(DO + offs_m[:, None] * stride_dot + offs_d[None, :], mask=rows, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(Delta + b * stride_lb + h * stride_lh + offs_m, delta, mask=offs_m < T)


@triton.jit
def _rope_attn_bwd_dkdv_kernel(
    Q, K, V, Cos, Sin, Out, DO, Lse, Delta, DQ, DK, DV,
    stride_qb, stride_qh, stride_qt,
    stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt,
    stride_ob, stride_oh, stride_ot,
    stride_dob, stride_doh, stride_dot,
    stride_lb, stride_lh,
    stride_dqb, stride_dqh, stride_dqt,
    stride_dkb, stride_dkh, stride_dkt,
    stride_dvb, stride_dvh, stride_dvt,
    H, T, sm_scale, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, FUSE_DQ: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    # Causal RoPE attention backward for dK, dV (and dQ when FUSE_DQ): grid (B·H, cdiv(T, BLOCK_N)),
    # one program per key block, looping over the query blocks at or after it; P is recomputed
    # from Lse. dK is rotated back by RoPE's transpose before the store. No atomics: with
    # FUSE_DQ (one key block holds all of T) each dQ row is complete within its iteration and
    # Delta = rowsum(dO ∘ O) is computed inline. fp32 accumulators; FlashAttention-2 backward.
    HALF: tl.constexpr = HEAD_DIM // 2
    pid_bh = tl.program_id(0)
    start_n = tl.program_id(1) * BLOCK_N
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    Out += b * stride_ob + h * stride_oh
    DO += b * stride_dob + h * stride_doh
    Lse += b * stride_lb + h * stride_lh
    Delta += b * stride_lb + h * stride_lh
    DQ += b * stride_dqb + h * stride_dqh
    DK += b * stride_dkb + h * stride_dkh
    DV += b * stride_dvb + h * stride_dvh

    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    ke, ko = _rope_tile(K, stride_kt, offs_n, T, Cos, Sin, HALF)
    ke = _dot_operand(ke, Q, UPCAST)
    ko = _dot_operand(ko, Q, UPCAST)
    v = tl.load(V + offs_n[:, None] * stride_vt + offs_d[None, :], mask=offs_n[:, None] < T, other=0.0)
    if UPCAST:
        v = v.to(tl.float32)

    dk_e = tl.zeros([BLOCK_N, HALF], dtype=tl.float32)
    dk_o = tl.zeros([BLOCK_N, HALF], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    for start_m in range((start_n // BLOCK_M) * BLOCK_M, T, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        rows = offs_m[:, None] < T
        qe, qo = _rope_tile(Q, stride_qt, offs_m, T, Cos, Sin, HALF)
        qe = _dot_operand(qe, Q, UPCAST)
        qo = _dot_operand(qo, Q, UPCAST)
        do = tl.load(DO + offs_m[:, None] * stride_dot + offs_d[None, :], mask=rows, other=0.0)
        if UPCAST:
            do = do.to(tl.float32)
        lse2 = tl.load(Lse + offs_m, mask=offs_m < T, other=0.0) * 1.4426950408889634
        if FUSE_DQ:
            o = tl.load(Out + offs_m[:, None] * stride_ot + offs_d[None, :], mask=rows, other=0.0)
            delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
        else:
            delta = tl.load(Delta + offs_m, mask=offs_m < T, other=0.0)
        p, ds = _probs_and_dscores(qe, qo, ke, ko, v, do, lse2, delta, offs_m, offs_n, T, qk_scale, INPUT_PRECISION)
        dv += tl.dot(tl.trans(_dot_operand(p, Q, UPCAST)), do, input_precision=INPUT_PRECISION)
        ds = _dot_operand(ds, Q, UPCAST)
        dk_e += tl.dot(tl.trans(ds), qe, input_precision=INPUT_PRECISION)
        dk_o += tl.dot(tl.trans(ds), qo, input_precision=INPUT_PRECISION)
        if FUSE_DQ:
            dq_e = tl.dot(ds, ke, input_precision=INPUT_PRECISION) * sm_scale
            dq_o = tl.dot(ds, ko, input_precision=INPUT_PRECISION) * sm_scale
            _rope_store_grad(DQ, stride_dqt, offs_m, T, Cos, Sin, dq_e, dq_o, HALF)

    _rope_store_grad(DK, stride_dkt, offs_n, T, Cos, Sin, dk_e * sm_scale, dk_o * sm_scale, HALF)
    tl.store(DV + offs_n[:, None] * stride_dvt + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=offs_n[:, None] < T)


@triton.jit
def _rope_attn_bwd_dq_kernel(
    Q, K, V, Cos, Sin, DO, Lse, Delta, DQ,
    stride_qb, stride_qh, stride_qt,
    stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt,
    stride_dob, stride_doh, stride_dot,
    stride_lb, stride_lh,
    stride_dqb, stride_dqh, stride_dqt,
    H, T, sm_scale, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    # Causal RoPE attention backward for dQ when T > one key block: grid (B·H, cdiv(T, BLOCK_M)),
    # one program per query block looping over key blocks up to the diagonal, so every dQ row is
    # summed by one program in a fixed order (deterministic, no atomics). P recomputed from Lse,
    # dS = P ∘ (dO vᵀ − Delta), dQ = dS k / sqrt(D) in fp32, rotated back by RoPE's transpose.
    HALF: tl.constexpr = HEAD_DIM // 2
    pid_bh = tl.program_id(0)
    start_m = tl.program_id(1) * BLOCK_M
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    DO += b * stride_dob + h * stride_doh
    Lse += b * stride_lb + h * stride_lh
    Delta += b * stride_lb + h * stride_lh
    DQ += b * stride_dqb + h * stride_dqh

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    qe, qo = _rope_tile(Q, stride_qt, offs_m, T, Cos, Sin, HALF)
    qe = _dot_operand(qe, Q, UPCAST)
    qo = _dot_operand(qo, Q, UPCAST)
    do = tl.load(DO + offs_m[:, None] * stride_dot + offs_d[None, :], mask=offs_m[:, None] < T, other=0.0)
    if UPCAST:
        do = do.to(tl.float32)
    lse2 = tl.load(Lse + offs_m, mask=offs_m < T, other=0.0) * 1.4426950408889634
    delta = tl.load(Delta + offs_m, mask=offs_m < T, other=0.0)

    dq_e = tl.zeros([BLOCK_M, HALF], dtype=tl.float32)
    dq_o = tl.zeros([BLOCK_M, HALF], dtype=tl.float32)
    hi = tl.minimum(start_m + BLOCK_M, T)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        ke, ko = _rope_tile(K, stride_kt, offs_n, T, Cos, Sin, HALF)
        ke = _dot_operand(ke, Q, UPCAST)
        ko = _dot_operand(ko, Q, UPCAST)
        v = tl.load(V + offs_n[:, None] * stride_vt + offs_d[None, :], mask=offs_n[:, None] < T, other=0.0)
        if UPCAST:
            v = v.to(tl.float32)
        p, ds = _probs_and_dscores(qe, qo, ke, ko, v, do, lse2, delta, offs_m, offs_n, T, qk_scale, INPUT_PRECISION)
        ds = _dot_operand(ds, Q, UPCAST)
        dq_e += tl.dot(ds, ke, input_precision=INPUT_PRECISION)
        dq_o += tl.dot(ds, ko, input_precision=INPUT_PRECISION)

    _rope_store_grad(DQ, stride_dqt, offs_m, T, Cos, Sin, dq_e * sm_scale, dq_o * sm_scale, HALF)


# ───────────────────────────── launchers ─────────────────────────────


# GPU tiles per head_dim: (BLOCK_M, BLOCK_N, num_warps, num_stages) of each kernel. Picked so that
# no kernel spills registers or overflows shared memory on sm_90 (ptxas via Triton 3.9, bf16 and
# fp32); not yet timed. The dk/dv kernel computes dq too when T ≤ its BLOCK_N.
_GPU_TILES = {
    32: dict(fwd=(64, 32, 4, 3), dkdv=(16, 64, 8, 2), dq=(64, 32, 4, 2)),
    64: dict(fwd=(64, 32, 4, 3), dkdv=(16, 128, 8, 2), dq=(64, 16, 4, 2)),
    128: dict(fwd=(64, 32, 4, 3), dkdv=(16, 64, 8, 2), dq=(64, 16, 8, 2)),
}


def _block_config(T: int, D: int, interpret: bool) -> dict[str, tuple[int, int, int, int]]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) per kernel, keyed on (T, D)."""
    tile = min(128, max(16, next_pow2(T)))  # whole sequence when T ≤ 128; ≥ 16 for tl.dot
    if interpret:  # few, big blocks: the interpreter pays per program and per op, not per element
        return dict(fwd=(tile, tile, 4, 1), dkdv=(tile, tile, 4, 1), dq=(tile, tile, 4, 1))
    return {name: (min(m, tile), min(n, tile), w, s) for name, (m, n, w, s) in _GPU_TILES[D].items()}


@functools.lru_cache(maxsize=32)
def _rope_table(T: int, D: int, theta: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """cos, sin (T, D/2) fp32, bit-identical to fastgrok.rope.rope_angles(T, D, theta).cos()/.sin()."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, device=device)[: D // 2].float() / D))  # (D/2,)
    t = torch.arange(T, device=device, dtype=torch.float32)  # (T,)
    ang = t[:, None] * inv_freq[None, :]  # (T, D/2)
    return ang.cos().contiguous(), ang.sin().contiguous()


def _check_heads(tensors: dict[str, Tensor]) -> tuple[int, int, int, int]:
    """Validate (B, H, T, D) tensors with one shape, dtype and device; return B, H, T, D."""
    first_name, first = next(iter(tensors.items()))
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        check_device(t, name)
        check_float_dtype(t, name)
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, H, T, D), got {tuple(t.shape)}")
        if t.shape != first.shape:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)} but {first_name} has {tuple(first.shape)}; they must match"
            )
        if t.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {first_name} has {first.dtype}; they must match")
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device} but {first_name} is on {first.device}; they must match")
        if t.stride(-1) != 1 and t.shape[-1] > 1:
            raise ValueError(f"{name} has last-dim stride {t.stride(-1)}; it must be 1 (head dims contiguous)")
    B, H, T, D = first.shape
    if D not in HEAD_DIMS:
        raise ValueError(f"head_dim D={D} is not supported; valid head dims are {HEAD_DIMS}")
    return B, H, T, D


def _check_lse(lse: Tensor, B: int, H: int, T: int, device: torch.device, name: str = "lse") -> None:
    if lse.shape != (B, H, T) or lse.dtype != torch.float32 or not lse.is_contiguous() or lse.device != device:
        raise ValueError(
            f"{name} must be a contiguous float32 tensor of shape {(B, H, T)} on {device}, "
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
    q: Tensor, k: Tensor, v: Tensor, theta: float = 10000.0, *,
    out: Tensor | None = None, lse: Tensor | None = None, input_precision: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Causal RoPE attention forward. q, k, v (B, H, T, D), any strides with the last one 1.

    Returns out (B, H, T, D) — a view of a (B, T, H, D) buffer unless `out` is given — and
    lse (B, H, T) fp32, the natural-log log-sum-exp of each row's scaled scores.
    `input_precision` is tl.dot's (default "ieee" for fp32: exact; ignored by the interpreter).
    """
    B, H, T, D = _check_heads({"q": q, "k": k, "v": v})
    theta = _check_theta(theta)
    precision = dot_precision(q.dtype, input_precision)
    if out is None:
        out = _new_heads(B, H, T, D, q)
    else:
        _check_heads({"q": q, "out": out})
    if lse is None:
        lse = torch.empty(B, H, T, dtype=torch.float32, device=q.device)
    else:
        _check_lse(lse, B, H, T, q.device)
    if out.numel() == 0:
        return out, lse
    cos, sin = _rope_table(T, D, theta, q.device)
    BLOCK_M, BLOCK_N, warps, stages = _block_config(T, D, interpreter_active())["fwd"]
    grid = (B * H, triton.cdiv(T, BLOCK_M))
    _rope_attn_fwd_kernel[grid](
        q, k, v, cos, sin, out, lse,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        lse.stride(0), lse.stride(1),
        H, T, LOG2E / math.sqrt(D),
        HEAD_DIM=D, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
        INPUT_PRECISION=precision, UPCAST=interpreter_active(),
        num_warps=warps, num_stages=stages, enable_fp_fusion=FP_FUSION,
    )
    return out, lse


def rope_attn_backward(
    do: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, theta: float = 10000.0, *,
    dq: Tensor | None = None, dk: Tensor | None = None, dv: Tensor | None = None,
    input_precision: str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients (dq, dk, dv) of `rope_attn_forward` for upstream gradient `do`, deterministic.

    `out` and `lse` are what the forward returned; dq, dk, dv may be given (any strides with the
    last one 1, e.g. slices of one dqkv buffer), else they are views of (B, T, H, D) buffers.
    """
    B, H, T, D = _check_heads({"q": q, "k": k, "v": v, "do": do, "out": out})
    _check_lse(lse, B, H, T, q.device)
    theta = _check_theta(theta)
    precision = dot_precision(q.dtype, input_precision)
    dq = _new_heads(B, H, T, D, q) if dq is None else dq
    dk = _new_heads(B, H, T, D, q) if dk is None else dk
    dv = _new_heads(B, H, T, D, q) if dv is None else dv
    _check_heads({"q": q, "dq": dq, "dk": dk, "dv": dv})
    if q.numel() == 0:
        return dq, dk, dv
    cos, sin = _rope_table(T, D, theta, q.device)
    cfg = _block_config(T, D, interpreter_active())
    KV_M, KV_N, kv_warps, kv_stages = cfg["dkdv"]
    Q_M, Q_N, q_warps, q_stages = cfg["dq"]
    fuse_dq = T <= KV_N
    upcast = interpreter_active()
    sm_scale = 1.0 / math.sqrt(D)
    delta = lse  # placeholder pointer: with fuse_dq the dk/dv kernel computes delta inline
    if not fuse_dq:
        delta = torch.empty_like(lse)
        _rope_attn_bwd_preprocess_kernel[(B * H, triton.cdiv(T, Q_M))](
            out, do, delta,
            out.stride(0), out.stride(1), out.stride(2),
            do.stride(0), do.stride(1), do.stride(2),
            lse.stride(0), lse.stride(1),
            H, T, HEAD_DIM=D, BLOCK_M=Q_M, enable_fp_fusion=FP_FUSION,
        )
    _rope_attn_bwd_dkdv_kernel[(B * H, triton.cdiv(T, KV_N))](
        q, k, v, cos, sin, out, do, lse, delta, dq, dk, dv,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        do.stride(0), do.stride(1), do.stride(2),
        lse.stride(0), lse.stride(1),
        dq.stride(0), dq.stride(1), dq.stride(2),
        dk.stride(0), dk.stride(1), dk.stride(2),
        dv.stride(0), dv.stride(1), dv.stride(2),
        H, T, sm_scale, sm_scale * LOG2E,
        HEAD_DIM=D, BLOCK_M=KV_M, BLOCK_N=KV_N, FUSE_DQ=fuse_dq,
        INPUT_PRECISION=precision, UPCAST=upcast,
        num_warps=kv_warps, num_stages=kv_stages, enable_fp_fusion=FP_FUSION,
    )
    if not fuse_dq:
        _rope_attn_bwd_dq_kernel[(B * H, triton.cdiv(T, Q_M))](
            q, k, v, cos, sin, do, lse, delta, dq,
            q.stride(0), q.stride(1), q.stride(2),
            k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2),
            do.stride(0), do.stride(1), do.stride(2),
            lse.stride(0), lse.stride(1),
            dq.stride(0), dq.stride(1), dq.stride(2),
            H, T, sm_scale, sm_scale * LOG2E,
            HEAD_DIM=D, BLOCK_M=Q_M, BLOCK_N=Q_N,
            INPUT_PRECISION=precision, UPCAST=upcast,
            num_warps=q_warps, num_stages=q_stages, enable_fp_fusion=FP_FUSION,
        )
    return dq, dk, dv


def _unit_stride(t: Tensor) -> Tensor:
    """Upstream gradients may come with any strides (even expanded, stride 0): make dims contiguous."""
    return t if t.stride(-1) == 1 else t.contiguous()


# ───────────────────────────── autograd: (B, H, T, D) tensors ─────────────────────────────


class RopeAttention(torch.autograd.Function):
    """Autograd for any-stride q, k, v (B, H, T, D); eager only (see fused_attention_qkv for compile)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, theta: float) -> Tensor:
        out, lse = rope_attn_forward(q, k, v, theta)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.theta = theta
        return out

    @staticmethod
    def backward(ctx, dout: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = rope_attn_backward(_unit_stride(dout), q, k, v, out, lse, ctx.theta)
        return dq, dk, dv, None


def rope_attention(q: Tensor, k: Tensor, v: Tensor, theta: float = 10000.0) -> Tensor:
    """Causal attention over RoPE-rotated q, k: q, k, v (B, H, T, D) → (B, H, T, D), = rope_attention_reference."""
    return RopeAttention.apply(q, k, v, theta)


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


def _qkv_fwd_impl(qkv: Tensor, n_head: int, theta: float) -> tuple[Tensor, Tensor]:
    q, k, v = _split_qkv(qkv, n_head)
    out, lse = rope_attn_forward(q, k, v, theta)  # out: (B, H, T, D) view of (B, T, H, D)
    B, H, T, D = out.shape
    return out.transpose(1, 2).reshape(B, T, H * D), lse  # (B, T, C), free


def _qkv_fwd_fake(qkv: Tensor, n_head: int, theta: float) -> tuple[Tensor, Tensor]:
    B, T, C3 = qkv.shape
    return qkv.new_empty(B, T, C3 // 3), qkv.new_empty(B, n_head, T, dtype=torch.float32)


def _qkv_bwd_impl(dout: Tensor, qkv: Tensor, out: Tensor, lse: Tensor, n_head: int, theta: float) -> Tensor:
    B, T, C3 = qkv.shape
    D = C3 // (3 * n_head)
    q, k, v = _split_qkv(qkv, n_head)
    o = out.view(B, T, n_head, D).transpose(1, 2)  # (B, H, T, D)
    do = _unit_stride(dout).view(B, T, n_head, D).transpose(1, 2)  # (B, H, T, D)
    dqkv = torch.empty(B, T, 3, n_head, D, dtype=qkv.dtype, device=qkv.device)
    dq, dk, dv = (g.transpose(1, 2) for g in dqkv.unbind(2))  # (B, H, T, D) views
    rope_attn_backward(do, q, k, v, o, lse, theta, dq=dq, dk=dk, dv=dv)
    return dqkv.view(B, T, C3)


def _qkv_bwd_fake(dout: Tensor, qkv: Tensor, out: Tensor, lse: Tensor, n_head: int, theta: float) -> Tensor:
    return torch.empty_like(qkv, memory_format=torch.contiguous_format)


def _qkv_setup_context(ctx, inputs: tuple, output: tuple) -> None:
    qkv, n_head, theta = inputs
    out, lse = output
    ctx.save_for_backward(qkv, out, lse)
    ctx.n_head, ctx.theta = n_head, theta


def _qkv_backward(ctx, dout: Tensor, dlse: Tensor | None) -> tuple[Tensor, None, None]:
    qkv, out, lse = ctx.saved_tensors
    return torch.ops.fastgrok.rope_attn_v1_bwd(dout, qkv, out, lse, ctx.n_head, ctx.theta), None, None


def _register_ops() -> None:
    """Define "fastgrok::rope_attn_v1_fwd"/"rope_attn_bwd" once per process (re-imports are no-ops)."""
    if op_defined("fastgrok::rope_attn_v1_fwd"):
        return
    fwd = torch.library.custom_op(
        "fastgrok::rope_attn_v1_fwd", _qkv_fwd_impl, mutates_args=(),
        schema="(Tensor qkv, int n_head, float theta) -> (Tensor, Tensor)",
    )
    fwd.register_fake(_qkv_fwd_fake)
    bwd = torch.library.custom_op(
        "fastgrok::rope_attn_v1_bwd", _qkv_bwd_impl, mutates_args=(),
        schema="(Tensor dout, Tensor qkv, Tensor out, Tensor lse, int n_head, float theta) -> Tensor",
    )
    bwd.register_fake(_qkv_bwd_fake)
    fwd.register_autograd(_qkv_backward, setup_context=_qkv_setup_context)


_register_ops()


def fused_attention_qkv(qkv: Tensor, n_head: int, theta: float = 10000.0) -> Tensor:
    """Causal RoPE attention on a fused projection: qkv (B, T, 3·C) → (B, T, C); compiles fullgraph.

    Equals splitting qkv.view(B, T, 3, H, D) into q, k, v (B, H, T, D), rope_attention_reference,
    then .transpose(1, 2).reshape(B, T, C); reads q, k, v straight from qkv's strides.
    """
    return torch.ops.fastgrok.rope_attn_v1_fwd(qkv, n_head, theta)[0]


def traffic(B: int, H: int, T: int, D: int, itemsize: int) -> dict[str, dict[str, int]]:
    """Modelled DRAM bytes of the first release's launches (same form as rope_attention.traffic).

    Its grids are (B·H, blocks) with the head on the slow axis, so a head's blocks run ~B·H
    programs apart and each program's reads come from DRAM (L2 holds nothing from then).
    """
    heads, row = B * H, D * itemsize
    cfg = _block_config(T, D, interpret=False)
    FM = cfg["fwd"][0]
    KV_M, KV_N = cfg["dkdv"][:2]
    Q_M = cfg["dq"][0]
    tables = 2 * T * (D // 2) * 4
    fwd_read = sum(min(FM, T - m) * row + 2 * min(m + FM, T) * row for m in range(0, T, FM))
    fwd = dict(read=heads * fwd_read + tables, write=heads * (T * row + T * 4), launches=1)
    if T <= KV_N:  # one launch: dq fused into the dk/dv kernel, delta inline
        bwd = dict(read=heads * (5 * T * row + T * 4) + tables, write=heads * 3 * T * row, launches=1)
        return {"forward": fwd, "backward": bwd}
    read = 2 * T * row  # pre-pass: o, dO
    write = T * 4  # delta
    for n in range(0, T, KV_N):  # dk/dv: own keys, then q, dO, lse, delta from its first query block on
        rows = T - (n // KV_M) * KV_M
        read += 2 * min(KV_N, T - n) * row + rows * (2 * row + 8)
        write += 2 * min(KV_N, T - n) * row
    for m in range(0, T, Q_M):  # dq: own queries, keys and values up to the diagonal
        read += min(Q_M, T - m) * (2 * row + 8) + 2 * min(m + Q_M, T) * row
        write += min(Q_M, T - m) * row
    return {"forward": fwd, "backward": dict(read=heads * read + 3 * tables, write=heads * write, launches=3)}
