"""Triton kernels for fastgrok: RoPE-fused causal attention and a deterministic embedding.

Importing this package does not import triton. The submodules load on first use:

    from fastgrok.kernels.rope_attention import rope_attention, fused_attention_qkv
    from fastgrok.kernels.embedding import embedding
    from fastgrok.kernels import fused_attention_qkv          # lazy, same function

`fastgrok.kernels.rope_attention` and `fastgrok.kernels.embedding` name the submodules (Python
binds a package attribute to each submodule it imports), so the functions of the same name are
imported from the submodules, never from the package.

Kernels run on CUDA, or on CPU under Triton's interpreter (TRITON_INTERPRET=1 set before triton
is imported). Each launch is also wrapped in a `torch.library.custom_op` ("fastgrok::…") so
`torch.compile(fullgraph=True)` sees one opaque op instead of a graph break.

`capture_launches()` records the launches the launchers would make on a GPU instead of running them;
`python -m fastgrok.bench.sm90` uses it to compile every kernel at its GPU tiles for sm_90 without a
GPU and lists registers, spills, shared memory and the modelled DRAM traffic (`traffic` beside the
attention kernel).
"""
from importlib import import_module
from typing import Any

from ._common import Launch, capture_launches, check_device, interpreter_active

_LAZY = {  # attribute → submodule defining it
    "fused_attention_qkv": "rope_attention",
    "rope_attn_forward": "rope_attention",
    "rope_attn_backward": "rope_attention",
    "embedding_forward": "embedding",
    "embedding_backward": "embedding",
    "Embedding": "embedding",
}

__all__ = ["Launch", "capture_launches", "check_device", "interpreter_active", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
