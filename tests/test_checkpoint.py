import pytest
import torch

from fastgrok import GPT, Config, load_reference_checkpoint, save_reference_checkpoint
from fastgrok.checkpoint import CheckpointError, atomic_save, to_paper_state_dict
from test_model import spec_forward


def _paper_sd(depth=2, n_embd=48, n_head=4, vocab=47, widen=4):
    """A state_dict laid out as the paper's code saves it, random weights, with its rotary freqs."""
    D = n_embd // n_head
    sd = {"transformer.wte.weight": torch.randn(vocab, n_embd) * 0.1}
    for i in range(depth):
        h = f"transformer.h.{i}."
        sd |= {h + "ln_1.weight": 1 + 0.1 * torch.randn(n_embd), h + "ln_1.bias": 0.1 * torch.randn(n_embd),
               h + "attn.to_qkv.weight": torch.randn(3 * n_embd, n_embd) * 0.1,
               h + "attn.o.weight": torch.randn(n_embd, n_embd) * 0.1,
               h + "attn.rotary_emb.freqs": 1.0 / (10000 ** (torch.arange(0, D, 2)[: D // 2].float() / D)),
               h + "ln_2.weight": 1 + 0.1 * torch.randn(n_embd), h + "ln_2.bias": 0.1 * torch.randn(n_embd),
               h + "mlp.c_fc.weight": torch.randn(widen * n_embd, n_embd) * 0.1,
               h + "mlp.c_proj.weight": torch.randn(n_embd, widen * n_embd) * 0.1}
    sd |= {"transformer.ln_f.weight": 1 + 0.1 * torch.randn(n_embd), "transformer.ln_f.bias": 0.1 * torch.randn(n_embd)}
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    return sd


@pytest.mark.parametrize("prefix", ["", "_orig_mod.", "module._orig_mod."])
def test_load_paper_checkpoint_identical_logits(tmp_path, prefix):
    sd = _paper_sd(depth=3, n_embd=48, n_head=4, vocab=47)
    torch.save({prefix + k: v for k, v in sd.items()}, tmp_path / "paper.pt")
    model = load_reference_checkpoint(tmp_path / "paper.pt")
    assert (model.cfg.depth, model.cfg.n_embd, model.cfg.n_head, model.cfg.vocab_size) == (3, 48, 4, 47)
    assert model.cfg.rope_theta == 10000.0
    idx = torch.randint(0, 29, (2, 95))
    with torch.no_grad():
        torch.testing.assert_close(model(idx).double(), spec_forward(sd, idx, 3, 4), atol=1e-5, rtol=1e-5)


def test_round_trip_through_paper_format(tmp_path):
    model = GPT(Config.preset("tiny", vocab_size=47, depth=2).model)
    save_reference_checkpoint(model, tmp_path / "out.pt")
    sd = torch.load(tmp_path / "out.pt")
    assert set(sd) == set(_paper_sd(depth=2, n_embd=32, n_head=2))
    back = load_reference_checkpoint(tmp_path / "out.pt")
    idx = torch.randint(0, 5, (3, 17))
    with torch.no_grad():
        assert torch.equal(back(idx), model(idx))
    assert back.cfg == model.cfg


def test_gelu_override_and_backend_override(tmp_path):
    torch.save(_paper_sd(), tmp_path / "p.pt")
    assert load_reference_checkpoint(tmp_path / "p.pt", mlp="gelu").cfg.mlp == "gelu"


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_reference_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_reference_checkpoint(tmp_path / "bad.pt")
    sd = _paper_sd()
    del sd["transformer.h.1.mlp.c_fc.weight"]
    torch.save(sd, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_reference_checkpoint(tmp_path / "partial.pt")


def test_atomic_save_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "x.pt"
    atomic_save({"a": torch.ones(2)}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(Exception):
        atomic_save({"a": Boom()}, path)
    assert torch.equal(torch.load(path)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]
