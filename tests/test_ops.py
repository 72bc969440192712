"""fastgrok.ops: the drop-in functions and modules for other code."""
import pytest
import torch

import fastgrok.ops as ops
from fastgrok.backends import attention_reference
from fastgrok.rope import rope_attention_reference


def test_rope_attention_matches_sdpa_of_rope_with_grads():
    q, k, v = (torch.randn(2, 3, 17, 32, requires_grad=True) for _ in range(3))
    out = ops.rope_attention(q, k, v, theta=500.0)
    ref = rope_attention_reference(q, k, v, 500.0)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_embedding_and_modules_share_reference_parameters():
    emb = ops.Embedding(11, 32)
    ref = torch.nn.Embedding(11, 32)
    ref.load_state_dict(emb.state_dict())
    idx = torch.randint(0, 11, (3, 9))
    torch.testing.assert_close(emb(idx), ref(idx))
    attn = ops.RopeSelfAttention(64, 2)
    assert set(attn.state_dict()) == {"to_qkv.weight", "o.weight"}
    x = torch.randn(2, 17, 64)
    expect = attn.o(attention_reference(attn.to_qkv(x), 2, 10000.0))
    torch.testing.assert_close(attn(x), expect, atol=1e-5, rtol=1e-5)


def test_clear_error_or_fallback_where_no_kernel_can_run(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q = torch.randn(1, 1, 5, 32)
    with pytest.raises(ValueError, match="needs CUDA.*fallback=True"):
        ops.rope_attention(q, q, q)
    with pytest.raises(ValueError, match="needs CUDA"):
        ops.embedding(torch.zeros(1, 2, dtype=torch.long), torch.randn(3, 4))
    ops._warned.clear()
    with pytest.warns(UserWarning, match="PyTorch reference"):
        out = ops.rope_attention(q, q, q, fallback=True)
    torch.testing.assert_close(out, rope_attention_reference(q, q, q))
    assert not ops.fused_available(q)


# ---- issue 21: bad arguments are named up front (TypeError/ValueError), never a stray error or zeros -------
Q = torch.randn(1, 2, 5, 8)
QKV = torch.randn(1, 5, 3 * 16)


@pytest.mark.parametrize("call, err, match", [
    (lambda: ops.rope_attention(None, Q, Q, fallback=True), TypeError, "rope_attention: q must be a torch.Tensor"),
    (lambda: ops.rope_attention(Q, Q, "v", fallback=True), TypeError, "rope_attention: v must be a torch.Tensor"),
    (lambda: ops.rope_attention(Q[0], Q[0], Q[0], fallback=True), ValueError, r"q must have shape \(B, H, T, D\)"),
    (lambda: ops.rope_attention(Q, Q[:, :1], Q, fallback=True), ValueError, "k is .* q, k and v must match"),
    (lambda: ops.rope_attention(Q.long(), Q.long(), Q.long(), fallback=True), TypeError, "q must be a floating"),
    (lambda: ops.rope_attention(Q, Q, Q, theta="big", fallback=True), TypeError, "theta must be a number"),
    (lambda: ops.attention_qkv(QKV, 0, fallback=True), ValueError, "attention_qkv: n_head=0 must be ≥ 1"),
    (lambda: ops.attention_qkv(QKV, 2.0, fallback=True), TypeError, "attention_qkv: n_head must be an int"),
    (lambda: ops.attention_qkv(QKV, 5, fallback=True), ValueError, "qkv's last dim 48 must be 3·n_head·head_dim"),
    (lambda: ops.attention_qkv(None, 2, fallback=True), TypeError, "attention_qkv: qkv must be a torch.Tensor"),
    (lambda: ops.attention_qkv(QKV[0], 2, fallback=True), ValueError, r"qkv must have shape \(B, T, 3·C\)"),
    (lambda: ops.RopeSelfAttention(64, 0), ValueError, "RopeSelfAttention: n_head=0 must be ≥ 1"),
    (lambda: ops.RopeSelfAttention(0, 4), ValueError, "RopeSelfAttention: n_embd=0 must be ≥ 1"),
    (lambda: ops.RopeSelfAttention(6, 2), ValueError, "head_dim = n_embd/n_head = 3 must be even"),
    (lambda: ops.embedding(torch.zeros(2), torch.randn(4, 3), fallback=True), TypeError, "idx must be an int64"),
    (lambda: ops.embedding(torch.zeros(2, dtype=torch.long), None, fallback=True), TypeError, "weight must be a"),
    (lambda: ops.fused_available(None), TypeError, "fused_available: t must be a torch.Tensor"),
])
def test_bad_arguments_are_named(call, err, match):
    with pytest.raises(err, match=match) as e:
        call()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("theta", [float("nan"), float("inf"), 0.0, -1.0, 0])
def test_rope_theta_must_be_finite_and_positive(theta):
    for call in (lambda: ops.rope_attention(Q, Q, Q, theta=theta, fallback=True),
                 lambda: ops.attention_qkv(QKV, 2, theta, fallback=True),
                 lambda: ops.RopeSelfAttention(64, 2, theta)):
        with pytest.raises(ValueError, match=rf"theta={theta!r} must be a finite number > 0"):
            call()
