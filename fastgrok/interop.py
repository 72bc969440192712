"""A TransformerLens model of any fastgrok run: `to_hooked_transformer(run_or_model)` → HookedTransformer.

The GPT of SPEC "Model" maps onto TransformerLens' HookedTransformer exactly (same logits up to fp32
rounding; tests/test_interop.py): RoPE on q and k over the whole head dim with adjacent pairs
(`rotary_adjacent_pairs=True`, GPT-J style: dims 2i and 2i+1 rotate together), base `rope_theta`;
pre-LayerNorm with weight and bias (`normalization_type="LN"`, eps 1e-5 as torch's); no Linear biases (TL's
b_Q, b_K, b_V, b_O, b_in, b_out, b_U set to zero); the tied head as W_U = W_Eᵀ (a copy: TL keeps two
parameters); ReLU → "relu", tanh-GELU → "gelu_pytorch_tanh", SwiGLU → a gated MLP with "silu"
(W_gate = w1ᵀ, W_in = w3ᵀ, W_out = w2ᵀ). The fused q,k,v projection splits per head: to_qkv's rows are
[q | k | v], each H blocks of D rows (backends.split_qkv), so W_Q[h] = Wq[h·D:(h+1)·D]ᵀ; the output
projection's columns are per head too, W_O[h] = o.weight[:, h·D:(h+1)·D]ᵀ.

TransformerLens 4 removed HookedTransformer (its TransformerBridge wraps Hugging Face models); this module
needs TransformerLens 3 (`pip install "fastgrok[lens]"`) and says so in one line otherwise.
Dims: H heads, D head dim, C width, V vocab, F MLP hidden.
"""
from __future__ import annotations

import importlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import runfolder
from .checkpoint import atomic_write_text
from .config import ModelConfig

LENS = '"fastgrok[lens]" (transformer_lens>=3.9,<4)'
TL_CONFIG, TL_WEIGHTS = "tl_config.json", "tl_model.safetensors"
ACT_FN = {"relu": "relu", "gelu": "gelu_pytorch_tanh", "swiglu": "silu"}
DEFAULT_N_CTX = 1024  # positions a HookedTransformer accepts when the task (hence the sequence length) is unknown


