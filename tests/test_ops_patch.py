"""fastgrok.ops.patch on a model with the paper's module structure (written here, no dependency on its code).

The classes below mirror the paper's RoPETransformer: transformer.{wte, dropout, h, ln_f}, blocks with ln_1,
attn (fused to_qkv, output o, n_head, a rotary embedding whose freqs are a frozen parameter, SDPA; forward
returns y and the rotated q, k, v), ln_2, mlp; a head tied to the embedding. The rotary embedding is
written here in the style of rotary_embedding_torch (interleaved pairs); `interleaved=False` gives the
other common convention (halves), which patch must refuse.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fastgrok.ops import Embedding, PatchedAttention, patch


class Rotary(nn.Module):
    def __init__(self, dim: int, theta: float = 10000.0, interleaved: bool = True) -> None:
        super().__init__()
        self.freqs = nn.Parameter(1.0 / theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim),
                                  requires_grad=False)
        self.interleaved = interleaved

    def rotate_queries_or_keys(self, t: torch.Tensor) -> torch.Tensor:
        """t (B, H, T, D): the first 2·len(freqs) dims turn by angle position · freq."""
        T, n = t.shape[-2], 2 * self.freqs.numel()
        ang = torch.arange(T, dtype=torch.float32, device=t.device)[:, None] * self.freqs.float()  # (T, n/2)
        tf, rest = t[..., :n].float(), t[..., n:]
        if self.interleaved:
            ang = ang.repeat_interleave(2, dim=-1)  # (T, n): pairs (2i, 2i+1)
            a, b = tf[..., 0::2], tf[..., 1::2]
            turned = torch.stack((-b, a), dim=-1).flatten(-2)
        else:
            ang = torch.cat((ang, ang), dim=-1)  # (T, n): pairs (i, i + n/2)
            a, b = tf.chunk(2, dim=-1)
            turned = torch.cat((-b, a), dim=-1)
        out = tf * ang.cos() + turned * ang.sin()
        return torch.cat((out.to(t.dtype), rest), dim=-1)


class PaperAttention(nn.Module):
    def __init__(self, C: int, H: int, dp: float = 0.0, causal: bool = True, rot_dim: int | None = None,
                 interleaved: bool = True, theta: float = 10000.0, returns_qkv: bool = True) -> None:
        super().__init__()
        self.n_embd = C
        self.to_qkv = nn.Linear(C, 3 * C, bias=False)
        self.o = nn.Linear(C, C, bias=False)
        self.dp = dp
        self.resid_dropout = nn.Dropout(dp)
        self.n_head = H
        self.is_causal = causal
        self.rotary_emb = Rotary(rot_dim or C // H, theta, interleaved)
        self.returns_qkv = returns_qkv

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.to_qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        q = self.rotary_emb.rotate_queries_or_keys(q)
        k = self.rotary_emb.rotate_queries_or_keys(k)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dp if self.training else 0.0,
                                           is_causal=self.is_causal)
        y = self.resid_dropout(self.o(y.transpose(1, 2).contiguous().view(B, T, C)))
        return (y, (q, k, v)) if self.returns_qkv else y


class PaperBlock(nn.Module):
    def __init__(self, C: int, H: int, **attn) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(C)
        self.attn = PaperAttention(C, H, **attn)
        self.ln_2 = nn.LayerNorm(C)
        self.mlp = nn.Sequential()
        self.mlp.c_fc = nn.Linear(C, 4 * C, bias=False)
        self.mlp.act = nn.ReLU()
        self.mlp.c_proj = nn.Linear(4 * C, C, bias=False)

    def forward(self, x):
        out = self.attn(self.ln_1(x))
        y, qkv = out if isinstance(out, tuple) else (out, None)
        x = x + y
        return x + self.mlp(self.ln_2(x)), qkv


class PaperModel(nn.Module):
    def __init__(self, V: int = 23, C: int = 64, H: int = 2, depth: int = 2, **attn) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(V, C), dropout=nn.Dropout(0.0),
            h=nn.ModuleList(PaperBlock(C, H, **attn) for _ in range(depth)), ln_f=nn.LayerNorm(C)))
        self.lm_head = nn.Linear(C, V, bias=False)
        for name, m in self.named_modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
        self.lm_head.weight = self.transformer.wte.weight

    def forward(self, idx):
        x = self.transformer.dropout(self.transformer.wte(idx))
        for block in self.transformer.h:
            x, _ = block(x)
        return self.lm_head(self.transformer.ln_f(x))

    def record(self, idx):
        x = self.transformer.wte(idx)
        out = []
        for block in self.transformer.h:
            x, qkv = block(x)
            out.append(qkv)
        return out


def _logits_and_grads(model, idx, target):
    model.zero_grad(set_to_none=True)
    logits = model(idx)
    F.cross_entropy(logits.flatten(0, 1), target.flatten()).backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("returns_qkv", [True, False])
def test_patch_swaps_paper_modules_with_equal_logits_and_grads(returns_qkv):
    torch.manual_seed(0)
    model = PaperModel(returns_qkv=returns_qkv)
    with torch.no_grad():  # a trained-looking model: sharper attention than at init
        for p in model.parameters():
            if p.dim() == 2 and p.requires_grad:
                p.mul_(10)
    idx, target = torch.randint(0, 23, (3, 29)), torch.randint(0, 23, (3, 29))
    logits0, grads0 = _logits_and_grads(model, idx, target)
    keys0 = list(model.state_dict())
    params0 = [id(p) for p in model.parameters()]
    rng0 = torch.get_rng_state()
    qkv0 = model.record(idx) if returns_qkv else None

    report = patch(model)

    assert torch.equal(torch.get_rng_state(), rng0)  # patch draws nothing from the global RNG
    assert set(report.swapped) == {"transformer.wte", "transformer.h.0.attn", "transformer.h.1.attn"}, report
    assert report.left == {}
    assert isinstance(model.transformer.wte, Embedding)
    assert all(isinstance(b.attn, PatchedAttention) for b in model.transformer.h)
    assert model.lm_head.weight is model.transformer.wte.weight  # still tied
    assert list(model.state_dict()) == keys0 and [id(p) for p in model.parameters()] == params0
    assert model.transformer.h[0].attn.n_embd == 64  # plain attributes carried over

    logits1, grads1 = _logits_and_grads(model, idx, target)
    torch.testing.assert_close(logits1, logits0, **TOL)
    assert grads1.keys() == grads0.keys()
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], **TOL, msg=name)
    if returns_qkv:
        for before, after in zip(qkv0, model.record(idx)):
            for a, b in zip(after, before):
                torch.testing.assert_close(a, b, **TOL)
    again = patch(model)
    assert again.swapped == {} and again.left == {}  # idempotent


@pytest.mark.parametrize("variant, why", [
    (dict(dp=0.1), "dropout"),
    (dict(interleaved=False), "differs"),      # RoPE over halves, not interleaved pairs
    (dict(rot_dim=16), "16 of the head's 32"),  # RoPE over part of the head
    (dict(theta=500.0), None),                  # another θ is read off the freqs and kept
    (dict(causal=False), "not causal"),
])
def test_patch_leaves_what_it_cannot_prove_equal(variant, why):
    torch.manual_seed(1)
    model = PaperModel(depth=1, **variant)
    attn = model.transformer.h[0].attn
    idx = torch.randint(0, 23, (2, 17))
    model.eval()
    before = model(idx)
    report = patch(model)
    if why is None:
        assert "θ 500" in report.swapped["transformer.h.0.attn"]
        torch.testing.assert_close(model(idx), before, **TOL)
        return
    assert model.transformer.h[0].attn is attn
    assert why in report.left["transformer.h.0.attn"], report
    assert "transformer.wte" in report.swapped
    torch.testing.assert_close(model(idx), before, **TOL)


def test_patch_report_for_other_modules():
    model = nn.ModuleDict(dict(
        pad=nn.Embedding(5, 8, padding_idx=0),
        mha=nn.MultiheadAttention(32, 2),
        plain=nn.Embedding(5, 8),
    ))
    report = patch(model)
    assert report.swapped == {"plain": "fastgrok.ops.Embedding"}
    assert "padding_idx=0" in report.left["pad"]
    assert "not the paper's attention" in report.left["mha"]
    assert "swapped plain" in str(report)
    root = PaperAttention(64, 2)
    assert "" in patch(root).left and type(root) is PaperAttention


def test_patched_modules_respect_fallback(monkeypatch):
    model = PaperModel(depth=1)
    patch(model)
    idx = torch.randint(0, 23, (2, 7))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="fallback=True"):
        model(idx)
    model2 = PaperModel(depth=1)
    model2.load_state_dict(model.state_dict())
    want = model2(idx)
    patch(model2, fallback=True)
    with pytest.warns(UserWarning):
        torch.testing.assert_close(model2(idx), want, **TOL)


@pytest.mark.parametrize("model, fallback, match", [
    (None, False, "patch: model must be a torch.nn.Module, got NoneType"),
    ("model", False, "patch: model must be a torch.nn.Module, got str"),
    (nn.Linear(2, 2), "yes", "patch: fallback must be True or False, got 'yes'"),
])
def test_patch_names_a_bad_argument(model, fallback, match):
    with pytest.raises(TypeError, match=match):
        patch(model, fallback=fallback)
