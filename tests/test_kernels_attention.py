"""Fused RoPE attention (fastgrok.kernels.rope_attention) against fastgrok.rope's reference.

Forward and gradients (same upstream gradient), odd shapes, every input layout the model
produces, poisoned outputs, launcher errors, torch.compile. On CPU the kernels run in Triton's
interpreter (conftest sets TRITON_INTERPRET=1); the `gpu` tests repeat the checks in bf16/fp16/
fp32 on CUDA at the paper's shape.
"""
import importlib
import math

import pytest
import torch
import torch.nn.functional as F

from fastgrok.backends import attention_reference, split_qkv
from fastgrok.kernels.embedding import embedding
from fastgrok.kernels.rope_attention import (
    fused_attention_qkv,
    ideal_bytes,
    rope_attention,
    rope_attn_backward,
    rope_attn_forward,
    traffic,
)
from fastgrok.rope import apply_rope, rope_angles, rope_attention_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# fp32: both sides are exact up to summation order. fp16: a few fp16 ulps at |x| ≈ 2 (both
# sides round the rotated q, k and the output to fp16); the sharp fp16/bf16 check is the 2× rule.
TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=1e-2, rtol=1e-2),
    torch.bfloat16: dict(atol=6e-2, rtol=6e-2),
}
FLOOR = {torch.float16: 1e-4, torch.bfloat16: 1e-3}  # absolute slack in the 2× rule (16-bit)


def _heads(B: int, H: int, T: int, D: int, dtype: torch.dtype, layout: str = "qkv", device: str = DEVICE):
    """Leaf q, k, v (B, H, T, D) in a layout the kernel must accept."""
    if layout == "qkv":  # the model's: strided views of one fused projection (B, T, 3·H·D)
        qkv = torch.randn(B, T, 3 * H * D, dtype=dtype, device=device)
        heads = list(split_qkv(qkv, H))  # (B, H, T, D) each
    elif layout == "contiguous":
        heads = [torch.randn(B, H, T, D, dtype=dtype, device=device) for _ in range(3)]
    elif layout == "padded":  # rows further apart than D, heads in the outer dim
        heads = [torch.randn(H, B, T, D + 16, dtype=dtype, device=device)[..., :D].transpose(0, 1) for _ in range(3)]
    else:
        raise ValueError(layout)
    return [t.detach().requires_grad_() for t in heads]


def _reference(q, k, v, dout, dtype: torch.dtype | None = None):
    """Reference output and (dq, dk, dv), optionally computed in another dtype (fp64 for the 2× rule)."""
    leaves = [t.detach().to(dtype or t.dtype).requires_grad_() for t in (q, k, v)]
    out = rope_attention_reference(*leaves)
    return (out, *torch.autograd.grad(out, leaves, dout.to(out.dtype)))


# ───────────────────────────── the fp32 error model ─────────────────────────────
# fp32 attention computed in any summation order errs, element by element, by at most the bounds below
# (first order in u = 2⁻²⁴, fp32's unit roundoff). A sum of n terms in any order errs by ≤ γ_n·Σ|terms|;
# with rounding errors independent and of mean zero, γ_n = λ·√n·u holds with probability ≥ 1 − 2·exp(−λ²/2)
# per sum (Higham & Mary 2019, "A new approach to probabilistic rounding error analysis",
# https://doi.org/10.1137/18M1226312); λ = 4. Each product C = X·Y gets |δC| ≤ γ_n·|X||Y| + |δX||Y| + |X||δY|,
# each elementwise op one more u, the exponent's argument 4u·(|S| + |lse| + 1) (scale and log2 e roundings,
# exp2's approximation), the rotation 3u (table, products, sum), the forward's online-softmax rescales
# 2u per key block of 16. Measured (tests below, issue #30): fp32 kernels and a sequential-order
# emulation stay under 3 % of these bounds; tf32 operands exceed them up to 13×, a bf16 P in dV 45×.
U32 = 2.0 ** -24
LAMBDA = 4.0


def _gamma(n: int) -> float:
    return LAMBDA * math.sqrt(n) * U32


