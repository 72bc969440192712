"""The op registry: the one place that knows both the reference ops and the Triton kernels.

Every op the model or trainer uses is looked up here by (op, backend). The reference backend is
the specification (pure PyTorch, runs anywhere); fused entries name a kernel module that is
imported only when asked for, so `import fastgrok` never imports triton.

Op contracts (shapes with B batch, T tokens, C width, V vocab, S shots):
- attention(qkv (B, T, 3C), n_head, theta, q_slice=None) → (B, T, C): causal RoPE attention, scale
  1/sqrt(C/n_head); with q_slice (a slice of positions) only those queries: (B, T', C)
- embedding(idx (B, T) int64, weight (V, C)) → (B, T, C)
- batchgen(source: data.BatchSource, step: int | 0-dim tensor) → (B, (n_var+1)·S) int64

Routing (STYLE, Kernels: a kernel earns its place by measurement): where a kernel lost to the reference
path on a device, `backend="fused"` resolves that op to the reference there (ROUTES); a per-op choice
(`embedding="fused"`) always gets the kernel. `Ops.routed` says what was routed, and why.
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import BACKENDS, ModelConfig
from .data import BatchSource, generate_batch
# torch only, no triton; capture_launches is re-exported for fastgrok.bench.sm90
from .kernels._common import capture_launches, interpreter_active  # noqa: F401
from .rope import apply_rope

OPS = ("attention", "embedding", "batchgen")


def split_qkv(qkv: Tensor, n_head: int) -> tuple[Tensor, Tensor, Tensor]:
    """q, k, v (B, H, T, D) views of the fused projection qkv (B, T, 3C): [q | k | v], heads inside each."""
    B, T, C3 = qkv.shape
    q, k, v = qkv.view(B, T, 3, n_head, C3 // (3 * n_head)).unbind(2)  # (B, T, H, D) each
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D) each


def attention_reference(qkv: Tensor, n_head: int, theta: float, q_slice: slice | None = None) -> Tensor:
    """Split the fused projection, RoPE on q and k, causal SDPA: (B, T, 3C) → (B, T, C).

    With q_slice, only the queries at those positions (keys and values at every position): the
    last block needs outputs only where the loss is taken."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    q, k, v = split_qkv(qkv, n_head)  # (B, H, T, D) each
    k = apply_rope(k, theta)
    if q_slice is None:
        y = F.scaled_dot_product_attention(apply_rope(q, theta), k, v, is_causal=True)
        return y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
    pos = torch.arange(T, device=qkv.device)[q_slice]  # (T',) absolute positions of the queries
    q = apply_rope(q, theta)[:, :, q_slice]  # (B, H, T', D); RoPE is per position, so slicing after is exact
    mask = pos[:, None] >= torch.arange(T, device=qkv.device)[None, :]  # (T', T) causal
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return y.transpose(1, 2).reshape(B, pos.numel(), C)  # (B, T', C)


def check_token_ids(what: str, idx: Tensor, vocab: int) -> None:
    """Token ids must lie in [0, vocab): one ValueError naming `what`, not torch's "index out of range in self"
    (or a kernel's out-of-bounds read). Reading the ids' range syncs with a GPU; inside a compiled graph the
    check is skipped (it would break the graph)."""
    if torch.compiler.is_compiling() or idx.numel() == 0:
        return
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= vocab:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{what} holds token id {bad}, outside the vocabulary [0, {vocab})")


def embedding_reference(idx: Tensor, weight: Tensor) -> Tensor:
    return F.embedding(idx, weight)


# (op, backend) → a callable, or "module:attribute" imported on first use.
_REGISTRY: dict[tuple[str, str], Callable | str] = {
    ("attention", "reference"): attention_reference,
    ("embedding", "reference"): embedding_reference,
    ("batchgen", "reference"): generate_batch,
    ("attention", "fused"): "fastgrok.kernels.rope_attention:fused_attention_qkv",
    ("embedding", "fused"): "fastgrok.kernels.embedding:embedding",
    ("batchgen", "fused"): "fastgrok.kernels.batchgen:fused_batchgen",
}


def _batchgen_from_source(fused_batchgen: Callable) -> Callable:
    """The batchgen contract, (source, step), over a kernel entry point that takes tables and ints."""
    def generate_batch_fused(src: BatchSource, step: int | Tensor) -> Tensor:
        """Fused `fastgrok.data.generate_batch`: token ids (B, (n_var + 1)·S) int64 on src's device, bit-identical."""
        return fused_batchgen(src.task_vecs, src.inputs, src.p, src.batch_size, src.n_shots, src.sampling, src.key,
                              step)
    return generate_batch_fused


