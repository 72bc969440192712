"""The battery of issue 33 (benchmarks/battery_surfaces.py): analyze, sweep, plot, `fastgrok paper` and the
Python API given what a new user gives them. Bad input ends in one line on stderr naming the flag, field,
file or step and exit code 2 (a Python call: a ValueError/TypeError naming the argument), and nothing of
another run is lost or left behind."""
import errno
import json
import shutil

import pytest
import torch

from fastgrok import GPT, Config, backends, ops, save_reference_checkpoint, train
from fastgrok.cli import main
from fastgrok.config import TrainConfig

CFG = Config.preset("tiny")


def _err(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    assert err.startswith("fastgrok") and ": error: " in err and err.count("\n") == 1, err
    return err


# ---- shared, made once: a tiny run, a paper-format checkpoint, a one-point sweep --------------------------
@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("surfaces")
    train(Config.preset("tiny", steps=10, eval_every=10, out_dir=str(root), run_name="run"), quiet=True)
    from fastgrok.paper import parse, run_stem
    ns, _, _ = parse(["--p=5", "--base=5", "--n_tasks_pl=2", "--n_point_per_row=6", "--data_pct=60", "--n_embd=32",
                      "--n_head=2", "--n_layer=1", "--act_name=relu", "--steps=10"])
    head, tail = run_stem(ns)
    paper = root / f"{head}_t10{tail}.pth"
    torch.manual_seed(0)
    save_reference_checkpoint(GPT(Config.preset("tiny", vocab_size=5 + 18).model), paper)
    assert main(["sweep", str(root / "sw"), "--preset", "tiny", "--steps", "10", "--grid", "seed=1", "--no-plots",
                 "--quiet"]) == 0
    return dict(run=root / "run", paper=paper, sweep=root / "sw")


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _nan_weights(run):  # in last.pt, the checkpoint analyze reads by default
    state = torch.load(run / "last.pt", weights_only=True)
    state["model"]["transformer.wte.weight"][0, 0] = float("nan")
    torch.save(state, run / "last.pt")


def _other_n_var(run):
    """last.pt (analyze's default) of an n_var = 3 run (same shapes: the vocabulary is p) in this n_var = 2 run."""
    state = torch.load(run / "last.pt", weights_only=True)
    state["config"]["task"].update(n_var=3, selection="random", n_pl=None, n_id=8)
    torch.save(state, run / "last.pt")


ANALYZE = [  # (case, setup of a copy of the run, argv after `analyze SOURCE`, source: run|paper, what the line says)
    ("n_var = 3 last.pt in an n_var = 2 run", _other_n_var, [], "run", "trained with another config"),
    ("NaN weights, kshot,grid,attention,noise", _nan_weights, ["--what", "kshot,grid,attention,noise"], "run",
     "NaN or inf"),
    ("NaN weights, embedding", _nan_weights, ["--what", "embedding"], "run", "NaN or inf"),
    ("--noise-seqs 10^9", None, ["--noise-seqs", "1000000000"], "run", "--noise-seqs 1000000000 is more than"),
    ("--device cuda:99", None, ["--device", "cuda:99"], "run", "--device cuda:99"),
    ("--out ''", None, ["--out", ""], "run", "--out '' names no folder"),
    ("--seed -1", None, ["--seed", "-1"], "run", "--seed -1 must be ≥ 0"),
    ("paper name p5 with --p 7", None, ["--p", "7"], "paper", "--p 7 (the name says 5)"),
    ("paper name relu with --mlp gelu", None, ["--mlp", "gelu"], "paper", "--mlp gelu (the name says relu)"),
    ("--n-shots 200000 on a paper checkpoint", None, ["--n-shots", "200000"], "paper", "needs about"),
]


@pytest.mark.parametrize("case, setup, argv, source, says", ANALYZE, ids=[c[0] for c in ANALYZE])
def test_analyze_refuses_in_one_line(made, tmp_path, capsys, case, setup, argv, source, says):
    if source == "run":
        src = _copy(made["run"], tmp_path / "run")
    else:
        src = tmp_path / made["paper"].name
        shutil.copy(made["paper"], src)
    if setup:
        setup(src)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    err = _err(capsys, ["analyze", str(src), "--quiet", *argv])
    assert says in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "a refused analysis wrote files"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where CUDA is absent")
def test_analyze_device_cuda_without_one(made, capsys):
    assert "CUDA is not available" in _err(capsys, ["analyze", str(made["run"]), "--device", "cuda"])


def test_analyze_a_runs_last_pt_given_as_a_file(made, tmp_path, capsys):
    """A run's last.pt is studied with its folder's config (it asked for n_head=, which analyze has no flag for)."""
    run = _copy(made["run"], tmp_path / "run")
    assert main(["analyze", str(run / "last.pt"), "--what", "kshot", "--no-figures", "--quiet"]) == 0
    assert json.loads((run / "analysis" / "index.json").read_text())["checkpoint"] == str(run / "last.pt")
    assert "drop p" in _err(capsys, ["analyze", str(run / "last.pt"), "--p", "7"])


def test_analyze_full_disk_names_the_out_file(made, tmp_path, capsys, monkeypatch):
    """ENOSPC at fsync carries no file name: the line names the file under --out, not the source folder."""
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("fastgrok.checkpoint.os.fsync", full)
    out = tmp_path / "out"
    err = _err(capsys, ["analyze", str(made["run"]), "--what", "kshot", "--no-figures", "--quiet", "--out", str(out)])
    assert str(out / "kshot.json") in err and "No space left" in err, err


# ---- sweep and plot --------------------------------------------------------------------------------------
def _empty_metrics(sw):
    (next((sw / "runs").iterdir()) / "metrics.jsonl").write_text("")


def _corrupt_summary(sw):
    (next((sw / "runs").iterdir()) / "summary.json").write_text("{")


def _damaged_line(sw):
    path = next((sw / "runs").iterdir()) / "metrics.jsonl"
    path.write_text("garbage\n" + path.read_text())


SWEEP = [  # (case, setup of a copy of the sweep, argv with {sw} and {d}, what the line says, path that must not exist)
    ("--status with --grid", None, ["sweep", "{sw}", "--status", "--grid", "seed=2"], "drop --grid", None),
    ("--status with a field flag", None, ["sweep", "{sw}", "--status", "--steps", "20"], "drop --steps", None),
    ("sweep --out-dir", None, ["sweep", "{d}/new", "--preset", "tiny", "--seeds", "1", "--out-dir", "{d}/x"],
     "--out-dir: a sweep's runs go under SWEEP_DIR/runs", "new"),
    ("sweep --run-name", None, ["sweep", "{d}/new", "--preset", "tiny", "--seeds", "1", "--run-name", "r"],
     "--run-name", "new"),
    ("plot --out ''", None, ["plot", "{sw}", "--out", ""], "--out '' names no folder", None),
    ("plot a sweep whose one run has a damaged line", _damaged_line, ["plot", "{sw}"], "metrics.jsonl line 1 is corrupt", None),
]


@pytest.mark.parametrize("case, setup, argv, says, absent", SWEEP, ids=[c[0] for c in SWEEP])
def test_sweep_and_plot_refuse_in_one_line(made, tmp_path, capsys, case, setup, argv, says, absent):
    sw = _copy(made["sweep"], tmp_path / "sw")
    if setup:
        setup(sw)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    err = _err(capsys, [a.replace("{sw}", str(sw)).replace("{d}", str(tmp_path)) for a in argv])
    assert says in err, err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before, "a refused command wrote files"
    assert absent is None or not (tmp_path / absent).exists()


def test_slurm_without_sbatch_leaves_no_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    err = _err(capsys, ["sweep", str(tmp_path / "sw"), "--preset", "tiny", "--seeds", "1", "--engine", "slurm",
                        "--partition", "x", "--no-plots"])
    assert "needs sbatch and srun on PATH" in err and "--engine" in err, err
    assert not (tmp_path / "sw").exists()


@pytest.mark.parametrize("damage, says", [(_empty_metrics, "holds no evaluation, yet the run finished"),
                                          (_corrupt_summary, "summary.json is damaged")], ids=["emptied", "summary"])
def test_status_names_a_damaged_finished_run(made, tmp_path, capsys, damage, says):
    sw = _copy(made["sweep"], tmp_path / "sw")
    damage(sw)
    assert main(["sweep", str(sw), "--status"]) == 0
    rows = [json.loads(line) for line in (sw / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and says in (rows[0]["reason"] or ""), rows[0]["reason"]


# ---- `fastgrok paper` is fastgrok-paper ----------------------------------------------------------------
def test_fastgrok_paper_subcommand(tmp_path, capsys):
    assert main(["paper", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: fastgrok-paper")
    assert main(["paper", "--bs=0", f"--out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--bs=0 must be ≥ 1" in err, err
    assert not any(tmp_path.iterdir())


# ---- the Python API names the argument -------------------------------------------------------------------
def _open_sweep(tmp, cfg, grid):
    from fastgrok.sweep import open_sweep
    return open_sweep(tmp / "sw", cfg, grid)


MODEL = GPT(CFG.model)


@pytest.mark.parametrize("call, exc, match", [
    (lambda t: train(CFG, on_step=5), TypeError, "on_step must be a function"),
    (lambda t: train(CFG, on_eval="x"), TypeError, "on_eval must be a function"),
    (lambda t: train(CFG, quiet="no"), TypeError, "quiet must be True or False, got str 'no'"),
    (lambda t: MODEL(torch.full((1, 5), 10**6)), ValueError, r"idx holds token id 1000000, outside the vocabulary \[0, 5\)"),
    (lambda t: MODEL(torch.full((1, 5), -1)), ValueError, "idx holds token id -1"),
    (lambda t: MODEL(torch.zeros(1, 5)), TypeError, "idx must be an int64 .* got torch.float32"),
    (lambda t: ops.embedding(torch.tensor([[100]]), torch.randn(10, 4), fallback=True), ValueError,
     r"fastgrok.ops.embedding: idx holds token id 100, outside the vocabulary \[0, 10\)"),
    (lambda t: save_reference_checkpoint("model", t / "x.pth"), TypeError, "takes a fastgrok GPT, got str"),
    (lambda t: save_reference_checkpoint(MODEL, None), TypeError, "path must name a file"),
    (lambda t: __import__("fastgrok.analysis", fromlist=["Options"]).Options(shots="3"), TypeError,
     "Options.shots must be an int or None, got str"),
    (lambda t: _open_sweep(t, CFG, {"n_pl": 1}), ValueError, "grid must map each field to a list of values"),
    (lambda t: _open_sweep(t, {"p": 5}, {"seed": [1]}), TypeError, "cfg must be a Config"),
    (lambda t: TrainConfig(out_dir=3), TypeError, "out_dir must be a str"),
    (lambda t: TrainConfig(run_name=Config), TypeError, "run_name must be a str"),
    (lambda t: backends.register("embedding", "num", 42), TypeError, "impl must be a callable or a 'module:attribute'"),
    (lambda t: backends.register("embedding", "num", "no_colon"), TypeError, "'module:attribute'"),
], ids=lambda v: None)
def test_api_names_the_argument(tmp_path, call, exc, match):
    with pytest.raises(exc, match=match):
        call(tmp_path)
    assert not any(tmp_path.iterdir()), "a refused call wrote files"
    assert ("embedding", "num") not in backends._REGISTRY
