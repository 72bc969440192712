"""Philox4x32-10 in plain torch integer ops: the generator Triton's `tl.randint` implements.

Counter = (offset low 32 bits, offset high 32 bits, 0, 0), key = (seed low, seed high), ten
rounds (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011). Values are held
in int64 so every product stays exact: the 32×32→64-bit products are built from 16-bit halves.
`philox_u32(seed, offset)` equals the first word of `tl.randint(seed, offset)` bit for bit, so a
Triton batch kernel and this reference produce identical batches from the same counters.
"""
from __future__ import annotations

import torch
from torch import Tensor

ROUND_A, ROUND_B = 0xD2511F53, 0xCD9E8D57
KEY_A, KEY_B = 0x9E3779B9, 0xBB67AE85
MASK32 = 0xFFFFFFFF


def _mulhilo(a: int, b: Tensor) -> tuple[Tensor, Tensor]:
    """(hi, lo) 32-bit words of a · b for a constant a < 2^32 and b in [0, 2^32), exact in int64."""
    a_hi, a_lo = a >> 16, a & 0xFFFF
    x = b * a_hi  # < 2^48
    y = b * a_lo  # < 2^48
    low = (x & 0xFFFF) * 65536 + y  # < 2^49
    return (x >> 16) + (low >> 32), low & MASK32


def philox4x32(seed: int, c0: Tensor, c1: Tensor, c2: Tensor, c3: Tensor, rounds: int = 10) -> tuple[Tensor, ...]:
    """Philox4x32 on int64 tensors holding uint32 words; returns the four output words."""
    if not 0 <= seed < 2**64:
        raise ValueError(f"philox seed={seed} must lie in [0, 2^64)")
    k0, k1 = seed & MASK32, (seed >> 32) & MASK32
    for _ in range(rounds):
        hi_b, lo_b = _mulhilo(ROUND_B, c2)
        hi_a, lo_a = _mulhilo(ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + KEY_A) & MASK32, (k1 + KEY_B) & MASK32
    return c0, c1, c2, c3


def philox_u32(seed: int, offset: Tensor) -> Tensor:
    """First output word of Philox4x32-10 at counter (offset lo, offset hi, 0, 0): int64 in [0, 2^32).

    Equal to `tl.randint(seed, offset)` for an int64 offset tensor (and an int32 one < 2^31).
    """
    if offset.dtype != torch.int64:
        raise TypeError(f"philox offsets must be int64, got {offset.dtype}")
    zero = torch.zeros_like(offset)
    out, _, _, _ = philox4x32(seed, offset & MASK32, (offset >> 32) & MASK32, zero, zero)
    return out
