"""The model's side of the study: a forward pass that shows its work, a KV cache for shared prefixes, and the
measurements built on them (k-shot grid, k-shot curve, attention maps, head features, label noise).

`trace` runs a GPT block by block with the attention written out (the same math as the reference backend:
RoPE on q and k at absolute positions, causal softmax with scale 1/sqrt(D)), so it can return attention
probabilities, each head's output (the head's slice of the output projection applied to its values, the
paper's "OV output") and the residual stream after each block. It can also start at position P with the
keys and values of a P-token prefix (`Prefix`), computed once: every query of a k-shot grid shares its
k-example prefix, so the grid costs p² two-token passes per k instead of p² full sequences.

Dims: B sequences, T query tokens, P prefix tokens, H heads, D head dim, C width, V vocab, S shots, L layers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..backends import split_qkv
from ..config import Config
from ..data import generate_batch, split_source
from ..metrics import z_logits_targets
from ..rope import apply_rope
from ..tasks import Tasks
from .algorithms import check_examples, wilson_interval


@dataclass
class Prefix:
    """Keys (RoPE applied) and values of every layer for the first P tokens of one sequence: (1, H, P, D) each."""

    keys: list[Tensor]
    values: list[Tensor]

    @property
    def length(self) -> int:
        return self.keys[0].shape[2]

    def upto(self, P: int) -> "Prefix":
        """The prefix of its first P tokens (causal: they never saw the later ones)."""
        return Prefix([k[:, :, :P] for k in self.keys], [v[:, :, :P] for v in self.values])


@dataclass
class Trace:
    """What `trace` saw at the query tokens."""

    logits: Tensor                                        # (B, T, V)
    prefix: Prefix                                        # B = 1 only: keys/values of prefix + tokens (1, H, P+T, D)
    attn: list[Tensor] = field(default_factory=list)      # per layer (B, H, T, P + T) probabilities
    heads: list[Tensor] = field(default_factory=list)     # per layer (B, H, T, C): each head's output
    blocks: list[Tensor] = field(default_factory=list)    # per layer (B, T, C): the residual after the block


def _shared_matmul(a: Tensor, b: Tensor) -> Tensor:
    """a (B, H, T, X) @ b (1, H, X, Y) → (B, H, T, Y), without copying b B times."""
    B, H, T, X = a.shape
    out = torch.matmul(a.transpose(0, 1).reshape(H, B * T, X), b[0])  # (H, B·T, Y)
    return out.view(H, B, T, -1).transpose(0, 1)


def _attend(q: Tensor, k: Tensor, v: Tensor, pk: Tensor | None, pv: Tensor | None) -> tuple[Tensor, Tensor]:
    """Causal attention of queries q (B, H, T, D) over a shared prefix (pk, pv: (1, H, P, D)) and their own
    k, v (B, H, T, D): (probabilities (B, H, T, P + T), output (B, H, T, D))."""
    T, D = q.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(D)
    work = torch.promote_types(q.dtype, torch.float32)  # softmax in fp32 at least
    own = torch.matmul(q, k.transpose(-1, -2)) * scale  # (B, H, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    own = own.masked_fill(~causal, float("-inf"))
    if pk is None or pk.shape[2] == 0:
        probs = torch.softmax(own.to(work), dim=-1).to(q.dtype)
        return probs, torch.matmul(probs, v)
    P = pk.shape[2]
    scores = torch.cat([_shared_matmul(q, pk.transpose(-1, -2)) * scale, own], dim=-1)  # (B, H, T, P + T)
    probs = torch.softmax(scores.to(work), dim=-1).to(q.dtype)
    out = _shared_matmul(probs[..., :P].contiguous(), pv) + torch.matmul(probs[..., P:], v)  # (B, H, T, D)
    return probs, out


@torch.no_grad()
def trace(model: torch.nn.Module, idx: Tensor, prefix: Prefix | None = None, record: bool = False) -> Trace:
    """Run `model` on tokens idx (B, T) placed after `prefix` (one sequence's first P tokens, shared by all B
    rows), with the attention written out; record=True keeps attention, head outputs and block outputs."""
    if idx.dim() != 2:
        raise ValueError(f"idx must be (B, T) token ids, got shape {tuple(idx.shape)}")
    cfg = model.cfg
    H, theta = cfg.n_head, cfg.rope_theta
    start = 0 if prefix is None else prefix.length
    x = model.ops.embedding(idx, model.transformer.wte.weight)  # (B, T, C)
    B, T, C = x.shape
    out = Trace(logits=x, prefix=Prefix([], []))
    for i, block in enumerate(model.transformer.h):
        attn = block.attn
        q, k, v = split_qkv(attn.to_qkv(block.ln_1(x)), H)  # (B, H, T, D) each
        q, k = apply_rope(q, theta, start), apply_rope(k, theta, start)
        pk = pv = None
        if prefix is not None:
            pk, pv = prefix.keys[i], prefix.values[i]
        probs, y = _attend(q, k, v, pk, pv)  # (B, H, T, P+T), (B, H, T, D)
        D = y.shape[-1]
        x = x + attn.o(y.transpose(1, 2).reshape(B, T, C))
        x = x + block.mlp(block.ln_2(x))
        if B == 1:  # one sequence's own keys and values extend the prefix (what prefix_of returns)
            out.prefix.keys.append(k if pk is None else torch.cat([pk, k], dim=2))
            out.prefix.values.append(v if pv is None else torch.cat([pv, v], dim=2))
        if record:
            w = attn.o.weight.view(C, H, D)  # (C, H, D): head h's columns of the output projection
            out.attn.append(probs)
            out.heads.append(torch.einsum("bhtd,chd->bhtc", y, w))  # (B, H, T, C)
            out.blocks.append(x)
    out.logits = model.lm_head(model.transformer.ln_f(x))  # (B, T, V)
    return out


@torch.no_grad()
def prefix_of(model: torch.nn.Module, tokens: Tensor) -> Prefix:
    """The keys and values of every layer for one sequence's tokens (P,) or (1, P)."""
    tokens = tokens.reshape(1, -1)
    return trace(model, tokens).prefix


