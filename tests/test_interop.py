"""`fastgrok.interop.to_hooked_transformer` (#31): TransformerLens' HookedTransformer with fastgrok's logits.

Tolerance: both compute in fp32 with the same weights; they differ only in the order of sums (einsum per head
vs one Linear) and in RoPE's angles (t / θ^(2i/D) there, t · θ^(-2i/D) here: ≤ 2 ulp of an angle ≤ 95 rad,
≈ 1e-5 rad). With the weights below (logits up to ≈ 50) that is a few ulp of |logit| per layer,
≈ depth · 4 · ε · 50 ≈ 1e-5 (ε = 6e-8); the issue's bound, max |Δlogit| ≤ 1e-4, holds with margin (measured
0.6–1.4e-5 on the four shapes below). Attention probabilities (≤ 1): a few ulp, measured ≤ 5e-7; bound 1e-5.
"""
from __future__ import annotations

import json

import pytest
import torch

from fastgrok import GPT, Config, sample_batch, save_reference_checkpoint, train
from fastgrok.cli import main
from fastgrok.tasks import make_tasks

pytest.importorskip("safetensors", reason="safetensors is not installed (pip install -e '.[dev]')")
interop = pytest.importorskip("fastgrok.interop")
try:
    interop.check_available()
except ValueError as e:  # not installed, or a TransformerLens without HookedTransformer
    pytest.skip(str(e), allow_module_level=True)

from fastgrok.analysis import attention_maps  # noqa: E402
from fastgrok.export import open_model  # noqa: E402

ATOL = 1e-4  # |Δlogit|, fp32 (module docstring)
P_ATOL = 1e-5  # attention probabilities


def _scrambled(cfg: Config, seed: int = 0) -> GPT:
    """A GPT whose every parameter is random and O(1) in effect: LayerNorm weights away from 1 and biases away
    from 0 (a swapped or dropped one shows), logits up to ≈ 20–50."""
    torch.manual_seed(seed)
    model = GPT(cfg.model).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.3 * torch.randn_like(p))
            else:
                p.normal_(0.0, 1.0 if "wte" in name else p.shape[1] ** -0.5)
    return model


def _tokens(cfg: Config, n_random: int = 3) -> torch.Tensor:
    real = sample_batch(cfg, make_tasks(cfg.task), 0, "ood_test", "cpu")[:4, :-1]  # (4, 3·n_shots − 1)
    g = torch.Generator().manual_seed(1)
    return torch.cat([real, torch.randint(0, cfg.model.vocab_size, (n_random, real.shape[1]), generator=g)])


def _max_diff(model, hooked, x) -> float:
    with torch.no_grad():
        return (model(x) - hooked(x)).abs().max().item()


def _patterns(hooked, x) -> torch.Tensor:
    _, cache = hooked.run_with_cache(x.reshape(1, -1))
    return torch.stack([cache["pattern", l][0] for l in range(hooked.cfg.n_layers)])  # (L, H, T, T)


@pytest.mark.parametrize("depth,n_embd,n_head,mlp,theta", [
    (1, 32, 2, "relu", 10000.0), (2, 48, 4, "gelu", 10000.0), (3, 64, 8, "swiglu", 10000.0), (4, 32, 1, "relu", 500.0),
])
def test_same_logits_and_attention_as_fastgrok(depth, n_embd, n_head, mlp, theta):
    cfg = Config.preset("tiny", p=7, n_shots=10, depth=depth, n_embd=n_embd, n_head=n_head, mlp=mlp,
                        rope_theta=theta, vocab_size=9)
    model = _scrambled(cfg)
    hooked = interop.to_hooked_transformer(model, n_ctx=cfg.task.seq_len)
    x = _tokens(cfg)
    assert _max_diff(model, hooked, x) <= ATOL
    with torch.no_grad():
        assert model(x).abs().max() > 5  # a test of something: logits far from 0
    torch.testing.assert_close(_patterns(hooked, x[0]), attention_maps(model, x[0]), atol=P_ATOL, rtol=0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lens")
    train(Config.preset("tiny", steps=20, eval_every=10, out_dir=str(root), run_name="r"), quiet=True)
    return root / "r"


def test_a_trained_run_and_its_export(run, tmp_path, capsys):
    loaded = open_model(run)
    hooked = interop.to_hooked_transformer(run)
    assert hooked.cfg.n_ctx == loaded.cfg.task.seq_len
    x = _tokens(loaded.cfg)
    assert _max_diff(loaded.model, hooked, x) <= ATOL
    torch.testing.assert_close(_patterns(hooked, x[1]), attention_maps(loaded.model, x[1]), atol=P_ATOL, rtol=0)
    out = tmp_path / "tl"
    assert main(["export", str(run), "--format", "transformer-lens", "--out", str(out)]) == 0
    assert "tl_model.safetensors" in capsys.readouterr().out
    again = interop.load_hooked_transformer(out)
    with torch.no_grad():
        assert torch.equal(again(x), hooked(x))
    assert json.loads((out / "tl_config.json").read_text())["rotary_adjacent_pairs"] is True
    main(["export", str(run), "--out", str(tmp_path / "st")])
    assert _max_diff(loaded.model, interop.to_hooked_transformer(tmp_path / "st"), x) <= ATOL  # an export folder


def test_a_paper_checkpoint(tmp_path):
    from fastgrok.paper import parse, run_stem
    ns, _, _ = parse(["--p=7", "--base=7", "--n_tasks_pl=2", "--n_point_per_row=6", "--data_pct=60",
                      "--n_embd=32", "--n_head=2", "--n_layer=2", "--data_seed=3", "--steps=100"])
    head, tail = run_stem(ns)
    cfg = Config.preset("tiny", p=7, n_shots=6, depth=2, n_embd=32, n_head=2, vocab_size=7 + 18)
    model = _scrambled(cfg, seed=2)
    path = tmp_path / f"{head}_t100{tail}.pth"
    save_reference_checkpoint(model, path)
    hooked = interop.to_hooked_transformer(path)
    x = _tokens(cfg)
    assert _max_diff(model, hooked, x) <= ATOL


def test_what_it_refuses_is_one_line():
    cfg = Config.preset("tiny")
    model = GPT(cfg.model)
    odd = Config.preset("tiny").model
    object.__setattr__(odd, "mlp", "geglu")  # a kind TransformerLens has no MLP for (ModelConfig refuses it too)
    model.cfg = odd
    with pytest.raises(ValueError, match=r"^TransformerLens cannot express this model: mlp='geglu'") as e:
        interop.to_hooked_transformer(model)
    assert "\n" not in str(e.value)
    with pytest.raises(TypeError, match="takes a fastgrok GPT"):
        interop.to_hooked_transformer(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="n_ctx=0"):
        interop.to_hooked_transformer(GPT(cfg.model), n_ctx=0)