def _fp32_bounds(q, k, v, dout, theta: float = 10000.0) -> dict[str, torch.Tensor]:
    """Elementwise bounds on |fp32 result − exact| of out, dq, dk, dv for leaf q, k, v (B, H, T, D), in fp64."""
    q, k, v, do = (t.detach().double() for t in (q, k, v, dout))
    T, D = q.shape[-2:]
    ang = rope_angles(T, D, theta, q.device).double()  # (T, D/2)
    c, s = ang.cos().abs(), ang.sin().abs()

    def rot_abs(x):  # |R|·x for x ≥ 0: RoPE's rotation and its transpose have the same absolute values
        e, o = x.unflatten(-1, (D // 2, 2)).unbind(-1)  # (..., T, D/2) each
        return torch.stack((c * e + s * o, c * o + s * e), -1).flatten(-2)  # (..., T, D)

    qr, kr = apply_rope(q, theta), apply_rope(k, theta)  # (B, H, T, D) exact rotated q, k
    eqr, ekr = 3 * U32 * rot_abs(q.abs()), 3 * U32 * rot_abs(k.abs())
    scale = 1 / math.sqrt(D)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    S = (qr @ kr.mT * scale).masked_fill(~causal, float("-inf"))  # (B, H, T, T)
    lse = torch.logsumexp(S, -1)  # (B, H, T)
    P = torch.exp(S - lse[..., None])
    eS = ((_gamma(D) + U32) * (qr.abs() @ kr.abs().mT) + eqr @ kr.abs().mT + qr.abs() @ ekr.mT) * scale
    eS = eS.masked_fill(~causal, 0.0)
    e_lse = (P * eS).sum(-1) + _gamma(T) + 4 * U32 * (lse.abs() + 1)  # (B, H, T)
    eP = P * (eS + e_lse[..., None] + 4 * U32 * (S.masked_fill(~causal, 0.0).abs() + lse.abs()[..., None] + 1))
    O = P @ v
    eO = (_gamma(T) + 2 * U32 * (math.ceil(T / 16) + 1)) * (P @ v.abs()) + eP @ v.abs()
    edv = _gamma(T) * (P.mT @ do.abs()) + eP.mT @ do.abs()
    G = do @ v.mT - (do * O).sum(-1)[..., None]  # dP − Delta, (B, H, T, T)
    eDelta = _gamma(D) * (do.abs() * O.abs()).sum(-1) + (do.abs() * eO).sum(-1)
    eG = _gamma(D) * (do.abs() @ v.abs().mT) + eDelta[..., None]
    dS = P * G
    edS = eP * G.abs() + P * eG + 2 * U32 * dS.abs()

    def back(dS, edS, x, ex):  # the gradient of the rotated rows, dS·x/√D, rotated back
        g = dS @ x * scale
        eg = (_gamma(T) * (dS.abs() @ x.abs()) + edS @ x.abs() + dS.abs() @ ex) * scale + U32 * g.abs()
        return rot_abs(eg) + 3 * U32 * rot_abs(g.abs())

    return {"out": eO, "dq": back(dS, edS, kr, ekr), "dk": back(dS.mT, edS.mT, qr, eqr), "dv": edv}


def _bound_ratio(f, r64, bound) -> float:
    """max |f − exact| / bound over the elements (a bound of 0 is an exactly known element: 1e-300 keeps it)."""
    return ((f.double() - r64).abs() / bound.clamp_min(1e-300)).max().item()


def _assert_matches(fused, ref, ref64, dtype: torch.dtype, bounds: dict | None = None) -> None:
    """Fused ≈ reference within TOL[dtype] (CPU; and 16-bit); in 16-bit err(fused, fp64) ≤ 2·err(reference,
    fp64) + floor; in fp32 every element within the error model's bound (`bounds`, _fp32_bounds), which,
    unlike the 2× rule, holds for any summation order (GPU: T up to 1024, sums in other orders than SDPA's)."""
    for name, f, r, r64 in zip(("out", "dq", "dk", "dv"), fused, ref, ref64):
        assert torch.isfinite(f).all(), f"{name} has non-finite values"
        if dtype != torch.float32 or DEVICE == "cpu":
            torch.testing.assert_close(f, r, **TOL[dtype], msg=lambda m: f"{name}: {m}")
        if dtype == torch.float32:
            if bounds is not None:
                ratio = _bound_ratio(f, r64, bounds[name])
                assert ratio <= 1, f"{name}: fused error {ratio:.3g}× the fp32 bound (reference: " \
                                   f"{_bound_ratio(r, r64, bounds[name]):.3g}×)"
        else:
            err_fused = (f.double() - r64).abs().max().item()
            err_ref = (r.double() - r64).abs().max().item()
            # The interpreter truncates fp32 → bf16 (docs TRITON_ON_CPU.md); the kernels round to nearest even
            # there by hand (_to_input_dtype), so the GPU's rule nearly holds on the CPU too. The slack left is
            # the interpreter's own sums (numpy's order in its fp32 dots): over 400 fresh draws at T 33, D 64 the
            # ratio's 99th percentile was 1.7, its largest 2.09, so 2.5× here (4× before the rounding fix, which
            # still failed 3.5 % of draws).
            k = 2.5 if dtype == torch.bfloat16 and DEVICE == "cpu" else 2
            assert err_fused <= k * err_ref + FLOOR[dtype], f"{name}: fused err {err_fused:.3g}, reference {err_ref:.3g}"


def _run_and_check(B: int, H: int, T: int, D: int, dtype: torch.dtype, layout: str = "qkv") -> None:
    q, k, v = _heads(B, H, T, D, dtype, layout)
    out = rope_attention(q, k, v)
    dout = torch.randn_like(out)
    fused = (out, *torch.autograd.grad(out, (q, k, v), dout))
    bounds = _fp32_bounds(q, k, v, dout) if dtype == torch.float32 else None
    _assert_matches(fused, _reference(q, k, v, dout), _reference(q, k, v, dout, torch.float64), dtype, bounds)


# ───────────────────────────── CPU (interpreter) and GPU ─────────────────────────────

SHAPES = [  # (B, H, T, D)
    (2, 2, 1, 32),
    (2, 3, 17, 64),
    (2, 2, 95, 32),
    (2, 2, 95, 64),
    (1, 2, 95, 128),
    (1, 2, 200, 32),  # T > 128: the backward's key-block and query-block programs of one launch
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}H{}T{}D{}".format(*s))
def test_matches_reference_fp32(shape):
    _run_and_check(*shape, torch.float32)


@pytest.mark.parametrize("shape", [(2, 2, 1, 32), (2, 3, 17, 64), (2, 2, 95, 64), (1, 2, 200, 32)],
                         ids=lambda s: "B{}H{}T{}D{}".format(*s))
def test_matches_reference_fp16(shape):
    _run_and_check(*shape, torch.float16)


def _tf32(x: torch.Tensor) -> torch.Tensor:
    """x (fp32) rounded to tf32's 10 mantissa bits (to nearest, ties away): what a tf32 tl.dot reads."""
    bits = x.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def _sequential_fp32(q, k, v, do, operand=lambda x: x, p_for_dv=lambda p: p):
    """out, dq, dk, dv in fp32 with every dot product summed in index order, one rounding per term: the
    order of the GPU kernel's ieee tl.dot (an FMA chain over the accumulator), unfused, so slightly worse.
    `operand` rounds each dot operand (a planted tf32 dot), `p_for_dv` P in dV = Pᵀ dO (a planted bf16 dot)."""
    T, D = q.shape[-2:]

    def dot(a, b):  # a (..., M, K) @ b (..., K, N), summed k = 0, 1, ...
        a, b = operand(a), operand(b)
        acc = torch.zeros(*a.shape[:-1], b.shape[-1])
        for i in range(a.shape[-1]):
            acc = acc + a[..., :, i:i + 1] * b[..., i:i + 1, :]
        return acc

    ang = rope_angles(T, D)
    cos, sin = ang.cos(), ang.sin()

    def rope_t(x):  # RoPE's transpose, fp32
        e, o = x.unflatten(-1, (D // 2, 2)).unbind(-1)
        return torch.stack((e * cos + o * sin, o * cos - e * sin), -1).flatten(-2)

    qr, kr = apply_rope(q), apply_rope(k)  # (B, H, T, D)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    s = dot(qr, kr.mT).masked_fill(~causal, float("-inf"))  # (B, H, T, T)
    lse2 = torch.logsumexp(s / math.sqrt(D), -1) * 1.4426950408889634  # the kernel's P = exp2(S·c − lse·log2 e)
    p = torch.exp2(s * (1.4426950408889634 / math.sqrt(D)) - lse2[..., None])
    out = dot(p, v)
    ds = p * (dot(do, v.mT) - (do * out).sum(-1, keepdim=True))
    return out, rope_t(dot(ds, kr) / math.sqrt(D)), rope_t(dot(ds.mT, qr) / math.sqrt(D)), dot(p_for_dv(p).mT, do)


def test_fp32_bound_at_the_gpu_tests_size():
    """Issue #30: the H200's fp32 dv at B1 H4 T1024 D128 erred 5.83e-6 against fp64, SDPA 2.12e-6, and the 2×
    rule failed. One head of that size in fp64 here: the kernel (interpreter) and an emulation of the GPU's
    summation order (sequential: its dv errs ≈ 6e-6, as the GPU did) stay within 10 % of the error model's
    bound (measured ≤ 1.5 %); the same computation with tf32 dot operands, or with P rounded to bf16 for
    dV = Pᵀ dO, exceeds it. So the kernel sums in fp32 as it must, and the 2× rule (SDPA's order) was the
    test's error."""
    torch.manual_seed(30)
    q, k, v = _heads(1, 1, 1024, 128, torch.float32, "contiguous")
    out = rope_attention(q, k, v)
    dout = torch.randn_like(out)
    fused = (out, *torch.autograd.grad(out, (q, k, v), dout))
    exact = _reference(q, k, v, dout, torch.float64)
    bounds = _fp32_bounds(q, k, v, dout)
    names = ("out", "dq", "dk", "dv")
    with torch.no_grad():
        leaves = [t.detach() for t in (q, k, v, dout)]
        sequential = _sequential_fp32(*leaves)
        tf32 = _sequential_fp32(*leaves, operand=_tf32)
        dv_bf16_p = _sequential_fp32(*leaves, p_for_dv=lambda p: p.bfloat16().float())[3]
    for name, f, s, x64 in zip(names, fused, sequential, exact):
        assert _bound_ratio(f, x64, bounds[name]) <= 0.1, (name, "kernel", _bound_ratio(f, x64, bounds[name]))
        assert _bound_ratio(s, x64, bounds[name]) <= 0.1, (name, "sequential", _bound_ratio(s, x64, bounds[name]))
    # The check fails when any output exceeds its bound: measured tf32 11× (out), 1.2× (dq), 2.3× (dk),
    # 13× (dv); bf16 P 45× (dv). Required: 5× for the worst output, as a margin against the draw.
    assert max(_bound_ratio(t, x64, bounds[n]) for n, t, x64 in zip(names, tf32, exact)) > 5, "tf32 plant"
    assert _bound_ratio(dv_bf16_p, exact[3], bounds["dv"]) > 5, "bf16 P plant"


@pytest.mark.parametrize("layout", ["contiguous", "padded"])
def test_input_layouts(layout):
    _run_and_check(2, 2, 33, 32, torch.float32, layout)


def _gpu_tiles(monkeypatch, itemsize: int | None = None) -> None:
    """Launch with the GPU's tiles (of `itemsize`'s table, else the tensors' own) under the interpreter."""
    import fastgrok.kernels.rope_attention as module

    config = module.block_config
    monkeypatch.setattr(module, "block_config", lambda T, TQ, D, size, interpret, candidate=None: config(
        T, TQ, D, itemsize or size, False, candidate))


@pytest.mark.parametrize("itemsize", [2, 4], ids=["bf16-tiles", "fp32-tiles"])
@pytest.mark.parametrize("shape", [(1, 2, 17, 32), (1, 2, 95, 64), (1, 2, 95, 128), (1, 1, 200, 64)],
                         ids=lambda s: "B{}H{}T{}D{}".format(*s))
def test_gpu_block_sizes(shape, itemsize, monkeypatch):
    """The GPU's tiles (several query and key blocks per head, BLOCK_M ≠ BLOCK_N, the bf16 table
    too, run here in fp32) checked on CPU."""
    _gpu_tiles(monkeypatch, itemsize)
    _run_and_check(*shape, torch.float32)


def test_output_layout_is_btHD():
    q, k, v = _heads(2, 3, 17, 32, torch.float32)
    out = rope_attention(q, k, v)
    assert out.shape == (2, 3, 17, 32)
    assert out.transpose(1, 2).is_contiguous()  # so .transpose(1, 2).reshape(B, T, H·D) is free


@pytest.mark.parametrize("T", [17, 95, 200])
def test_launchers_write_every_element(T):
    """Outputs poisoned with NaN before the kernels run: any element left unwritten fails."""
    B, H, D = 2, 2, 32
    q, k, v = _heads(B, H, T, D, torch.float32)
    nan = float("nan")
    out = torch.full((B, T, H, D), nan, device=DEVICE).transpose(1, 2)  # (B, H, T, D)
    lse = torch.full((B, H, T), nan, device=DEVICE)
    with torch.no_grad():
        rope_attn_forward(q, k, v, out=out, lse=lse)
    dout = torch.randn_like(out)
    ref = _reference(q, k, v, dout)
    torch.testing.assert_close(out, ref[0], **TOL[torch.float32])

    scores = apply_rope(q) @ apply_rope(k).transpose(-1, -2) / math.sqrt(D)  # (B, H, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=DEVICE).tril()
    lse_ref = torch.logsumexp(scores.masked_fill(~causal, float("-inf")), dim=-1)  # (B, H, T)
    torch.testing.assert_close(lse, lse_ref.detach(), **TOL[torch.float32])

    dqkv = torch.full((B, T, 3, H, D), nan, device=DEVICE)  # like the qkv custom op: slices of one buffer
    dq, dk, dv = (g.transpose(1, 2) for g in dqkv.unbind(2))  # (B, H, T, D) views
    rope_attn_backward(dout, q.detach(), k.detach(), v.detach(), out, lse, dq=dq, dk=dk, dv=dv)
    assert torch.isfinite(dqkv).all()
    for got, want in zip((dq, dk, dv), ref[1:]):
        torch.testing.assert_close(got, want, **TOL[torch.float32])


def _reference_qkv(qkv: torch.Tensor, n_head: int, theta: float = 10000.0) -> torch.Tensor:
    B, T, C3 = qkv.shape
    q, k, v = split_qkv(qkv, n_head)  # (B, H, T, D) each
    return rope_attention_reference(q, k, v, theta).transpose(1, 2).reshape(B, T, C3 // 3)  # (B, T, C)


@pytest.mark.parametrize("B,T,H,D,theta", [(2, 17, 2, 32, 10000.0), (2, 95, 4, 32, 500.0), (1, 150, 2, 64, 10000.0)])
def test_fused_attention_qkv(B, T, H, D, theta):
    qkv = torch.randn(B, T, 3 * H * D, device=DEVICE, requires_grad=True)
    out = fused_attention_qkv(qkv, H, theta)
    dout = torch.randn_like(out)
    (dqkv,) = torch.autograd.grad(out, qkv, dout)
    ref = _reference_qkv(qkv, H, theta)
    (dqkv_ref,) = torch.autograd.grad(ref, qkv, dout)
    assert out.shape == (B, T, H * D) and dqkv.shape == qkv.shape
    torch.testing.assert_close(out, ref, **TOL[torch.float32])
    torch.testing.assert_close(dqkv, dqkv_ref, **TOL[torch.float32])


def test_fused_attention_qkv_strided_input_and_expanded_grad():
    """qkv a column slice of a wider tensor; out.sum() sends a stride-0 upstream gradient."""
    B, T, H, D = 2, 33, 2, 32
    wide = torch.randn(B, T, 3 * H * D + 8, device=DEVICE, requires_grad=True)
    qkv = wide[..., 4:4 + 3 * H * D]  # (B, T, 3C), row stride 3C + 8
    (g,) = torch.autograd.grad(fused_attention_qkv(qkv, H).sum(), wide)
    (g_ref,) = torch.autograd.grad(_reference_qkv(qkv, H).sum(), wide)
    torch.testing.assert_close(g, g_ref, **TOL[torch.float32])


def _tiny_model(idx, wte, w_qkv, n_head: int):
    x = embedding(idx, wte)  # (B, T, C)
    y = fused_attention_qkv(x @ w_qkv, n_head, 10000.0)  # (B, T, C)
    return F.cross_entropy((y @ wte.t()).flatten(0, 1), idx.flatten())


def _compile_matches_eager(backend: str, B: int, T: int, V: int, C: int, H: int) -> None:
    torch._dynamo.reset()
    idx = torch.randint(0, V, (B, T), device=DEVICE)
    wte = (0.5 * torch.randn(V, C, device=DEVICE)).requires_grad_()
    w_qkv = (torch.randn(C, 3 * C, device=DEVICE) / math.sqrt(C)).requires_grad_()
    loss = _tiny_model(idx, wte, w_qkv, H)
    grads = torch.autograd.grad(loss, (wte, w_qkv))
    compiled = torch.compile(_tiny_model, fullgraph=True, backend=backend)
    loss_c = compiled(idx, wte, w_qkv, H)
    grads_c = torch.autograd.grad(loss_c, (wte, w_qkv))
    torch.testing.assert_close(loss_c, loss, **TOL[torch.float32])
    for g_c, g in zip(grads_c, grads):
        torch.testing.assert_close(g_c, g, **TOL[torch.float32])


def test_compile_fullgraph_aot_eager():
    _compile_matches_eager("aot_eager", B=2, T=17, V=29, C=64, H=2)


def test_reimport_is_harmless():
    import fastgrok.kernels.rope_attention as module

    importlib.reload(module)  # re-registering the custom ops would raise
    q, k, v = _heads(1, 1, 5, 32, torch.float32)
    torch.testing.assert_close(module.rope_attention(q, k, v), rope_attention_reference(q, k, v), **TOL[torch.float32])


# ───────────────────────────── q_slice: only some queries, in the kernel ─────────────────────────────


def _check_q_slice(B: int, T: int, H: int, D: int, q_slice: slice, dtype=torch.float32) -> None:
    qkv = torch.randn(B, T, 3 * H * D, device=DEVICE, dtype=dtype, requires_grad=True)
    out = fused_attention_qkv(qkv, H, 10000.0, q_slice)
    ref = attention_reference(qkv, H, 10000.0, q_slice)
    assert out.shape == ref.shape == (B, len(range(T)[q_slice]), H * D)
    dout = torch.randn_like(out)
    (g,) = torch.autograd.grad(out, qkv, dout)
    (g_ref,) = torch.autograd.grad(ref, qkv, dout)
    torch.testing.assert_close(out, ref, **TOL[dtype])
    torch.testing.assert_close(g, g_ref, **TOL[dtype])


@pytest.mark.parametrize("B,T,H,D,q_slice", [
    (2, 95, 2, 32, slice(1, None, 3)),   # the model's last block: the z positions 3i + 1
    (2, 17, 2, 64, slice(3, 11, 2)),
    (1, 33, 1, 32, slice(32, None)),     # one query, the last
    (1, 40, 1, 32, slice(0, 1)),         # one query, the first: dk, dv zero past key 0
    (1, 200, 2, 32, slice(1, None, 3)),  # T > 128
    (1, 150, 1, 64, slice(140, None)),
])
def test_q_slice_matches_reference(B, T, H, D, q_slice):
    _check_q_slice(B, T, H, D, q_slice)


@pytest.mark.parametrize("T", [95, 200])
def test_q_slice_at_gpu_tiles(T, monkeypatch):
    """The bf16 GPU tiles (several key and query blocks per head) with the model's slice, in fp32 here."""
    _gpu_tiles(monkeypatch, 2)
    _check_q_slice(1, T, 2, 64, slice(1, None, 3))


def test_q_slice_fp16():
    _check_q_slice(2, 95, 2, 32, slice(1, None, 3), torch.float16)


@pytest.mark.parametrize("T", [95, 200])
def test_q_slice_backward_writes_every_element(T):
    """dqkv poisoned: rows not queried must get a zero dq, every other element its gradient."""
    B, H, D = 1, 2, 32
    q_slice = slice(1, None, 3)
    q, k, v = _heads(B, H, T, D, torch.float32)
    TQ = len(range(T)[q_slice])
    nan = float("nan")
    out = torch.full((B, TQ, H, D), nan, device=DEVICE).transpose(1, 2)  # (B, H, T', D)
    lse = torch.full((B, H, TQ), nan, device=DEVICE)
    with torch.no_grad():
        rope_attn_forward(q, k, v, q_slice=q_slice, out=out, lse=lse)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    dout = torch.randn_like(out)
    dqkv = torch.full((B, T, 3, H, D), nan, device=DEVICE)
    dq, dk, dv = (g.transpose(1, 2) for g in dqkv.unbind(2))  # (B, H, T, D) views
    rope_attn_backward(dout, q.detach(), k.detach(), v.detach(), out, lse, q_slice=q_slice, dq=dq, dk=dk, dv=dv)
    assert torch.isfinite(dqkv).all()
    full = rope_attention_reference(q, k, v)[:, :, q_slice]
    torch.testing.assert_close(out, full.detach(), **TOL[torch.float32])
    for got, want in zip((dq, dk, dv), torch.autograd.grad(full, (q, k, v), dout)):
        torch.testing.assert_close(got, want, **TOL[torch.float32])
    assert (dq[:, :, 0] == 0).all() and (dq[:, :, 2] == 0).all()  # positions 0, 2 were not queried


def test_q_slice_errors():
    qkv = torch.randn(1, 8, 3 * 32, device=DEVICE)
    with pytest.raises(ValueError, match="step ≥ 1"):
        fused_attention_qkv(qkv, 1, 10000.0, slice(None, None, -1))
    with pytest.raises(TypeError, match="q_slice"):
        fused_attention_qkv(qkv, 1, 10000.0, [1, 2])
    assert fused_attention_qkv(qkv, 1, 10000.0, slice(5, 5)).shape == (1, 0, 32)


def test_registry_uses_the_kernels_q_slice():
    """No wrapper computing all queries and slicing after: the registry hands out the kernel itself."""
    from fastgrok.backends import get_op

    op = get_op("attention", "fused")
    assert (op.__module__, op.__qualname__) == ("fastgrok.kernels.rope_attention", "fused_attention_qkv")


# ───────────────────────────── candidates: launch configurations by name ─────────────────────────────

CANDIDATE_CASES = [  # (id, (B, H, T, D), dtype, tile table's itemsize: 2 = the 16-bit tiles the candidates change)
    ("T1D32", (2, 2, 1, 32), torch.float32, 2),
    ("T17D32", (1, 2, 17, 32), torch.float32, 2),
    ("T95D64", (1, 2, 95, 64), torch.float32, 2),
    ("T95D128", (1, 2, 95, 128), torch.float32, 2),
    ("T33D128", (1, 2, 33, 128), torch.float32, 2),  # the sweep's 64-row blocks: one block, part-filled
    ("T130D128-fp16", (1, 1, 130, 128), torch.float16, 2),  # past ONE_PROGRAM_MAX_T at the paper's head dim (fp16:
    # the interpreter truncated fp32 → bf16 before _to_input_dtype, and over 130-term sums that bias outgrew 4×)
    ("T200D64", (1, 1, 200, 64), torch.float32, 2),  # past ONE_PROGRAM_MAX_T: split in every candidate
    ("T95D128-fp16", (1, 2, 95, 128), torch.float16, 2),
    ("T33D64-bf16", (1, 2, 33, 64), torch.bfloat16, 2),
    ("T95D32-fp32-tiles", (1, 2, 95, 32), torch.float32, 4),
]


def _candidates() -> list[str]:
    from fastgrok.kernels.rope_attention import CANDIDATES

    return list(CANDIDATES)


@pytest.mark.parametrize("case", CANDIDATE_CASES, ids=lambda c: c[0])
@pytest.mark.parametrize("name", _candidates())
def test_candidate_matches_reference(name, case, monkeypatch):
    """Every candidate at its GPU tiles (several key and query blocks per head) against the reference,
    forward and backward: fp32 to TOL, fp16/bf16 by the 2× rule (bf16 math upcast in the interpreter)."""
    from fastgrok.kernels.rope_attention import attention_candidate

    _, shape, dtype, itemsize = case
    _gpu_tiles(monkeypatch, itemsize)
    with attention_candidate(name):
        _run_and_check(*shape, dtype)


@pytest.mark.parametrize("name", _candidates())
def test_candidate_q_slice(name, monkeypatch):
    """The last block's slice at the candidate's GPU tiles, D = 128, and dqkv poisoned first."""
    from fastgrok.kernels.rope_attention import attention_candidate

    _gpu_tiles(monkeypatch, 2)
    with attention_candidate(name):
        _check_q_slice(1, 95, 2, 128, slice(1, None, 3))
        _check_q_slice(1, 40, 1, 32, slice(0, 1))


def test_candidates_reach_the_launch():
    """The named (or active) candidate sets the launch: split programs, warps, the rotation's pin (compiled code
    only); unknown names are refused."""
    from fastgrok.kernels import capture_launches
    from fastgrok.kernels.rope_attention import CANDIDATES, attention_candidate, block_config

    qkv = torch.empty(2, 95, 3 * 4 * 128, dtype=torch.bfloat16, requires_grad=True)  # (B, T, 3C)
    seen = {}
    for name in CANDIDATES:
        with attention_candidate(name), capture_launches() as found:
            y = fused_attention_qkv(qkv, 4)
            torch.autograd.grad(y, qkv, torch.empty_like(y))
        fwd, bwd = found[0], found[-1]
        assert [f.kernel.__name__ for f in found[1:-1]] == (["_rope_attn_bwd_delta_kernel"] if CANDIDATES[name].pre_delta
                                                             else [])
        want = block_config(95, 95, 128, 2, False, name)
        assert bwd.kwargs["ONE_PROGRAM"] == (not want["split"]) == (not CANDIDATES[name].split)
        assert (fwd.kwargs["num_warps"], bwd.kwargs["num_warps"]) == (want["fwd"][2], want["bwd"][4])
        assert bwd.grid == (2 * 4 * (1 if not want["split"] else 95 // want["bwd"][1] + 1 + 95 // want["bwd"][2] + 1),)
        assert fwd.kwargs["PIN"] == bwd.kwargs["PIN"] == (CANDIDATES[name].pin and not bwd.kwargs["UPCAST"])
        seen[name] = (*(fwd.kwargs[k] for k in ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")),
                      *(bwd.kwargs[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_M2", "BLOCK_N2", "num_warps", "num_stages")),
                      want["split"], bwd.kwargs["PRE_DELTA"], bwd.kwargs["PIN"])
    assert len(set(seen.values())) == len(seen)  # every candidate launches something of its own
    with pytest.raises(ValueError, match="attention candidate 'nope' is not one of v2"):
        with attention_candidate("nope"):
            pass
    with pytest.raises(ValueError, match="'nope'"):
        rope_attn_forward(*_qkv(), candidate="nope")


# ───────────────────────────── traffic model ─────────────────────────────


def test_traffic_model_meets_the_goals_at_the_papers_shape():
    """Forward ≤ 1.1 × 4n, backward ≤ 1.15 × 8n (B 1024, H 4, T 95, D 128, bf16), one launch each."""
    B, H, T, D = 1024, 4, 95, 128
    model, ideal = traffic(B, H, T, D, 2), ideal_bytes(B, H, T, D, 2)
    n = B * H * T * D * 2
    assert ideal == {"forward": 4 * n, "backward": 8 * n}
    fwd = model["forward"]["read"] + model["forward"]["write"]
    bwd = model["backward"]["read"] + model["backward"]["write"]
    assert ideal["forward"] <= fwd <= 1.1 * ideal["forward"]
    assert ideal["backward"] <= bwd <= 1.15 * ideal["backward"]
    assert model["forward"]["launches"] + model["backward"]["launches"] == 2
    delta = traffic(B, H, T, D, 2, candidate="split-w4-delta")["backward"]  # its pre-pass: dO again, Delta
    assert delta["launches"] == 2 and sum(delta.values()) - 2 == sum(model["backward"].values()) - 1 + B * H * T * (
        2 * D + 8)
    sliced = traffic(B, H, T, D, 2, 32)  # the last block reads and writes less
    assert sum(sliced["forward"].values()) < sum(model["forward"].values())


# ───────────────────────────── custom ops ─────────────────────────────


def test_opcheck_every_attention_op():
    B, T, H, D = 1, 17, 2, 32
    qkv = torch.randn(B, T, 3 * H * D, device=DEVICE, requires_grad=True)
    torch.library.opcheck(torch.ops.fastgrok.rope_attn_fwd.default, (qkv, H, 10000.0, 0, 1, T))
    torch.library.opcheck(torch.ops.fastgrok.rope_attn_fwd.default, (qkv, H, 10000.0, 1, 3, 6))
    out, lse = torch.ops.fastgrok.rope_attn_fwd(qkv.detach(), H, 10000.0, 1, 3, 6)
    torch.library.opcheck(torch.ops.fastgrok.rope_attn_bwd.default,
                          (torch.randn_like(out), qkv.detach(), out, lse, H, 10000.0, 1, 3, 6))
    q, k, v = _heads(B, H, T, D, torch.float32)
    torch.library.opcheck(torch.ops.fastgrok.rope_heads_fwd.default, (q, k, v, 10000.0))
    o, lse = torch.ops.fastgrok.rope_heads_fwd(q.detach(), k.detach(), v.detach(), 10000.0)
    torch.library.opcheck(torch.ops.fastgrok.rope_heads_bwd.default,
                          (torch.randn_like(o), q.detach(), k.detach(), v.detach(), o, lse, 10000.0))


def test_lse_is_not_differentiable():
    qkv = torch.randn(1, 9, 3 * 32, device=DEVICE, requires_grad=True)
    out, lse = torch.ops.fastgrok.rope_attn_fwd(qkv, 1, 10000.0, 0, 1, 9)
    assert out.requires_grad and not lse.requires_grad
    q, k, v = _heads(1, 1, 9, 32, torch.float32)
    out, lse = torch.ops.fastgrok.rope_heads_fwd(q, k, v, 10000.0)
    assert out.requires_grad and not lse.requires_grad


def test_ops_rope_attention_compiles_fullgraph():
    """fastgrok.ops.rope_attention goes through the custom op, so Dynamo needs no graph break."""
    import fastgrok.ops as ops

    torch._dynamo.reset()
    q, k, v = _heads(2, 2, 17, 32, torch.float32)
    fn = torch.compile(lambda a, b, c: ops.rope_attention(a, b, c, 500.0), fullgraph=True, backend="aot_eager")
    out = fn(q, k, v)
    ref = rope_attention_reference(q, k, v, 500.0)
    torch.testing.assert_close(out, ref, **TOL[torch.float32])
    dout = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), dout), torch.autograd.grad(ref, (q, k, v), dout)):
        torch.testing.assert_close(a, b, **TOL[torch.float32])


@pytest.mark.slow
def test_many_heads_exercise_the_real_grid():
    """264 heads (two waves of an H100's 132 SMs), one program each, through the 1-D grid's
    head/block decomposition; the GPU test below goes past the 65,535 limit of a 2-D grid's y axis."""
    _run_and_check(66, 4, 9, 32, torch.float32)


@pytest.mark.gpu
def test_gpu_more_heads_than_a_grid_axis_holds():
    _run_and_check(17500, 4, 9, 32, torch.bfloat16)  # B·H = 70,000 > 65,535


# ───────────────────────────── launcher errors ─────────────────────────────


def _qkv(shape=(1, 2, 8, 32), dtype=torch.float32, device=DEVICE):
    return [torch.randn(shape, dtype=dtype, device=device) for _ in range(3)]


def test_rejects_unsupported_dtype():
    with pytest.raises(TypeError, match="float64"):
        rope_attn_forward(*_qkv(dtype=torch.float64))
    q, k, v = _qkv()
    with pytest.raises(TypeError, match="dtype"):
        rope_attn_forward(q, k.half(), v)


@pytest.mark.parametrize("D", [16, 48, 256])
def test_rejects_unsupported_head_dim(D):
    with pytest.raises(ValueError, match=f"head_dim D={D}"):
        rope_attn_forward(*_qkv((1, 2, 8, D)))


def test_rejects_mismatched_shapes():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="shape"):
        rope_attn_forward(q, k[:, :, :5], v)
    with pytest.raises(ValueError, match=r"\(B, H, T, D\)"):
        rope_attn_forward(q[0], k[0], v[0])


def test_rejects_non_unit_last_stride():
    q, k, v = _qkv((1, 2, 32, 32))
    with pytest.raises(ValueError, match="stride"):
        rope_attn_forward(q.transpose(-1, -2), k, v)


def test_rejects_bad_theta_and_heads():
    with pytest.raises(ValueError, match="theta"):
        rope_attn_forward(*_qkv(), theta=-1.0)
    with pytest.raises(ValueError, match="n_head"):
        fused_attention_qkv(torch.randn(1, 8, 3 * 64, device=DEVICE), 5)


def test_rejects_cpu_tensor_without_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        rope_attn_forward(*_qkv(device="cpu"))


# ───────────────────────────── GPU ─────────────────────────────

GPU_SHAPES = [(1024, 4, 95, 128), (8, 4, 95, 128), (2, 4, 1, 128), (2, 4, 17, 64), (1, 4, 1024, 128),
              (2, 2, 1024, 32)]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "B{}H{}T{}D{}".format(*s))
def test_gpu_matches_reference(shape, dtype):
    """Liger's rule in 16 bits; fp32 uses input_precision="ieee" (the launcher's fp32 default)."""
    _run_and_check(*shape, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("q_slice", [None, slice(1, None, 3)], ids=["all", "last-block"])
def test_gpu_fused_attention_qkv_paper_shape(dtype, q_slice):
    B, T, H, D = 1024, 95, 4, 128
    qkv = torch.randn(B, T, 3 * H * D, device="cuda", dtype=dtype, requires_grad=True)
    out = fused_attention_qkv(qkv, H, 10000.0, q_slice)
    dout = torch.randn_like(out)
    (dqkv,) = torch.autograd.grad(out, qkv, dout)
    qkv64 = qkv.detach().double().requires_grad_()
    ref64 = attention_reference(qkv64, H, 10000.0, q_slice)
    (dref64,) = torch.autograd.grad(ref64, qkv64, dout.double())
    ref = attention_reference(qkv, H, 10000.0, q_slice)
    (dref,) = torch.autograd.grad(ref, qkv, dout)
    if dtype == torch.float32:  # the error model; dO zero at the rows not queried gives the slice's gradients
        q, k, v = split_qkv(qkv.detach(), H)  # (B, H, T, D) each
        rows = torch.arange(T, device="cuda")[q_slice or slice(None)]
        do_full = torch.zeros(B, H, T, D, device="cuda").index_copy_(2, rows, dout.view(B, -1, H, D).transpose(1, 2))
        b = _fp32_bounds(q, k, v, do_full)
        grads = torch.stack([b[g].transpose(1, 2) for g in ("dq", "dk", "dv")], 2)  # (B, T, 3, H, D): qkv's layout
        bounds = (b["out"][:, :, rows].transpose(1, 2).reshape(out.shape), grads.reshape(qkv.shape))
        for name, f, r64, bound in (("out", out, ref64, bounds[0]), ("dqkv", dqkv, dref64, bounds[1])):
            assert _bound_ratio(f, r64, bound) <= 1, (name, _bound_ratio(f, r64, bound))
        return
    for f, r, r64 in ((out, ref, ref64), (dqkv, dref, dref64)):
        err_fused = (f.double() - r64).abs().max().item()
        err_ref = (r.double() - r64).abs().max().item()
        assert err_fused <= 2 * err_ref + FLOOR[dtype], (err_fused, err_ref)


@pytest.mark.gpu
@pytest.mark.parametrize("name", _candidates())
def test_gpu_every_candidate_matches_reference(name):
    """Each launch candidate on the GPU, where bf16 math is real (the interpreter upcasts it): the paper's T and
    D at B 16 in bf16 by the 2× rule (two kernel compiles a candidate: gpu_check's stage 1 has a time limit).
    What benchmarks/kernel_ab.py times must be right before it can become the default (the A/B checks it at
    the paper's shape too; the default's other shapes and the slice are the other GPU tests')."""
    from fastgrok.kernels.rope_attention import attention_candidate

    with attention_candidate(name):
        _run_and_check(16, 4, 95, 128, torch.bfloat16)


@pytest.mark.gpu
def test_gpu_backward_is_deterministic():
    q, k, v = _heads(4, 4, 1024, 64, torch.bfloat16)
    out = rope_attention(q, k, v)
    dout = torch.randn_like(out)
    first = torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
    second = torch.autograd.grad(out, (q, k, v), dout)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.gpu
def test_gpu_compile_fullgraph_inductor():
    _compile_matches_eager("inductor", B=4, T=95, V=47, C=256, H=4)