def _device(model: torch.nn.Module) -> torch.device:
    return model.transformer.wte.weight.device


def check_task(task: tuple[int, int] | list[int] | np.ndarray, p: int) -> tuple[int, int]:
    """(a, b) as ints in Z_p, or ValueError."""
    t = np.asarray(task).reshape(-1)
    if t.shape != (2,) or t.dtype.kind not in "iu":
        raise ValueError(f"a task is two integers (a, b), got {task!r}")
    a, b = int(t[0]), int(t[1])
    if not (0 <= a < p and 0 <= b < p):
        raise ValueError(f"task ({a}, {b}) is outside Z_{p}²: a and b must lie in 0 … {p - 1}")
    return a, b


def all_queries(p: int) -> np.ndarray:
    """Every (x, y) ∈ Z_p², x major: (p², 2) int64, row x·p + y."""
    g = np.arange(p)
    return np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)


VOCABS = ("numbers", "full")  # argmax over the p number tokens (the paper's logits[:, :, :p]) or every token


@torch.no_grad()
def grid_logits(model: torch.nn.Module, examples: np.ndarray, p: int,
                vocab: str = "numbers") -> tuple[np.ndarray, np.ndarray]:
    """The model's answer at every query (x, y) ∈ Z_p² after the first k = 1 … K examples: (preds (K, p, p)
    int64, logits (K, p, p, V') float32), V' = p for vocab="numbers" (the paper's grid scores
    logits[:, :, :p]) or the whole vocabulary for "full" (the trainer's accuracy); preds is their argmax.

    The K examples' keys and values are computed once; each k then runs the p² queries as two-token rows."""
    if vocab not in VOCABS:
        raise ValueError(f"vocab={vocab!r} is not one of {', '.join(VOCABS)}")
    ex = check_examples(examples, p)
    K = len(ex)
    if K < 1:
        raise ValueError("a k-shot grid needs at least one example")
    dev = _device(model)
    full = prefix_of(model, torch.as_tensor(ex, device=dev).reshape(-1))  # 3K tokens
    queries = torch.as_tensor(all_queries(p), device=dev)  # (p², 2)
    preds, logits = [], []
    for k in range(1, K + 1):
        lg = trace(model, queries, full.upto(3 * k)).logits[:, -1]  # (p², V) at the y token
        lg = lg[:, :p] if vocab == "numbers" else lg
        preds.append(lg.argmax(-1).view(p, p).cpu().numpy())
        logits.append(lg.float().view(p, p, -1).cpu().numpy())
    return np.stack(preds).astype(np.int64), np.stack(logits)


