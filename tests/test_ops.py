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
