"""Drop-in ops and modules for other training code: the Triton kernels where they can run.

A kernel runs on CUDA tensors, or on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1
set before triton is imported). Elsewhere these functions raise a ValueError that says so; pass
`fallback=True` to run the PyTorch reference there instead (with one warning).

    from fastgrok.ops import rope_attention, embedding
    y = rope_attention(q, k, v, theta=10000.0)  # == SDPA(rope(q), rope(k), v, is_causal=True)
    report = patch(model)  # a model built by the paper's code: its attention and embeddings on the kernels
"""
from __future__ import annotations

import copy
import math
import numbers
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .backends import attention_reference, check_token_ids, fused_head_dims, kernel, kernels_run_on, split_qkv
from .rope import apply_rope, rope_attention_reference

_warned: set[str] = set()


def fused_available(t: Tensor) -> bool:
    """Whether a Triton kernel can run on this tensor's device here."""
    _tensor("fused_available", "t", t)
    return kernels_run_on(t.device)


# ---- argument checks: each entry point names the argument a caller got wrong ----------------------------
def _tensor(fn: str, name: str, t: object, dims: int | None = None, what: str = "") -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"fastgrok.ops.{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if dims is not None and t.dim() != dims:
        raise ValueError(f"fastgrok.ops.{fn}: {name} must have shape {what}, got {tuple(t.shape)}")


def _float_tensor(fn: str, name: str, t: Tensor) -> None:
    if not t.dtype.is_floating_point:
        raise TypeError(f"fastgrok.ops.{fn}: {name} must be a floating-point tensor, got {t.dtype}")


def _count(fn: str, name: str, value: object) -> int:
    """A positive int argument (n_head, n_embd)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"fastgrok.ops.{fn}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"fastgrok.ops.{fn}: {name}={value} must be ≥ 1")
    return int(value)


def _theta(fn: str, theta: object) -> float:
    """RoPE's base: a finite number > 0 (a nan or 0 would turn every angle into nan, silently)."""
    if isinstance(theta, bool) or not isinstance(theta, numbers.Real):
        raise TypeError(f"fastgrok.ops.{fn}: theta must be a number (RoPE's base), got {type(theta).__name__}")
    if not (math.isfinite(theta) and theta > 0):
        raise ValueError(f"fastgrok.ops.{fn}: theta={theta!r} must be a finite number > 0 (RoPE's base)")
    return float(theta)