@torch.no_grad()
def logit_lens(model: torch.nn.Module, examples: np.ndarray, p: int, vocab: str = "numbers") -> np.ndarray:
    """(K, L, p, p) int64: the answer read off the residual stream after each block (the final layer norm and
    the head applied to it, a per-layer logit lens) at every query's y token after the first k examples.
    Its last layer is grid_logits' answer."""
    if vocab not in VOCABS:
        raise ValueError(f"vocab={vocab!r} is not one of {', '.join(VOCABS)}")
    ex = check_examples(examples, p)
    dev = _device(model)
    full = prefix_of(model, torch.as_tensor(ex, device=dev).reshape(-1))
    queries = torch.as_tensor(all_queries(p), device=dev)  # (p², 2)
    out = []
    for k in range(1, len(ex) + 1):
        tr = trace(model, queries, full.upto(3 * k), record=True)
        res = torch.stack([b[:, -1] for b in tr.blocks])  # (L, p², C) at the y token
        lg = model.lm_head(model.transformer.ln_f(res))  # (L, p², V)
        lg = lg[..., :p] if vocab == "numbers" else lg
        out.append(lg.argmax(-1).view(-1, p, p).cpu().numpy())
    return np.stack(out).astype(np.int64)


@torch.no_grad()
def kshot_grid(model: torch.nn.Module, task: tuple[int, int], examples: np.ndarray, p: int,
               vocab: str = "numbers") -> np.ndarray:
    """(K, p, p) bool: correct[k−1, x, y] is whether the model, given the first k of the K examples, answers
    the query (x, y) with (a·x + b·y) mod p (argmax over the p number tokens as the paper's grid, or over
    the whole vocabulary with vocab="full", as the trainer's accuracy)."""
    a, b = check_task(task, p)
    preds, _ = grid_logits(model, examples, p, vocab)
    g = np.arange(p)
    return preds == (a * g[:, None] + b * g[None, :]) % p


@torch.no_grad()
def attention_maps(model: torch.nn.Module, idx: Tensor) -> Tensor:
    """Attention probabilities (L, H, T, T) of one sequence idx (T,) or (1, T), on the CPU."""
    idx = torch.as_tensor(idx).reshape(1, -1).to(_device(model))
    return torch.stack([a[0] for a in trace(model, idx, record=True).attn]).float().cpu()


@torch.no_grad()
def head_features(model: torch.nn.Module, context: np.ndarray, p: int,
                  task: tuple[int, int] | None = None) -> dict[str, Tensor]:
    """Features at the x and y tokens of one example (x, y) varied over all of Z_p², placed after the fixed
    k-example `context` (as a k-shot query is), and at its z token (the right answer under `task`) when a task
    is given: per layer and head, the head's output; per layer, the residual after the block. Rows are the p²
    queries (row x·p + y). Returns float32 CPU tensors "heads" (L, H, p², T, C) and "blocks" (L, p², T, C),
    T = 2 tokens (x, y), or 3 (x, y, z) with a task."""
    ex = check_examples(context, p)
    dev = _device(model)
    prefix = prefix_of(model, torch.as_tensor(ex, device=dev).reshape(-1)) if len(ex) else None
    q = all_queries(p)
    if task is not None:
        a, b = check_task(task, p)
        q = np.c_[q, (a * q[:, 0] + b * q[:, 1]) % p]  # (p², 3): the example with its z
    tr = trace(model, torch.as_tensor(q, device=dev), prefix, record=True)
    heads = torch.stack(tr.heads).permute(0, 2, 1, 3, 4)  # (L, p², H, T, C) → (L, H, p², T, C)
    return {"heads": heads.float().cpu().contiguous(), "blocks": torch.stack(tr.blocks).float().cpu()}


@dataclass
class Curve:
    """Accuracy against shot index on one set, with 95 % Wilson intervals; per-task curves beside it."""

    split: str
    acc: np.ndarray         # (S,)
    lo: np.ndarray          # (S,)
    hi: np.ndarray          # (S,)
    n_seqs: int
    task_vecs: np.ndarray   # (n_tasks, n_var)
    task_acc: np.ndarray    # (n_tasks, S), NaN for a task never drawn
    task_n: np.ndarray      # (n_tasks,) sequences per task


