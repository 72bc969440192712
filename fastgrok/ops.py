"""Drop-in ops and modules for other training code: the Triton kernels where they can run.

A kernel runs on CUDA tensors, or on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1
set before triton is imported). Elsewhere these functions raise a ValueError that says so; pass
`fallback=True` to run the PyTorch reference there instead (with one warning).

    from fastgrok.ops import rope_attention, embedding
    y = rope_attention(q, k, v, theta=10000.0)  # == SDPA(rope(q), rope(k), v, is_causal=True)
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .backends import attention_reference, kernel, kernels_run_on
from .rope import rope_attention_reference

_warned: set[str] = set()


def fused_available(t: Tensor) -> bool:
    """Whether a Triton kernel can run on this tensor's device here."""
    return kernels_run_on(t.device)


def _use_fused(t: Tensor, name: str, fallback: bool) -> bool:
    if fused_available(t):
        return True
    why = (f"fastgrok.ops.{name}: the Triton kernel cannot run on a {t.device.type} tensor here (it needs CUDA, "
           "or TRITON_INTERPRET=1 set before triton is imported)")
    if not fallback:
        raise ValueError(why + "; pass fallback=True to use the PyTorch reference")
    if name not in _warned:
        _warned.add(name)
        warnings.warn(why + "; using the PyTorch reference", stacklevel=3)
    return False


def rope_attention(q: Tensor, k: Tensor, v: Tensor, theta: float = 10000.0, *, fallback: bool = False) -> Tensor:
    """Causal attention over RoPE-rotated q, k (interleaved pairs, fp32 angles); (B, H, T, D) → (B, H, T, D).

    Equal to `scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True)`, differentiable in q, k, v."""
    if not _use_fused(q, "rope_attention", fallback):
        return rope_attention_reference(q, k, v, theta)
    return kernel("rope_attention")(q, k, v, theta)


def attention_qkv(qkv: Tensor, n_head: int, theta: float = 10000.0, *, fallback: bool = False) -> Tensor:
    """The model's attention op on a fused projection: (B, T, 3C) → (B, T, C); compile-friendly."""
    if not _use_fused(qkv, "attention_qkv", fallback):
        return attention_reference(qkv, n_head, theta)
    return kernel("attention_qkv")(qkv, n_head, theta)


def embedding(idx: Tensor, weight: Tensor, *, fallback: bool = False) -> Tensor:
    """weight[idx] with a deterministic (atomic-free) backward into weight: (B, T), (V, C) → (B, T, C)."""
    if not _use_fused(weight, "embedding", fallback):
        return F.embedding(idx, weight)
    return kernel("embedding")(idx, weight)


class Embedding(nn.Embedding):
    """nn.Embedding (same parameters and state_dict) whose lookup is the fused kernel."""

    def __init__(self, *args, fallback: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.padding_idx is not None or self.max_norm is not None or self.sparse:
            raise ValueError("fastgrok.ops.Embedding supports no padding_idx, max_norm or sparse gradients")
        self.fallback = fallback

    def forward(self, idx: Tensor) -> Tensor:
        return embedding(idx, self.weight, fallback=self.fallback)


class RopeSelfAttention(nn.Module):
    """The model's attention block (to_qkv, o; no biases) with the fused RoPE attention kernel."""

    def __init__(self, n_embd: int, n_head: int, theta: float = 10000.0, *, fallback: bool = False) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} is not divisible by n_head={n_head}")
        self.to_qkv = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.o = nn.Linear(n_embd, n_embd, bias=False)
        self.n_head, self.theta, self.fallback = n_head, theta, fallback

    def forward(self, x: Tensor) -> Tensor:
        return self.o(attention_qkv(self.to_qkv(x), self.n_head, self.theta, fallback=self.fallback))


__all__ = ["rope_attention", "attention_qkv", "embedding", "Embedding", "RopeSelfAttention", "fused_available"]