# Kernels take tensors and ints only; where an op's contract passes more (batchgen: a data.BatchSource),
# the lazy entry's callable is adapted to it when it is imported.
_ADAPTERS: dict[str, Callable[[Callable], Callable]] = {
    "fastgrok.kernels.batchgen:fused_batchgen": _batchgen_from_source,
}


def register(op: str, backend: str, impl: Callable | str) -> None:
    """Add or replace an implementation (a callable, or a lazy "module:attribute")."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; ops: {', '.join(OPS)}")
    if not isinstance(backend, str) or not backend:
        raise TypeError(f"register({op!r}, backend, impl): backend must be a name (a non-empty str), got {backend!r:.60}")
    if not (callable(impl) or (isinstance(impl, str) and impl.count(":") == 1 and all(impl.split(":")))):
        raise TypeError(f"register({op!r}, {backend!r}, impl): impl must be a callable or a 'module:attribute' "
                        f"string, got {type(impl).__name__} {impl!r:.60}")
    _REGISTRY[(op, backend)] = impl


def get_op(op: str, backend: str) -> Callable:
    """The implementation of `op` in `backend`, importing a kernel module on first use."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; ops: {', '.join(OPS)}")
    impl = _REGISTRY.get((op, backend))
    if impl is None:
        known = sorted(b for (o, b) in _REGISTRY if o == op)
        raise ValueError(f"op {op!r} has no backend {backend!r}; available: {', '.join(known)}")
    if isinstance(impl, str):
        name = impl
        module, _, attr = name.partition(":")
        try:
            impl = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"the {backend} {op} op is not available here ({e})") from None
        if name in _ADAPTERS:
            impl = _ADAPTERS[name](impl)
        if op == "attention" and not getattr(impl, "supports_q_slice", False):
            raise ValueError(f"the {backend} attention op {module}:{attr} does not take q_slice")
        _REGISTRY[(op, backend)] = impl
    return impl


# Drop-in kernels for other code (fastgrok.ops), by name → "module:attribute", imported on first use.
_KERNELS: dict[str, str] = {
    "rope_attention": "fastgrok.kernels.rope_attention:rope_attention",
    "attention_qkv": "fastgrok.kernels.rope_attention:fused_attention_qkv",
    # modelled DRAM bytes per launch, for the benchmarks' GB/s
    "attention_traffic": "fastgrok.kernels.rope_attention:traffic",
    "embedding": "fastgrok.kernels.embedding:embedding",
}


def kernel(name: str) -> Callable:
    """A Triton kernel's public entry point by name (see _KERNELS), importing it on first use."""
    if name not in _KERNELS:
        raise ValueError(f"unknown kernel {name!r}; kernels: {', '.join(_KERNELS)}")
    module, _, attr = _KERNELS[name].partition(":")
    return getattr(_kernel_module(module), attr)


def _kernel_module(module: str):
    """Import a kernel module. The drop-ins of fastgrok.ops call this inside code torch.compile traces,
    and Dynamo traces an import statement (or sys.modules) but not importlib.import_module."""
    loaded = sys.modules.get(module)
    if loaded is not None:
        return loaded
    if module == "fastgrok.kernels.rope_attention":
        from .kernels import rope_attention as loaded
    elif module == "fastgrok.kernels.embedding":
        from .kernels import embedding as loaded
    else:
        loaded = importlib.import_module(module)
    return loaded


# The module of each op's Triton kernels and launchers, for tools that inspect them (the offline sm_90
# compile check, fastgrok.bench.sm90, which also records the registry's fused ops' launches with
# `capture_launches`, imported above); the registry above is how the model and trainer get kernels.
_KERNEL_MODULES: dict[str, str] = {
    "attention": "fastgrok.kernels.rope_attention",
    "embedding": "fastgrok.kernels.embedding",
    "batchgen": "fastgrok.kernels.batchgen",
}


def kernel_module(op: str) -> ModuleType:
    """The module holding `op`'s Triton kernels and launchers (imports it, so triton)."""
    if op not in _KERNEL_MODULES:
        raise ValueError(f"unknown op {op!r}; ops with kernels: {', '.join(_KERNEL_MODULES)}")
    return _kernel_module(_KERNEL_MODULES[op])


def kernels_run_on(device: torch.device | str) -> bool:
    """Whether Triton kernels can run on `device` here: CUDA, or the CPU under Triton's interpreter."""
    device = torch.device(device)
    return device.type == "cuda" or (device.type == "cpu" and interpreter_active())


def fused_head_dims() -> tuple[int, ...]:
    """The head dims the fused attention kernel takes (imports the kernel module, so triton)."""
    return importlib.import_module("fastgrok.kernels.rope_attention").HEAD_DIMS