@torch.no_grad()
def kshot_curve(model: torch.nn.Module, cfg: Config, tasks: Tasks, split: str, *, half_width: float = 0.02,
                batch_size: int = 256, max_seqs: int = 20_000) -> Curve:
    """Accuracy at each shot on one of the four sets, from the evaluation stream of `split` (keyed by
    cfg.data_seed: the same sequences a run's evaluation draws, and more), batch after batch until every
    shot's 95 % interval is at most `half_width` either side (or max_seqs sequences)."""
    if not 0 < half_width < 0.5:
        raise ValueError(f"half_width={half_width} must lie in (0, 0.5)")
    src = split_source(cfg, tasks, split, _device(model), batch_size=batch_size)
    S, n_tasks = cfg.task.n_shots, src.n_tasks
    correct = torch.zeros(n_tasks, S, dtype=torch.float64)
    count = torch.zeros(n_tasks, dtype=torch.float64)
    step = 0
    while True:
        batch = generate_batch(src, step)
        logits, targets = z_logits_targets(model, batch, cfg.task.n_var)  # (B, S, V), (B, S)
        rows = src.row_tasks(step).cpu()
        correct.index_add_(0, rows, (logits.argmax(-1) == targets).double().cpu())
        count.index_add_(0, rows, torch.ones(len(rows), dtype=torch.float64))
        step += 1
        n = int(count.sum())
        lo, hi = wilson_interval(correct.sum(0).numpy(), np.full(S, n))
        if (hi - lo).max() / 2 <= half_width or n >= max_seqs:
            break
    with np.errstate(invalid="ignore", divide="ignore"):
        task_acc = (correct / count[:, None]).numpy()
    return Curve(split=split, acc=correct.sum(0).numpy() / n, lo=lo, hi=hi, n_seqs=n,
                 task_vecs=src.task_vecs.cpu().numpy(), task_acc=task_acc, task_n=count.numpy().astype(np.int64))


@torch.no_grad()
def label_noise(model: torch.nn.Module, cfg: Config, tasks: Tasks, split: str, *, n_seqs: int = 4096,
                batch_size: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """Accuracy at shot k (k = 1 … S−1 examples before it) when j of those k examples carry a wrong z (a
    uniform non-zero shift), j < k. Each sequence corrupts every shot with its own probability q ~ U(0, 1),
    so the number corrupted among the first k is uniform on 0 … k and, given it, which ones is uniform: one
    pass scores every (k, j) at once. Returns "correct" and "count" (S, S) indexed [k, j] (zero off j < k), and
    "correct_all", "count_all" indexed [k, j] with j the wrong z among all k + 1 points, the query's own
    included (the paper's label_noise.ipynb: j of the sequence's points, randomly placed; j ≤ k)."""
    if n_seqs < 1:
        raise ValueError(f"n_seqs={n_seqs} must be ≥ 1")
    n_var, S, p = cfg.task.n_var, cfg.task.n_shots, cfg.task.p
    src = split_source(cfg, tasks, split, _device(model), batch_size=batch_size)
    gen = torch.Generator().manual_seed(seed)
    correct = np.zeros((S, S), dtype=np.int64)
    count = np.zeros((S, S), dtype=np.int64)
    correct_all = np.zeros((S, S), dtype=np.int64)
    count_all = np.zeros((S, S), dtype=np.int64)
    done, step = 0, 0
    kk = np.arange(S)[None, :]
    while done < n_seqs:
        batch = generate_batch(src, step).cpu()  # (B, (n_var+1)·S)
        B = batch.shape[0]
        q = torch.rand(B, 1, generator=gen)
        bad = torch.rand(B, S, generator=gen) < q  # (B, S) which shots carry a wrong z
        shift = torch.randint(1, p, (B, S), generator=gen)
        clean = batch.view(B, S, n_var + 1)[..., -1].clone()  # (B, S) the true z
        noisy = batch.view(B, S, n_var + 1).clone()
        noisy[..., -1] = torch.where(bad, (clean + shift) % p, clean)
        noisy = noisy.view(B, -1).to(src.inputs.device)
        logits, _ = z_logits_targets(model, noisy, n_var)  # (B, S, V): predictions of each shot's z
        right = (logits.argmax(-1).cpu() == clean).numpy()  # scored against the true z
        j = np.concatenate([np.zeros((B, 1), np.int64), np.cumsum(bad.numpy(), 1)[:, :-1]], 1)  # (B, S) corrupted before
        keep = j < kk  # j < k: at least one clean example
        np.add.at(count, (np.broadcast_to(kk, (B, S))[keep], j[keep]), 1)
        np.add.at(correct, (np.broadcast_to(kk, (B, S))[keep], j[keep]), right[keep])
        j_all = np.cumsum(bad.numpy(), 1)  # (B, S): wrong z among shots 0 … k, the query's own included
        keep = j_all <= kk  # the paper's j < number of points: at least one point clean
        np.add.at(count_all, (np.broadcast_to(kk, (B, S))[keep], j_all[keep]), 1)
        np.add.at(correct_all, (np.broadcast_to(kk, (B, S))[keep], j_all[keep]), right[keep])
        done += B
        step += 1
    return {"correct": correct, "count": count, "correct_all": correct_all, "count_all": count_all}
