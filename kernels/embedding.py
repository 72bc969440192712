"""Token embedding in Triton: a row gather forward and a deterministic, atomic-free backward.

The vocabulary is tiny (p = 29 numbers, ≤ 47 tokens with the paper's specials) and every token
of a batch lands on one of those rows, so `atomic_add` into dweight would serialise on a few
addresses and sum in a different order each run. Instead the backward multiplies a one-hot
(vocab block × token block) matrix by the upstream gradient with `tl.dot`: each program sums
one fixed slice of the tokens into fp32, and when the tokens are split over several programs
(GPU, for parallelism) a second kernel adds the slices in a fixed order.

Layers: kernels → launchers (`embedding_forward`, `embedding_backward`) → custom ops
"fastgrok::embedding_fwd" / "fastgrok::embedding_bwd" (opaque to torch.compile) →
`Embedding` (autograd over the two ops; Dynamo traces it, so fullgraph compiles) → `embedding`.
"""
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
    on_gpu,
    op_defined,
    sm_count,
)

INDEX_DTYPES = (torch.int64, torch.int32)
BLOCK_V_MAX = 64
GPU_BWD_BLOCKS = (64, 64)  # BLOCK_N, BLOCK_C of the backward on GPU
#: tl.dot precision of the fp32 backward on GPU. The one-hot operand is exact in tf32, and tf32x3
#: splits dOut into hi = tf32(g) and lo = g − hi, read as tf32, so each token's contribution is g to
#: within |g|·2⁻²² (lo rounded) or 2⁻²¹ (lo truncated by the MMA) and runs on tensor cores; "ieee"
#: compiled to plain FMA. Sums accumulate in fp32. Against fp64, the sums' own rounding dominates
#: (≈ u·n·rms for n terms per row, u = 2⁻²⁴): tests/test_kernels_embedding.fp32_sum_bound.
GPU_BWD_PRECISION = "tf32x3"


# ───────────────────────────── kernels ─────────────────────────────