def _check_qkv(fn: str, qkv: object, n_head: object, theta: object) -> None:
    """qkv (B, T, 3C) with C = n_head · head_dim, head_dim even."""
    _tensor(fn, "qkv", qkv, 3, "(B, T, 3·C)")
    _float_tensor(fn, "qkv", qkv)
    H = _count(fn, "n_head", n_head)
    C3 = qkv.shape[-1]
    if C3 % (3 * H) or (C3 // (3 * H)) % 2:
        raise ValueError(f"fastgrok.ops.{fn}: qkv's last dim {C3} must be 3·n_head·head_dim with an even head_dim "
                         f"(RoPE turns pairs); got n_head={H}")
    _theta(fn, theta)


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
    for name, t in (("q", q), ("k", k), ("v", v)):
        _tensor("rope_attention", name, t, 4, "(B, H, T, D)")
        _float_tensor("rope_attention", name, t)
        if t.shape != q.shape or t.dtype != q.dtype or t.device != q.device:
            raise ValueError(f"fastgrok.ops.rope_attention: {name} is {t.dtype} {tuple(t.shape)} on {t.device}; "
                             f"q, k and v must match (q is {q.dtype} {tuple(q.shape)} on {q.device})")
    if q.shape[-1] % 2:
        raise ValueError(f"fastgrok.ops.rope_attention: head dim D={q.shape[-1]} must be even (RoPE turns pairs)")
    _theta("rope_attention", theta)
    if not _use_fused(q, "rope_attention", fallback):
        return rope_attention_reference(q, k, v, theta)
    return kernel("rope_attention")(q, k, v, theta)


def attention_qkv(qkv: Tensor, n_head: int, theta: float = 10000.0, *, fallback: bool = False) -> Tensor:
    """The model's attention op on a fused projection: (B, T, 3C) → (B, T, C); compile-friendly."""
    _check_qkv("attention_qkv", qkv, n_head, theta)
    if not _use_fused(qkv, "attention_qkv", fallback):
        return attention_reference(qkv, n_head, theta)
    return kernel("attention_qkv")(qkv, n_head, theta)


def embedding(idx: Tensor, weight: Tensor, *, fallback: bool = False) -> Tensor:
    """weight[idx] with a deterministic (atomic-free) backward into weight: (B, T), (V, C) → (B, T, C)."""
    _tensor("embedding", "idx", idx)
    _tensor("embedding", "weight", weight, 2, "(V, C)")
    if idx.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"fastgrok.ops.embedding: idx must be an int64 or int32 tensor of token ids, got {idx.dtype}")
    _float_tensor("embedding", "weight", weight)
    check_token_ids("fastgrok.ops.embedding: idx", idx, weight.shape[0])
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
        C, H = _count("RopeSelfAttention", "n_embd", n_embd), _count("RopeSelfAttention", "n_head", n_head)
        if C % H:
            raise ValueError(f"fastgrok.ops.RopeSelfAttention: n_embd={C} is not divisible by n_head={H}")
        if (C // H) % 2:
            raise ValueError(f"fastgrok.ops.RopeSelfAttention: head_dim = n_embd/n_head = {C // H} must be even "
                             "(RoPE turns pairs)")
        _theta("RopeSelfAttention", theta)
        self.to_qkv = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.o = nn.Linear(n_embd, n_embd, bias=False)
        self.n_head, self.theta, self.fallback = n_head, theta, fallback

    def forward(self, x: Tensor) -> Tensor:
        return self.o(attention_qkv(self.to_qkv(x), self.n_head, self.theta, fallback=self.fallback))

# ---- patch: fastgrok's kernels inside a model built by other code (the paper's) -----------------------
_DROPOUT_ATTRS = ("dp", "dropout", "dropout_p", "attn_dropout", "attn_pdrop", "resid_pdrop")
_PROBE_TOL = 1e-4  # max |original − fastgrok reference| / max |reference| on the fp32 probe
# rotary_embedding_torch.RotaryEmbedding options that change what it computes, and the values that do not
_ROTARY_PLAIN = (("use_xpos", False), ("interpolate_factor", 1.0), ("freqs_for", "lang"),
                 ("seq_before_head_dim", False), ("learned_freq", False))


@dataclass
class PatchReport:
    """What `patch` swapped (module path → what it became) and what it left alone (module path → why)."""

    swapped: dict[str, str] = field(default_factory=dict)
    left: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"fastgrok.ops.patch: swapped {len(self.swapped)} module(s), left {len(self.left)}"]
        lines += [f"  swapped {k or '<root>'}: {v}" for k, v in self.swapped.items()]
        lines += [f"  left    {k or '<root>'}: {v}" for k, v in self.left.items()]
        return "\n".join(lines)


class PatchedAttention(nn.Module):
    """The paper's attention module (to_qkv, o, n_head, rotary_emb) running fastgrok's fused RoPE attention.

    Built by `patch` from the original: it adopts the original's parameters, buffers and submodules (the
    same objects under the same names, so state_dict keys and optimizer references are unchanged) and its
    plain attributes; only forward changes. Where the original also returned its rotated q, k and v (the
    paper's `y, (q, k, v)`), so does this one."""

    def __init__(self, original: nn.Module, n_head: int, theta: float, returns_qkv: bool, fallback: bool) -> None:
        super().__init__()
        for name, p in original._parameters.items():
            self.register_parameter(name, p)
        for name, b in original._buffers.items():
            self.register_buffer(name, b, persistent=name not in original._non_persistent_buffers_set)
        for name, m in original._modules.items():
            self.add_module(name, m)
        for name, value in vars(original).items():
            if not name.startswith("_") and name != "training" and isinstance(value, (bool, int, float, str)):
                setattr(self, name, value)
        self.n_head, self.theta, self.returns_qkv, self.fallback = n_head, theta, returns_qkv, fallback
        self.replaces = type(original).__qualname__
        self.train(original.training)

    def extra_repr(self) -> str:
        return f"replaces={self.replaces}, n_head={self.n_head}, theta={self.theta:g}, returns_qkv={self.returns_qkv}"

    def forward(self, x: Tensor):
        qkv = self.to_qkv(x)  # (B, T, 3C)
        y = self.o(attention_qkv(qkv, self.n_head, self.theta, fallback=self.fallback))  # (B, T, C)
        if not self.returns_qkv:
            return y
        q, k, v = split_qkv(qkv, self.n_head)  # (B, H, T, D) each
        return y, (apply_rope(q, self.theta), apply_rope(k, self.theta), v)


def _kernel_head_dims() -> tuple[int, ...] | None:
    try:
        return fused_head_dims()
    except (ImportError, ValueError):  # no triton here: the modules fall back (or raise) when run
        return None


