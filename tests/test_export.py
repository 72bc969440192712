"""`fastgrok export --format safetensors` and `fastgrok.load_exported` (#31): the same logits, no trainer."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastgrok import GPT, Config, load_exported, sample_batch, save_reference_checkpoint, train
from fastgrok.cli import main
from cli_errors import one_line_error
from fastgrok.export import export, exported_config, need
from fastgrok.tasks import make_tasks

pytest.importorskip("safetensors", reason="safetensors is not installed (pip install -e '.[dev]')")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    cfg = Config.preset("tiny", steps=20, eval_every=10, out_dir=str(root), run_name="r")
    train(cfg, quiet=True)
    return root / "r"


def _logits(model, tokens):
    with torch.no_grad():
        return model(tokens)


def _sequences(cfg: Config) -> torch.Tensor:
    """Real sequences (an o.o.d. evaluation batch) and random tokens, (B, 3·n_shots − 1)."""
    real = sample_batch(cfg, make_tasks(cfg.task), 0, "ood_test", "cpu")[:, :-1]
    g = torch.Generator().manual_seed(0)
    rand = torch.randint(0, cfg.model.vocab_size, (4, real.shape[1]), generator=g)
    return torch.cat([real[:8], rand])


def test_export_a_run_and_load_it_back_with_identical_logits(run, tmp_path, capsys):
    out = tmp_path / "e"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    from fastgrok.analysis import open_source
    subject = open_source(run, device="cpu")  # last.pt, the default of both
    model = load_exported(out)
    x = _sequences(subject.cfg)
    # the same weights through the same reference ops on the same CPU: bit for bit
    assert torch.equal(_logits(model, x), _logits(subject.model, x))
    assert exported_config(out) == subject.cfg
    tasks = json.loads((out / "tasks.json").read_text())
    assert tasks["pretrain"] == subject.tasks.pretrain.tolist() and tasks["ood"] == subject.tasks.ood.tolist()
    info = json.loads((out / "export.json").read_text())
    assert info["step"] == subject.step and info["checkpoint"].endswith("last.pt")
    from safetensors import safe_open
    with safe_open(str(out / "model.safetensors"), "pt") as f:  # the tied head stored once
        assert "lm_head.weight" not in f.keys() and "transformer.wte.weight" in f.keys()


def test_checkpoint_last_and_the_default_folder(run):
    files = export(run, checkpoint="last")
    assert files[0] == run / "export" / "model.safetensors"
    info = json.loads((run / "export" / "export.json").read_text())
    assert info["step"] == 20 and info["checkpoint"].endswith("last.pt")
    state = torch.load(run / "last.pt", weights_only=True)
    model = GPT(exported_config(run / "export").model)
    model.load_state_dict(state["model"])
    x = _sequences(exported_config(run / "export"))
    assert torch.equal(_logits(load_exported(run / "export"), x), _logits(model.eval(), x))


def test_load_exported_needs_no_trainer(run, tmp_path):
    export(run, out=tmp_path / "e")
    code = ("import sys, torch, fastgrok\n"
            f"m = fastgrok.load_exported({str(tmp_path / 'e')!r})\n"
            "print(tuple(m(torch.zeros(1, 5, dtype=torch.long)).shape))\n"
            "assert 'fastgrok.trainer' not in sys.modules, 'the trainer was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(1, 5, 5)"


def test_a_paper_checkpoint_exports_too(tmp_path):
    from fastgrok.paper import parse, run_stem
    ns, _, _ = parse(["--p=7", "--base=7", "--n_tasks_pl=2", "--n_point_per_row=6", "--data_pct=60",
                      "--n_embd=32", "--n_head=2", "--n_layer=2", "--data_seed=3", "--steps=100"])
    head, tail = run_stem(ns)
    cfg = Config.preset("tiny", p=7, n_shots=6, depth=2, n_embd=32, n_head=2, vocab_size=7 + 18)
    torch.manual_seed(0)
    paper = GPT(cfg.model).eval()
    path = tmp_path / f"{head}_t100{tail}.pth"
    save_reference_checkpoint(paper, path)
    assert main(["export", str(path)]) == 0
    out = path.with_name(path.stem + ".export")
    got = exported_config(out)
    assert (got.task.p, got.task.data_seed, got.model.vocab_size, got.model.depth) == (7, 3, 25, 2)
    x = _sequences(got)
    assert torch.equal(_logits(load_exported(out), x), _logits(paper, x))
    assert json.loads((out / "export.json").read_text())["step"] == 100


_err = one_line_error


def test_bad_input_is_one_line_and_exit_2(run, tmp_path, capsys):
    assert "does not exist" in _err(capsys, ["export", str(tmp_path / "nope")])
    assert "not a fastgrok run folder" in _err(capsys, ["export", str(tmp_path)])
    (tmp_path / "f.pt").write_bytes(b"junk")
    assert "picks best.pt or last.pt" in _err(capsys, ["export", str(tmp_path / "f.pt"), "--checkpoint", "last"])
    assert "is a file, not a folder" in _err(capsys, ["export", str(run), "--out", str(tmp_path / "f.pt")])
    with pytest.raises(SystemExit) as e:
        main(["export", str(run), "--format", "onnx"])
    assert e.value.code == 2
    with pytest.raises(ValueError, match="is not an export folder"):
        load_exported(tmp_path)
    with pytest.raises(ValueError, match=r'pip install "fastgrok\[lens\]"'):
        need("no_such_package_31", "lens")