@triton.jit
def _embedding_fwd_kernel(
    Idx, W, Out,
    N, V, C,
    stride_wv, stride_on,
    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # Embedding forward: Out[n, :] = W[Idx[n], :] for the N = B·T flattened tokens.
    # Grid (cdiv(N, BLOCK_N), cdiv(C, BLOCK_C)): one (token block, channel block) tile each.
    # A pure copy (no arithmetic); ids outside [0, V) are never dereferenced and give NaN rows,
    # so a skipped bounds check still shows. Replaces torch.nn.functional.embedding.
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    tokens = offs_n < N
    cols = offs_c < C
    ids = tl.load(Idx + offs_n, mask=tokens, other=0).to(tl.int64)
    valid = (ids >= 0) & (ids < V)
    rows = tl.load(W + ids[:, None] * stride_wv + offs_c[None, :], mask=valid[:, None] & cols[None, :], other=0.0)
    rows = tl.where(valid[:, None], rows.to(tl.float32), float("nan")).to(Out.dtype.element_ty)
    out_ptr = Out + offs_n.to(tl.int64)[:, None] * stride_on + offs_c[None, :]
    tl.store(out_ptr, rows, mask=tokens[:, None] & cols[None, :])


@triton.jit
def _embedding_bwd_kernel(
    Idx, DOut, Part,
    N, V, C, tokens_per_split,
    stride_dn, stride_ps, stride_pv,
    BLOCK_V: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    # Embedding backward: Part[s, v, :] = Σ_{n in split s, Idx[n] = v} DOut[n, :], as
    # onehot(v, n) @ DOut[n, :] with tl.dot, fp32 accumulator; the one-hot is exact in any dtype.
    # Grid (cdiv(C, BLOCK_C), cdiv(V, BLOCK_V), n_splits): each program owns one slice of the
    # tokens and walks it in order, so the sums are deterministic with no atomics. With one
    # split, Part is dweight itself; otherwise _embedding_bwd_reduce_kernel adds the splits.
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_v = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    split = tl.program_id(2)
    cols = offs_c < C
    start = split * tokens_per_split
    end = tl.minimum(start + tokens_per_split, N)
    acc = tl.zeros([BLOCK_V, BLOCK_C], dtype=tl.float32)
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        tokens = offs_n < end
        ids = tl.load(Idx + offs_n, mask=tokens, other=-1).to(tl.int64)
        g = tl.load(DOut + offs_n.to(tl.int64)[:, None] * stride_dn + offs_c[None, :],
                    mask=tokens[:, None] & cols[None, :], other=0.0)
        hit = offs_v[:, None] == ids[None, :]  # (BLOCK_V, BLOCK_N)
        if UPCAST:  # the interpreter gets bf16 arithmetic (and bool → bf16) wrong
            g = g.to(tl.float32)
            onehot = hit.to(tl.float32)
        else:
            onehot = hit.to(DOut.dtype.element_ty)
        acc += tl.dot(onehot, g, input_precision=INPUT_PRECISION)
    part_ptr = Part + split.to(tl.int64) * stride_ps + offs_v[:, None] * stride_pv + offs_c[None, :]
    tl.store(part_ptr, acc.to(Part.dtype.element_ty), mask=(offs_v[:, None] < V) & cols[None, :])


@triton.jit
def _embedding_bwd_reduce_kernel(Part, DW, n_splits, numel, stride_ps, BLOCK: tl.constexpr):
    # Embedding backward, second pass: DW = Σ_s Part[s] over the token splits, in split order
    # (deterministic), fp32 accumulator, cast to dweight's dtype at the store.
    # Grid (cdiv(V·C, BLOCK),) over the flattened contiguous (V, C) dweight.
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for s in range(0, n_splits):
        acc += tl.load(Part + s * stride_ps + offs, mask=mask, other=0.0)
    tl.store(DW + offs, acc.to(DW.dtype.element_ty), mask=mask)


# ───────────────────────────── launchers ─────────────────────────────


def _check_idx(idx: Tensor) -> None:
    if not isinstance(idx, Tensor):
        raise TypeError(f"idx must be a torch.Tensor, got {type(idx).__name__}")
    check_device(idx, "idx")
    if idx.dtype not in INDEX_DTYPES:
        raise TypeError(f"idx has dtype {idx.dtype}; valid index dtypes are int64 and int32")


def _check_bounds(idx: Tensor, V: int) -> None:
    """Raise ValueError if any id is outside [0, V). One device→host sync."""
    if idx.numel() and bool(((idx < 0) | (idx >= V)).any()):
        lo, hi = int(idx.min()), int(idx.max())
        raise ValueError(f"idx holds ids in [{lo}, {hi}] but the embedding has {V} rows; valid ids are 0 … {V - 1}")


def _fwd_blocks(N: int, C: int, interpret: bool) -> tuple[int, int]:
    """BLOCK_N, BLOCK_C of the gather. The interpreter wants few, big blocks."""
    if interpret:
        return min(1024, max(16, next_pow2(N))), min(1024, next_pow2(C))
    return 32, min(256, next_pow2(C))


def _bwd_blocks(
    N: int, V: int, C: int, n_splits: int | None, interpret: bool, device: torch.device,
) -> tuple[int, int, int, int]:
    """BLOCK_V, BLOCK_N, BLOCK_C and tokens per split (a multiple of BLOCK_N) of the backward."""
    BLOCK_V = min(BLOCK_V_MAX, max(16, next_pow2(V)))  # ≥ 16: tl.dot's minimum
    if interpret:  # one split unless asked, big blocks
        n_splits = n_splits or 1
        BLOCK_N = min(1024, max(16, next_pow2(triton.cdiv(N, n_splits))))
        BLOCK_C = min(256, max(16, next_pow2(C)))
    else:
        BLOCK_N, BLOCK_C = GPU_BWD_BLOCKS[0], min(GPU_BWD_BLOCKS[1], max(16, next_pow2(C)))
        if n_splits is None:  # ≈ 4 programs per SM, each summing ≥ 8 token blocks
            tiles = triton.cdiv(C, BLOCK_C) * triton.cdiv(V, BLOCK_V)
            n_splits = min(triton.cdiv(4 * sm_count(device), tiles), triton.cdiv(N, 8 * BLOCK_N))
    return BLOCK_V, BLOCK_N, BLOCK_C, triton.cdiv(triton.cdiv(N, n_splits), BLOCK_N) * BLOCK_N


def embedding_forward(idx: Tensor, weight: Tensor, *, out: Tensor | None = None, check_bounds: bool = True) -> Tensor:
    """Gather rows: idx (B, T) (any shape) of int64/int32, weight (V, C) → (B, T, C).

    `check_bounds` raises ValueError on ids outside [0, V) at the cost of one sync; unchecked,
    such ids give NaN rows. `out` (contiguous, idx.shape + (C,)) may be given.
    """
    _check_idx(idx)
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    check_device(weight, "weight")
    check_float_dtype(weight, "weight")
    if weight.dim() != 2:
        raise ValueError(f"weight must have shape (V, C), got {tuple(weight.shape)}")
    if idx.device != weight.device:
        raise ValueError(f"idx is on {idx.device} but weight is on {weight.device}; they must match")
    V, C = weight.shape
    if weight.stride(1) != 1 and C > 1:
        weight = weight.contiguous()
    if check_bounds:
        _check_bounds(idx, V)
    shape = (*idx.shape, C)
    if out is None:
        out = torch.empty(shape, dtype=weight.dtype, device=weight.device)
    elif out.shape != shape or out.dtype != weight.dtype or not out.is_contiguous() or out.device != weight.device:
        raise ValueError(f"out must be a contiguous {weight.dtype} tensor of shape {shape} on {weight.device}")
    N = idx.numel()
    if N == 0 or C == 0:
        return out
    flat = idx.reshape(N)  # (N,)
    BLOCK_N, BLOCK_C = _fwd_blocks(N, C, interpreted())
    grid = (triton.cdiv(N, BLOCK_N), triton.cdiv(C, BLOCK_C))
    launch(
        _embedding_fwd_kernel, grid,
        flat, weight, out, N, V, C, weight.stride(0), C,
        BLOCK_N=BLOCK_N, BLOCK_C=BLOCK_C, enable_fp_fusion=FP_FUSION,
    )
    return out


def embedding_backward(
    dout: Tensor, idx: Tensor, num_embeddings: int, *,
    out: Tensor | None = None, n_splits: int | None = None, input_precision: str | None = None,
) -> Tensor:
    """dweight (V, C) = Σ over tokens of dout rows by id; dout (B, T, C), idx (B, T); deterministic.

    Accumulates in fp32 and returns dout's dtype. Ids outside [0, V) contribute nothing.
    `out` (contiguous (V, C)) may be given. `n_splits`: how many token slices are summed by
    separate programs and then added in order (default: 1 under the interpreter, else enough
    programs to fill the GPU). `input_precision` is tl.dot's (default for fp32 dout: "tf32x3" on
    CUDA, within |g|·2⁻²¹ per token on tensor cores, see GPU_BWD_PRECISION; ignored by the interpreter).
    """
    _check_idx(idx)
    if not isinstance(dout, Tensor):
        raise TypeError(f"dout must be a torch.Tensor, got {type(dout).__name__}")
    check_device(dout, "dout")
    check_float_dtype(dout, "dout")
    if dout.dim() != idx.dim() + 1 or dout.shape[:-1] != idx.shape:
        raise ValueError(f"dout has shape {tuple(dout.shape)}; it must be idx's shape {tuple(idx.shape)} + (C,)")
    if idx.device != dout.device:
        raise ValueError(f"idx is on {idx.device} but dout is on {dout.device}; they must match")
    if isinstance(num_embeddings, bool) or not isinstance(num_embeddings, int) or num_embeddings < 1:
        raise ValueError(f"num_embeddings={num_embeddings!r}; it must be a positive int")
    V, C, N = num_embeddings, dout.shape[-1], idx.numel()
    if out is None:
        dweight = torch.empty(V, C, dtype=dout.dtype, device=dout.device)
    elif out.shape != (V, C) or out.dtype != dout.dtype or not out.is_contiguous() or out.device != dout.device:
        raise ValueError(f"out must be a contiguous {dout.dtype} tensor of shape {(V, C)} on {dout.device}")
    else:
        dweight = out
    if N == 0 or C == 0:
        return dweight.zero_()
    g = dout.reshape(N, C)  # (N, C)
    if g.stride(1) != 1:
        g = g.contiguous()
    flat = idx.reshape(N)  # (N,)
    if input_precision is None and dout.dtype == torch.float32 and on_gpu(dout):
        input_precision = GPU_BWD_PRECISION
    precision = dot_precision(dout.dtype, input_precision)
    if n_splits is not None and (isinstance(n_splits, bool) or not isinstance(n_splits, int) or n_splits < 1):
        raise ValueError(f"n_splits={n_splits!r}; it must be a positive int or None")
    BLOCK_V, BLOCK_N, BLOCK_C, tokens_per_split = _bwd_blocks(N, V, C, n_splits, interpreted(), dout.device)
    n_splits = triton.cdiv(N, tokens_per_split)
    part = dweight if n_splits == 1 else torch.empty(n_splits, V, C, dtype=torch.float32, device=dout.device)
    grid = (triton.cdiv(C, BLOCK_C), triton.cdiv(V, BLOCK_V), n_splits)
    launch(
        _embedding_bwd_kernel, grid,
        flat, g, part, N, V, C, tokens_per_split,
        g.stride(0), V * C, C,
        BLOCK_V=BLOCK_V, BLOCK_N=BLOCK_N, BLOCK_C=BLOCK_C,
        INPUT_PRECISION=precision, UPCAST=interpreted(), enable_fp_fusion=FP_FUSION,
    )
    if n_splits > 1:
        BLOCK = 1024
        launch(_embedding_bwd_reduce_kernel, (triton.cdiv(V * C, BLOCK),), part, dweight, n_splits, V * C, V * C,
               BLOCK=BLOCK, enable_fp_fusion=FP_FUSION)
    return dweight


# ───────────────────────────── custom ops and autograd ─────────────────────────────


def _fwd_impl(idx: Tensor, weight: Tensor, check_bounds: bool) -> Tensor:
    return embedding_forward(idx, weight, check_bounds=check_bounds)


def _fwd_fake(idx: Tensor, weight: Tensor, check_bounds: bool) -> Tensor:
    return weight.new_empty(*idx.shape, weight.shape[1])


def _bwd_impl(dout: Tensor, idx: Tensor, num_embeddings: int) -> Tensor:
    return embedding_backward(dout, idx, num_embeddings)


def _bwd_fake(dout: Tensor, idx: Tensor, num_embeddings: int) -> Tensor:
    return dout.new_empty(num_embeddings, dout.shape[-1])


def _setup_context(ctx, inputs: tuple, output: Tensor) -> None:
    idx, weight, _ = inputs
    ctx.save_for_backward(idx)
    ctx.num_embeddings = weight.shape[0]


def _backward(ctx, dout: Tensor) -> tuple[None, Tensor, None]:
    (idx,) = ctx.saved_tensors
    return None, torch.ops.fastgrok.embedding_bwd(dout, idx, ctx.num_embeddings), None


def _register_ops() -> None:
    """Define "fastgrok::embedding_fwd"/"embedding_bwd" once per process (re-imports are no-ops).

    The forward op carries its own autograd formula, so it is differentiable used alone
    (torch.library.opcheck, torch.ops.fastgrok.embedding_fwd); `Embedding` below is the
    public autograd layer and calls the same two ops.
    """
    if op_defined("fastgrok::embedding_fwd"):
        return
    fwd = torch.library.custom_op(
        "fastgrok::embedding_fwd", _fwd_impl, mutates_args=(),
        schema="(Tensor idx, Tensor weight, bool check_bounds) -> Tensor",
    )
    fwd.register_fake(_fwd_fake)
    torch.library.custom_op(
        "fastgrok::embedding_bwd", _bwd_impl, mutates_args=(),
        schema="(Tensor dout, Tensor idx, SymInt num_embeddings) -> Tensor",
    ).register_fake(_bwd_fake)
    fwd.register_autograd(_backward, setup_context=_setup_context)


_register_ops()


class Embedding(torch.autograd.Function):
    """Autograd over the two custom ops; traceable by Dynamo, so torch.compile(fullgraph=True) works."""

    @staticmethod
    def forward(ctx, idx: Tensor, weight: Tensor) -> Tensor:
        # The bounds check syncs with the host: only in eager mode, never inside a compiled graph.
        out = torch.ops.fastgrok.embedding_fwd(idx, weight, not torch.compiler.is_compiling())
        ctx.save_for_backward(idx)
        ctx.num_embeddings = weight.shape[0]
        return out

    @staticmethod
    def backward(ctx, dout: Tensor) -> tuple[None, Tensor]:
        (idx,) = ctx.saved_tensors
        return None, torch.ops.fastgrok.embedding_bwd(dout, idx, ctx.num_embeddings)


embedding = Embedding.apply  # embedding(idx (B, T), weight (V, C)) → (B, T, C)