def _rope_theta(freqs: Tensor, D: int, hint: object) -> float | None:
    """θ with freqs[i] = θ^(-2i/D) (fp32, as fastgrok computes them), or None if there is none."""
    freqs = freqs.detach().float().cpu().flatten()
    exps = torch.arange(0, D, 2)[: D // 2].float() / D
    candidates = [float(hint)] if isinstance(hint, (int, float)) and hint > 0 else []
    if D > 2 and freqs[1] > 0:
        raw = float(freqs[1].double() ** (-D / 2))
        candidates += [float(f"{raw:.4g}"), raw]
    elif D == 2:
        candidates.append(10000.0)  # one pair: its angle is t for every θ
    for theta in candidates:
        if torch.allclose(1.0 / (theta ** exps), freqs, rtol=1e-6, atol=0):
            return theta
    return None


def _check_attention(m: nn.Module) -> tuple[str | None, tuple[int, float] | None]:
    """(why it is not the paper's attention, or None; then its n_head and θ)."""
    for name in ("to_qkv", "o"):
        lin = getattr(m, name, None)
        if lin is None:
            return f"no `{name}` projection (not the paper's attention structure)", None
        if type(lin) is not nn.Linear:
            return f"{name} is a {type(lin).__qualname__}, not a plain nn.Linear", None
        if lin.bias is not None:
            return f"{name} has a bias", None
    C = m.o.out_features
    if (m.to_qkv.in_features, m.to_qkv.out_features, m.o.in_features) != (C, 3 * C, C):
        return (f"projections to_qkv {m.to_qkv.in_features}→{m.to_qkv.out_features}, o {m.o.in_features}→{C} "
                f"are not C→3C and C→C"), None
    H = getattr(m, "n_head", None)
    if not isinstance(H, int) or isinstance(H, bool) or H < 1 or C % H or (C // H) % 2:
        return f"n_head={H!r} does not split the width {C} into heads of even size", None
    D = C // H
    for sub_name, sub in m.named_modules():
        if isinstance(sub, nn.modules.dropout._DropoutNd) and sub.p > 0:
            return f"dropout p={sub.p} ({sub_name}); the fused attention has none", None
    for attr in _DROPOUT_ATTRS:
        v = getattr(m, attr, 0)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return f"dropout {attr}={v}; the fused attention has none", None
    if getattr(m, "is_causal", True) is not True:
        return "not causal (is_causal is not True)", None
    rot = getattr(m, "rotary_emb", None)
    freqs = getattr(rot, "freqs", None)
    if not isinstance(freqs, Tensor):
        return "no rotary embedding with frequencies (rotary_emb.freqs)", None
    if freqs.numel() != D // 2:
        return f"its rotary embedding turns {2 * freqs.numel()} of the head's {D} dims, not all", None
    if freqs.requires_grad:
        return "learned rotary frequencies", None
    for attr, plain in _ROTARY_PLAIN:
        if hasattr(rot, attr) and getattr(rot, attr) != plain:
            return f"rotary_emb.{attr}={getattr(rot, attr)!r}", None
    theta = _rope_theta(freqs, D, getattr(rot, "theta", None))
    if theta is None:
        return "rotary frequencies are not θ^(-2i/D) for any θ", None
    dims = _kernel_head_dims()
    if dims is not None and D not in dims:
        return f"head_dim {D}: the fused kernel takes {dims}", None
    return None, (H, theta)


def _close(a: object, b: Tensor) -> bool:
    if not isinstance(a, Tensor) or a.shape != b.shape:
        return False
    return bool((a.float() - b).abs().max() <= _PROBE_TOL * b.abs().max().clamp_min(1e-30))


@torch.no_grad()
def _probe(m: nn.Module, n_head: int, theta: float) -> tuple[str | None, bool]:
    """Run a CPU fp32 copy of `m`, given random weights that make attention sharp, on a random input and
    compare with what PatchedAttention computes (fastgrok's reference). (why not equal or None, returns_qkv)."""
    try:
        twin = copy.deepcopy(m).to("cpu", torch.float32)
    except Exception as e:  # anything a foreign module may raise
        return f"cannot be copied to the CPU for the equivalence probe ({type(e).__name__})", False
    gen = torch.Generator().manual_seed(0)  # never the global RNG
    C = twin.o.out_features
    for lin in (twin.to_qkv, twin.o):
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * (2.0 / math.sqrt(C)))
    x = torch.randn(2, 13, C, generator=gen)  # (B, T, C)
    try:
        out = twin(x)
    except Exception as e:
        return f"its forward failed on the equivalence probe ({type(e).__name__}: {str(e)[:80]})", False
    qkv = twin.to_qkv(x)
    want = twin.o(attention_reference(qkv, n_head, theta))  # (B, T, C)
    returns_qkv = isinstance(out, tuple)
    if returns_qkv:
        if len(out) != 2 or not isinstance(out[1], (tuple, list)) or len(out[1]) != 3:
            return "returns a tuple other than (y, (q, k, v))", False
        out, aux = out
    if not _close(out, want):
        return "differs from causal interleaved-RoPE attention on the equivalence probe", False
    if returns_qkv:
        q, k, v = split_qkv(qkv, n_head)  # (B, H, T, D) each
        if not all(_close(a, b) for a, b in zip(aux, (apply_rope(q, theta), apply_rope(k, theta), v))):
            return "the (q, k, v) it returns are not the RoPE-rotated q, k and v", False
    return None, returns_qkv


def _embedding_problem(m: nn.Embedding) -> str | None:
    if type(m) is not nn.Embedding:
        return f"a subclass of nn.Embedding ({type(m).__qualname__}) whose forward may differ"
    for attr, plain in (("padding_idx", None), ("max_norm", None), ("scale_grad_by_freq", False), ("sparse", False)):
        if getattr(m, attr) != plain:
            return f"{attr}={getattr(m, attr)!r} (fastgrok's embedding supports none)"
    return None


def _fastgrok_embedding(old: nn.Embedding, fallback: bool) -> Embedding:
    new = Embedding(old.num_embeddings, old.embedding_dim, _weight=old.weight, fallback=fallback)
    new.weight = old.weight  # the same Parameter: ties (lm_head) and optimizer references survive
    new.train(old.training)
    return new


def patch(model: nn.Module, *, fallback: bool = False) -> PatchReport:
    """Swap, in place, the paper-structured attention modules and the nn.Embeddings of `model` for ones that
    run fastgrok's kernels; parameters (the same objects) and state_dict keys are unchanged.

    An attention module (one with a `to_qkv`, or "attention" in its class name) is swapped for a
    PatchedAttention only when its structure checks out — plain bias-free to_qkv C→3C and o C→C, an int
    n_head, no dropout, causal, rotary_emb.freqs = θ^(-2i/D) over the full head dim, a head dim the kernel
    takes — and a CPU fp32 copy of it with random weights matches fastgrok's reference (causal, interleaved
    RoPE) on a probe input to 1e-4. A plain nn.Embedding becomes fastgrok.ops.Embedding. Everything else
    is left alone, never approximated; the report says what was swapped and why the rest was left.
    `fallback` goes to the new modules: the PyTorch reference where no kernel can run (else they raise).
    """
    from .model import Attention as _OwnAttention
    if not isinstance(model, nn.Module):
        raise TypeError(f"fastgrok.ops.patch: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(fallback, bool):
        raise TypeError(f"fastgrok.ops.patch: fallback must be True or False, got {fallback!r}")
    report = PatchReport()
    new_for: dict[int, nn.Module] = {}
    for name, m in model.named_modules():
        if isinstance(m, (PatchedAttention, Embedding, RopeSelfAttention)):
            continue
        if isinstance(m, _OwnAttention):
            report.left[name] = "fastgrok's own attention: its backend comes from ModelConfig.backend"
        elif isinstance(m, nn.Embedding):
            why = _embedding_problem(m)
            if why is None:
                new_for[id(m)] = _fastgrok_embedding(m, fallback)
                report.swapped[name] = "fastgrok.ops.Embedding"
            else:
                report.left[name] = why
        elif hasattr(m, "to_qkv") or "attention" in type(m).__name__.lower():
            why, found = _check_attention(m)
            returns_qkv = False
            if why is None:
                why, returns_qkv = _probe(m, *found)
            if why is None:
                new_for[id(m)] = PatchedAttention(m, *found, returns_qkv, fallback)
                report.swapped[name] = (f"PatchedAttention (n_head {found[0]}, θ {found[1]:g}"
                                        + (", returns (y, (q, k, v)))" if returns_qkv else ")"))
            else:
                report.left[name] = why
    if id(model) in new_for:
        del new_for[id(model)]
        report.swapped.pop("", None)
        report.left[""] = "the model itself cannot be swapped in place: patch a module that holds it"
    for parent in list(model.modules()):
        for child_name, child in list(parent._modules.items()):
            if child is not None and id(child) in new_for:
                parent._modules[child_name] = new_for[id(child)]
    return report


__all__ = ["rope_attention", "attention_qkv", "embedding", "Embedding", "RopeSelfAttention", "fused_available",
           "patch", "PatchReport", "PatchedAttention"]
