"""Rotary position embedding, exactly as SPEC: interleaved pairs, fp32 angles.

Matches `rotary_embedding_torch.RotaryEmbedding(dim=head_dim)` as the paper's code uses it:
dims 2i and 2i+1 rotate together by angle t · θ^(-2i/D), t the token index, math in fp32,
result cast back to the input dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def rope_angles(T: int, D: int, theta: float = 10000.0, device: torch.device | str | None = None) -> Tensor:
    """Angles (T, D/2) in fp32: angle[t, i] = t · θ^(-2i/D)."""
    if D % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {D}")
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, device=device)[: D // 2].float() / D))  # (D/2,)
    t = torch.arange(T, device=device, dtype=torch.float32)  # (T,)
    return t[:, None] * inv_freq[None, :]  # (T, D/2)


def apply_rope(x: Tensor, theta: float = 10000.0, start: int = 0) -> Tensor:
    """Rotate x (..., T, D) by its position along dim -2, the first at `start` (tokens after a cached prefix);
    fp32 angles and math, returns x.dtype."""
    T, D = x.shape[-2], x.shape[-1]
    work = torch.promote_types(x.dtype, torch.float32)  # fp32 math (fp64 stays fp64)
    ang = rope_angles(start + T, D, theta, x.device)[start:].to(work)  # (T, D/2)
    cos, sin = ang.cos(), ang.sin()
    xf = x.to(work).unflatten(-1, (D // 2, 2))  # (..., T, D/2, 2)
    x0, x1 = xf[..., 0], xf[..., 1]  # (..., T, D/2) each
    out = torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1)  # (..., T, D/2, 2)
    return out.flatten(-2).to(x.dtype)  # (..., T, D)


def rope_attention_reference(q: Tensor, k: Tensor, v: Tensor, theta: float = 10000.0) -> Tensor:
    """Causal SDPA over RoPE-rotated q, k; q, k, v (B, H, T, D) → (B, H, T, D), scale 1/sqrt(D)."""
    return F.scaled_dot_product_attention(apply_rope(q, theta), apply_rope(k, theta), v, is_causal=True)