def check_runnable(cfg: ModelConfig, device: torch.device | str) -> None:
    """Raise ValueError, saying what to change, unless every op `cfg` asks for can run on `device` here."""
    fused = [op for op, b in resolve_names(cfg, device) if b == "fused"]
    if fused and not kernels_run_on(device):
        raise ValueError(f"the fused backend ({', '.join(fused)}) runs Triton kernels, which need CUDA; on a CPU "
                         "use backend='reference' (or TRITON_INTERPRET=1 to test kernels in Triton's interpreter)")
    if "attention" in fused and cfg.head_dim not in (dims := fused_head_dims()):
        raise ValueError(f"the fused attention kernel takes head_dim in {dims}, but n_embd/n_head = "
                         f"{cfg.head_dim}; change n_embd or n_head, or use attention='reference'")


@dataclass(frozen=True)
class Route:
    """The fused backend runs `use` for an op on a device type: its kernel lost there by measurement."""

    use: str                                          # the backend that runs instead of "fused"
    why: str                                          # the measurement, for env.json, logs and docs
    when: Callable[[ModelConfig], bool] | None = None  # only at these shapes (None: every shape)


# (op, device type) → Route. Only `backend="fused"` is routed; an explicit per-op "fused" gets the kernel.
# The interpreter (device type "cpu") is never routed: the CPU tests exercise every kernel.
ROUTES: dict[tuple[str, str], Route] = {
    ("embedding", "cuda"): Route(
        "reference",
        "H200, paper shape (B 1024, T 95, V 29, C 512, fp32 weights): kernel forward 0.173 ms and backward 0.315 ms vs "
        "compiled reference 0.108 / 0.184 ms (eager forward 0.064 ms); as an opaque custom op it also keeps "
        "inductor from fusing the gather into the first LayerNorm (docs/kernels.md)"),
}


def route(op: str, device: torch.device | str | None, cfg: ModelConfig | None = None) -> Route | None:
    """The route the fused backend takes for `op` on `device` (at cfg's shape), or None: the kernel runs."""
    if device is None:
        return None
    r = ROUTES.get((op, torch.device(device).type))
    if r is None or (r.when is not None and (cfg is None or not r.when(cfg))):
        return None
    return r


@dataclass(frozen=True)
class Ops:
    """The resolved implementation of every op, the backend each came from, and what was routed."""

    attention: Callable
    embedding: Callable
    batchgen: Callable
    names: tuple[tuple[str, str], ...]              # (op, the backend that runs)
    routed: tuple[tuple[str, str], ...] = ()        # (op, why): asked "fused" by backend, running names' backend

    def label(self) -> str:
        """'attention=fused embedding=reference(routed) batchgen=fused': what runs, for logs."""
        routed = dict(self.routed)
        return " ".join(f"{op}={b}" + ("(routed)" if op in routed else "") for op, b in self.names)


def _choose(cfg: ModelConfig | None, backend: str, per_op: dict[str, str | None],
            device: torch.device | str | None) -> tuple[dict[str, str], dict[str, str]]:
    """(op → backend that runs, op → why it was routed) for a backend and per-op overrides on a device."""
    chosen, routed = {}, {}
    for op in OPS:
        if per_op.get(op):
            chosen[op] = per_op[op]
        elif backend == "fused" and (r := route(op, device, cfg)) is not None:
            chosen[op], routed[op] = r.use, r.why
        else:
            chosen[op] = backend
    return chosen, routed


def resolve_names(cfg: ModelConfig, device: torch.device | str | None = None) -> tuple[tuple[str, str], ...]:
    """(op, backend) pairs a model config runs on `device` (routed; None: unrouted), importing nothing."""
    return tuple(_choose(cfg, cfg.backend, {op: getattr(cfg, op) for op in OPS}, device)[0].items())


def resolve_ops(cfg: ModelConfig | None = None, backend: str = "reference", *,
                device: torch.device | str | None = None, **per_op: str | None) -> Ops:
    """Ops for a model config (backend plus per-op overrides), or for an explicit backend/overrides.

    With `device`, the fused backend's ops are routed for it (ROUTES); without, every fused op is its kernel."""
    if cfg is not None:
        backend = cfg.backend
        per_op = {op: getattr(cfg, op) for op in OPS} | {k: v for k, v in per_op.items() if v is not None}
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")
    for op in per_op:
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}; ops: {', '.join(OPS)}")
    chosen, routed = _choose(cfg, backend, per_op, device)
    return Ops(**{op: get_op(op, b) for op, b in chosen.items()}, names=tuple(chosen.items()),
               routed=tuple(routed.items()))