def _unshadow_kernels() -> None:
    """transformers (≥ 5, which TransformerLens imports) imports the PyPI package `kernels` when it is installed;
    run from a fastgrok checkout's root (`python -m pytest`, PYTHONPATH=.) that name finds the checkout's own
    top-level kernels/ folder (fastgrok.kernels) first. Bind the name to the installed package instead."""
    import importlib.metadata as md
    import importlib.util
    if "kernels" in sys.modules:
        return
    ours = (Path(__file__).resolve().parent.parent / "kernels").resolve()
    spec = importlib.util.find_spec("kernels")
    if spec is None or spec.origin is None or Path(spec.origin).resolve().parent != ours:
        return
    try:
        init = Path(str(md.distribution("kernels").locate_file("kernels/__init__.py")))
    except md.PackageNotFoundError:
        return
    if not init.is_file():
        return
    spec = importlib.util.spec_from_file_location("kernels", init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernels"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["kernels"]
        raise


def _lens() -> Any:
    """transformer_lens with HookedTransformer, or one line saying which version to install."""
    _unshadow_kernels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            tl = importlib.import_module("transformer_lens")
    except ImportError as e:
        if getattr(e, "name", None) in ("transformer_lens", None) and "transformer_lens" in str(e):
            raise ValueError(f"transformer_lens is not installed: pip install {LENS}") from None
        raise ValueError(f"transformer_lens cannot be imported ({type(e).__name__}: {e}); "
                         f"pip install {LENS}") from None
    try:
        tl.HookedTransformer, tl.HookedTransformerConfig
    except (ImportError, AttributeError):
        version = getattr(importlib.import_module("transformer_lens"), "__version__", None) or _dist_version()
        raise ValueError(f"transformer_lens {version} has no HookedTransformer (removed in 4.0): "
                         f"pip install {LENS}") from None
    return tl


def _dist_version() -> str:
    import importlib.metadata as md
    try:
        return md.version("transformer_lens")
    except md.PackageNotFoundError:
        return "?"


def check_available() -> None:
    """Raise one line (ValueError) unless a TransformerLens with HookedTransformer can be imported."""
    _lens()


def unsupported(cfg: ModelConfig) -> str | None:
    """What of this model TransformerLens cannot express, or None (every fastgrok ModelConfig maps today)."""
    if cfg.mlp not in ACT_FN:
        return f"mlp={cfg.mlp!r} (TransformerLens has relu, tanh-GELU and a gated SiLU MLP for {', '.join(ACT_FN)})"
    if cfg.head_dim % 2:
        return f"an odd head_dim {cfg.head_dim} (rotary needs pairs)"
    return None


def hooked_config(cfg: ModelConfig, n_ctx: int = DEFAULT_N_CTX) -> dict[str, Any]:
    """The HookedTransformerConfig keyword arguments of a fastgrok model (JSON-able)."""
    why = unsupported(cfg)
    if why is not None:
        raise ValueError(f"TransformerLens cannot express this model: {why}")
    from .model import swiglu_hidden
    d_mlp = swiglu_hidden(cfg.n_embd, cfg.widen) if cfg.mlp == "swiglu" else cfg.widen * cfg.n_embd
    return dict(n_layers=cfg.depth, d_model=cfg.n_embd, n_heads=cfg.n_head, d_head=cfg.head_dim, d_mlp=d_mlp,
                d_vocab=cfg.vocab_size, d_vocab_out=cfg.vocab_size, n_ctx=n_ctx, act_fn=ACT_FN[cfg.mlp],
                gated_mlp=cfg.mlp == "swiglu", normalization_type="LN", eps=1e-5,
                positional_embedding_type="rotary", rotary_dim=cfg.head_dim, rotary_adjacent_pairs=True,
                rotary_base=cfg.rope_theta, default_prepend_bos=False, original_architecture="fastgrok",
                init_weights=False)


def hooked_state_dict(model: torch.nn.Module) -> dict[str, Tensor]:
    """The GPT's weights under TransformerLens' names and shapes (fp32 CPU copies; zero biases)."""
    cfg: ModelConfig = model.cfg
    H, D, C = cfg.n_head, cfg.head_dim, cfg.n_embd
    f32 = dict(dtype=torch.float32, device="cpu")
    t = model.transformer
    wte = t.wte.weight.detach().to(**f32)  # (V, C)
    sd: dict[str, Tensor] = {"embed.W_E": wte.clone(), "unembed.W_U": wte.T.contiguous(),
                             "unembed.b_U": torch.zeros(cfg.vocab_size, **f32),
                             "ln_final.w": t.ln_f.weight.detach().to(**f32), "ln_final.b": t.ln_f.bias.detach().to(**f32)}
    for i, block in enumerate(t.h):
        b = f"blocks.{i}."
        for ln, name in ((block.ln_1, "ln1"), (block.ln_2, "ln2")):
            sd[b + f"{name}.w"] = ln.weight.detach().to(**f32)
            sd[b + f"{name}.b"] = ln.bias.detach().to(**f32)
        wq, wk, wv = block.attn.to_qkv.weight.detach().to(**f32).view(3, H, D, C).unbind(0)  # (H, D, C) each
        for name, w in (("Q", wq), ("K", wk), ("V", wv)):
            sd[b + f"attn.W_{name}"] = w.transpose(1, 2).contiguous()  # (H, C, D)
            sd[b + f"attn.b_{name}"] = torch.zeros(H, D, **f32)
        sd[b + "attn.W_O"] = block.attn.o.weight.detach().to(**f32).view(C, H, D).permute(1, 2, 0).contiguous()  # (H, D, C)
        sd[b + "attn.b_O"] = torch.zeros(C, **f32)
        mlp = block.mlp
        if cfg.mlp == "swiglu":
            w_in, w_out, w_gate = mlp.w3.weight, mlp.w2.weight, mlp.w1.weight
            sd[b + "mlp.W_gate"] = w_gate.detach().to(**f32).T.contiguous()  # (C, F)
        else:
            w_in, w_out = mlp.c_fc.weight, mlp.c_proj.weight
        sd[b + "mlp.W_in"] = w_in.detach().to(**f32).T.contiguous()  # (C, F)
        sd[b + "mlp.W_out"] = w_out.detach().to(**f32).T.contiguous()  # (F, C)
        sd[b + "mlp.b_in"] = torch.zeros(w_in.shape[0], **f32)
        sd[b + "mlp.b_out"] = torch.zeros(C, **f32)
    return sd


def build_hooked(config: dict[str, Any], state: dict[str, Tensor], device: str | torch.device = "cpu") -> Any:
    """A HookedTransformer from its config kwargs and weights; every parameter must be given."""
    tl = _lens()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        hooked = tl.HookedTransformer(tl.HookedTransformerConfig(**config))
    params = dict(hooked.named_parameters())
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        raise ValueError(f"TransformerLens weights do not fit its config: missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]}")
    with torch.no_grad():
        for name, p in params.items():
            if p.shape != state[name].shape:
                raise ValueError(f"TransformerLens weight {name}: shape {tuple(state[name].shape)}, "
                                 f"the config wants {tuple(p.shape)}")
            p.copy_(state[name])
    return hooked.to(device, print_details=False).eval()


def _model_of(source: Any, checkpoint: str | None, fields: dict[str, Any] | None) -> tuple[torch.nn.Module, int]:
    """A fastgrok GPT and the sequence length it was trained on (DEFAULT_N_CTX when unknown)."""
    from .model import GPT
    if isinstance(source, GPT):
        return source, DEFAULT_N_CTX
    if isinstance(source, torch.nn.Module):
        raise TypeError(f"to_hooked_transformer takes a fastgrok GPT, a run folder or a checkpoint, "
                        f"got a {type(source).__name__}")
    if not isinstance(source, (str, Path)):
        raise TypeError(f"to_hooked_transformer takes a fastgrok GPT, a run folder or a checkpoint, got {source!r:.60}")
    from .export import WEIGHTS, exported_config, load_exported, open_model
    path = Path(source)
    if path.is_dir() and (path / WEIGHTS).is_file():  # an export folder
        return load_exported(path), exported_config(path).task.seq_len
    loaded = open_model(path, checkpoint, fields)
    return loaded.model, loaded.cfg.task.seq_len


def to_hooked_transformer(run_or_model: Any, *, checkpoint: str | None = None, fields: dict[str, Any] | None = None,
                          n_ctx: int | None = None, device: str | torch.device = "cpu") -> Any:
    """A transformer_lens.HookedTransformer with the same logits as the fastgrok GPT given: a model, a run folder
    (last.pt, or `checkpoint="best"`), a paper-format checkpoint (task fields from its name or `fields`) or an
    export folder. `n_ctx`: the longest input it takes (default: the run's 3·n_shots, else 1024)."""
    _lens()  # the one-line error before any model is loaded
    model, seq_len = _model_of(run_or_model, checkpoint, fields)
    n_ctx = max(seq_len, 1) if n_ctx is None else n_ctx
    if not isinstance(n_ctx, int) or isinstance(n_ctx, bool) or n_ctx < 1:
        raise ValueError(f"n_ctx={n_ctx!r} must be an int ≥ 1")
    return build_hooked(hooked_config(model.cfg, n_ctx), hooked_state_dict(model), device)


def write_transformer_lens(loaded: Any, out: Path) -> list[Path]:
    """`fastgrok export --format transformer-lens`: tl_config.json (HookedTransformerConfig's kwargs) and
    tl_model.safetensors (its parameters), with config.json, tasks.json and export.json as for safetensors."""
    from .export import EXPORT, TASKS, _provenance, need, task_lists
    st = need("safetensors.torch", "lens")
    config = hooked_config(loaded.model.cfg, loaded.cfg.task.seq_len)
    state = hooked_state_dict(loaded.model)
    build_hooked(config, state)  # the config and weights load: check before writing
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{TL_WEIGHTS}.tmp"
    st.save_file(state, str(tmp), metadata={"format": "transformer_lens.HookedTransformer"})
    tmp.replace(out / TL_WEIGHTS)
    atomic_write_text(json.dumps(config, indent=2), out / TL_CONFIG)
    atomic_write_text(json.dumps(loaded.cfg.to_dict(), indent=2), out / runfolder.CONFIG)
    atomic_write_text(json.dumps(task_lists(loaded.cfg)), out / TASKS)
    atomic_write_text(json.dumps(_provenance(loaded, "transformer-lens"), indent=2), out / EXPORT)
    return [out / TL_WEIGHTS, out / TL_CONFIG, out / runfolder.CONFIG, out / TASKS, out / EXPORT]


def export_transformer_lens(source: str | Path, out: str | Path | None = None, checkpoint: str | None = None,
                            fields: dict[str, Any] | None = None) -> list[Path]:
    """`fastgrok export RUN --format transformer-lens` (default folder RUN/tl/); returns the files written."""
    from .export import need, output_folder
    _lens()  # before the model is loaded
    need("safetensors.torch", "lens")
    return write_transformer_lens(*output_folder(source, "transformer-lens", out, checkpoint, fields))


def load_hooked_transformer(folder: str | Path, device: str | torch.device = "cpu") -> Any:
    """The HookedTransformer of a `--format transformer-lens` export folder."""
    from .export import need
    st = need("safetensors.torch", "lens")
    folder = Path(folder)
    try:
        config = json.loads((folder / TL_CONFIG).read_text())
    except FileNotFoundError:
        raise ValueError(f"{str(folder)!r} is not a transformer-lens export (no {TL_CONFIG})") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"{folder / TL_CONFIG} is unreadable: {e}") from None
    return build_hooked(config, st.load_file(str(folder / TL_WEIGHTS)), device)
