"""The GPT of SPEC "Model": pre-LayerNorm blocks, RoPE attention, tied unembedding.

Parameter names are those of the paper's code (transformer.wte, transformer.h.{i}.ln_1,
.attn.to_qkv, .attn.o, .mlp.c_fc, .mlp.c_proj, .ln_2, transformer.ln_f, lm_head), so its
checkpoints load directly, and both backends share them. Every op with a kernel is looked up in
the registry (backends.py); dims: B batch, T tokens, C width, V vocab.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .backends import Ops, check_token_ids, resolve_ops
from .config import ModelConfig


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, ops: Ops) -> None:
        super().__init__()
        C = cfg.n_embd
        self.to_qkv = nn.Linear(C, 3 * C, bias=False)
        self.o = nn.Linear(C, C, bias=False)
        self.n_head, self.theta, self.ops = cfg.n_head, cfg.rope_theta, ops

    def forward(self, x: Tensor, q_slice: slice | None = None) -> Tensor:
        if q_slice is None:
            y = self.ops.attention(self.to_qkv(x), self.n_head, self.theta)  # (B, T, C)
        else:
            y = self.ops.attention(self.to_qkv(x), self.n_head, self.theta, q_slice)  # (B, T', C)
        return self.o(y)


class MLP(nn.Module):
    """Linear(C, widen·C) → ReLU or tanh-GELU → Linear(widen·C, C)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, cfg.widen * cfg.n_embd, bias=False)
        self.c_proj = nn.Linear(cfg.widen * cfg.n_embd, cfg.n_embd, bias=False)
        self.act = nn.ReLU() if cfg.mlp == "relu" else nn.GELU(approximate="tanh")

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


def swiglu_hidden(n_embd: int, widen: int, multiple_of: int = 8) -> int:
    """Hidden width of the paper's LLaMA-style MLP: widen · ⌊2C/3⌋, rounded up to a multiple of 8."""
    hidden = widen * int(2 * n_embd / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class SwiGLU(nn.Module):
    """w2(silu(w1 x) · w3 x), as the paper's LlamaMLP."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hidden = swiglu_hidden(cfg.n_embd, cfg.widen)
        self.w1 = nn.Linear(cfg.n_embd, hidden, bias=False)
        self.w2 = nn.Linear(hidden, cfg.n_embd, bias=False)
        self.w3 = nn.Linear(cfg.n_embd, hidden, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, ops: Ops) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = Attention(cfg, ops)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = SwiGLU(cfg) if cfg.mlp == "swiglu" else MLP(cfg)

    def forward(self, x: Tensor, q_slice: slice | None = None) -> Tensor:
        """x (B, T, C) → (B, T, C), or (B, T', C) at the positions q_slice only."""
        if q_slice is None:
            x = x + self.attn(self.ln_1(x))
        else:
            x = x[:, q_slice] + self.attn(self.ln_1(x), q_slice)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """idx (B, T) → logits (B, T, V); `positions` restricts the head to some positions."""

    def __init__(self, cfg: ModelConfig, ops: Ops | None = None) -> None:
        super().__init__()
        if not isinstance(cfg, ModelConfig):
            hint = ": pass its .model (GPT(cfg.model))" if type(cfg).__name__ == "Config" else ""
            raise TypeError(f"GPT takes a ModelConfig{hint}, got {type(cfg).__name__}")
        if cfg.vocab_size is None:
            raise ValueError("ModelConfig.vocab_size is unset: build the model from Config(...).model, "
                             "or set vocab_size (≥ p)")
        self.cfg = cfg
        self.ops = ops if ops is not None else resolve_ops(cfg)
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            h=nn.ModuleList(Block(cfg, self.ops) for _ in range(cfg.depth)),
            ln_f=nn.LayerNorm(cfg.n_embd),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """SPEC init: N(0, 0.02) for every Linear and the embedding; MLP output / sqrt(2·depth)."""
        for name, m in self.named_modules():
            if isinstance(m, (nn.Linear, nn.Embedding)) and m is not self.lm_head:
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
                if name.endswith(("mlp.c_proj", "mlp.w2")):  # SPEC; the paper's code leaves its SwiGLU w2 unscaled
                    m.weight.div_(math.sqrt(2 * self.cfg.depth))
            elif isinstance(m, nn.LayerNorm):
                m.reset_parameters()

    def num_params(self) -> int:
        """Parameters, the tied embedding counted once."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: Tensor, positions: slice | None = None) -> Tensor:
        """Logits at every position, or (positions: a slice) only there. Outputs elsewhere are never
        used then, so the last block computes its queries, MLP and head at those positions alone."""
        if idx.dim() != 2:
            raise ValueError(f"idx must be (B, T) token ids, got shape {tuple(idx.shape)}")
        if idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"idx must be an int64 (or int32) tensor of token ids, got {idx.dtype}")
        if idx.device.type == "cpu":  # on a GPU the check would sync every step; there torch's own assert fires
            check_token_ids("idx", idx, self.cfg.vocab_size)
        if positions is not None and not isinstance(positions, slice):
            raise TypeError(f"positions must be a slice, got {type(positions).__name__}")
        x = self.ops.embedding(idx, self.transformer.wte.weight)  # (B, T, C)
        *blocks, last = self.transformer.h
        for block in blocks:
            x = block(x)
        x = last(x, positions)  # (B, T', C)
        return self.lm_head(self.transformer.ln_f(x))  # (B, T', V)
