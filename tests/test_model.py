import math

import pytest
import torch

from fastgrok import GPT, Config
from fastgrok.rope import apply_rope


def rope_complex(x: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE as complex rotation of (x_2i, x_2i+1): an independent formulation of SPEC's."""
    T, D = x.shape[-2:]
    inv = 1.0 / theta ** (torch.arange(0, D, 2).float() / D)  # SPEC: fp32 angles
    ang = (torch.arange(T).float()[:, None] * inv).double()
    xc = torch.view_as_complex(x.double().unflatten(-1, (D // 2, 2)).contiguous())
    return torch.view_as_real(xc * torch.polar(torch.ones_like(ang), ang)).flatten(-2)


def spec_forward(sd: dict, idx: torch.Tensor, depth: int, n_head: int, mlp: str = "relu", theta=10000.0):
    """SPEC "Model" written out in fp64 from a paper-format state_dict."""
    sd = {k: v.double() for k, v in sd.items()}
    ln = lambda x, p: torch.nn.functional.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"])
    x = sd["transformer.wte.weight"][idx]
    B, T, C = x.shape
    D = C // n_head
    mask = torch.ones(T, T).tril().bool()
    for i in range(depth):
        h = f"transformer.h.{i}."
        qkv = ln(x, h + "ln_1") @ sd[h + "attn.to_qkv.weight"].T
        q, k, v = (t.view(B, T, n_head, D).transpose(1, 2) for t in qkv.split(C, -1))
        q, k = rope_complex(q, theta), rope_complex(k, theta)
        att = (q @ k.transpose(-1, -2) / math.sqrt(D)).masked_fill(~mask, float("-inf")).softmax(-1)
        x = x + ((att @ v).transpose(1, 2).reshape(B, T, C)) @ sd[h + "attn.o.weight"].T
        u = ln(x, h + "ln_2") @ sd[h + "mlp.c_fc.weight"].T
        u = torch.relu(u) if mlp == "relu" else torch.nn.functional.gelu(u, approximate="tanh")
        x = x + u @ sd[h + "mlp.c_proj.weight"].T
    return ln(x, "transformer.ln_f") @ sd["lm_head.weight"].T


@pytest.mark.parametrize("mlp", ["relu", "gelu"])
def test_forward_matches_spec_written_out(mlp):
    cfg = Config.preset("tiny", depth=2, n_embd=48, n_head=3, mlp=mlp, vocab_size=11)
    model = GPT(cfg.model).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # move LayerNorms off identity too
    idx = torch.randint(0, 11, (3, 17))
    ref = spec_forward(model.state_dict(), idx, 2, 3, mlp)
    torch.testing.assert_close(model(idx), ref, atol=1e-10, rtol=1e-10)


def test_rope_matches_complex_formulation():
    x = torch.randn(2, 3, 95, 64, dtype=torch.float64)
    torch.testing.assert_close(apply_rope(x, 500.0), rope_complex(x, 500.0))


def test_shapes_positions_and_param_count():
    cfg = Config.preset("paper-d4")
    model = GPT(cfg.model)
    assert abs(model.num_params() - 12.6e6) < 0.05e6  # SPEC: ≈ 12.6 M at depth 4
    small = GPT(Config.preset("tiny", vocab_size=9).model)
    idx = torch.randint(0, 5, (4, 17))
    full = small(idx)
    assert full.shape == (4, 17, 9)
    torch.testing.assert_close(small(idx, positions=slice(1, None, 3)), full[:, 1::3])
    with pytest.raises(ValueError, match="idx"):
        small(idx[0])


def test_init_statistics_and_tying():
    torch.manual_seed(0)
    cfg = Config.preset("paper", depth=4)
    model = GPT(cfg.model)
    assert model.lm_head.weight is model.transformer.wte.weight
    sd = dict(model.named_parameters())
    for name, w in sd.items():
        if name.endswith("ln_1.weight") or name.endswith("ln_f.weight"):
            assert torch.all(w == 1)
        elif name.endswith("bias"):
            assert torch.all(w == 0)
        elif name.endswith("mlp.c_proj.weight"):
            assert abs(w.std().item() - 0.02 / math.sqrt(8)) < 2e-4
        elif w.dim() == 2:
            assert abs(w.std().item() - 0.02) < 3e-4, name
            assert abs(w.mean().item()) < 1e-3


def test_swiglu_width():
    from fastgrok.model import swiglu_hidden
    assert swiglu_hidden(512, 4) == 1368  # 4 · ⌊2·512/3⌋ = 1364, rounded up to a multiple of 8
    model = GPT(Config.preset("tiny", mlp="swiglu").model)
    assert model.transformer.h[0].mlp.w1.weight.shape == (swiglu_hidden(32, 4), 32)
    assert model(torch.randint(0, 5, (2, 7))).shape == (2, 7, 5)


@pytest.mark.parametrize("sl", [slice(1, None, 3), slice(2, None, 4), slice(0, None, 1), slice(5, 9)])
def test_positions_path_equals_full_forward_and_gradients(sl):
    model = GPT(Config.preset("tiny", depth=2, n_embd=32, n_head=2).model).double()
    idx = torch.randint(0, 5, (3, 23))
    full = model(idx)[:, sl]
    g = torch.randn_like(full)
    grads_full = torch.autograd.grad((full * g).sum(), list(model.parameters()))
    sub = model(idx, positions=sl)
    grads_sub = torch.autograd.grad((sub * g).sum(), list(model.parameters()))
    torch.testing.assert_close(sub, full, atol=1e-12, rtol=1e-12)
    for a, b in zip(grads_sub, grads_full):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
