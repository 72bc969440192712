import json
import sys

import pytest

from fastgrok import Config
from fastgrok.cli import main
from fastgrok.data import SPLITS as SETS
from fastgrok.sweep import open_sweep, parse_grid, point_name

PHASE_OF = {8: "id_memorization", 16: "id_generalization", 32: "ood_generalization"}


def _history(phase, steps=(10, 20, 30)):
    recs = []
    for step in steps:
        acc = {"id_memorization": (1, .2, .1, .1), "id_generalization": (1, 1, .2, .1),
               "ood_generalization": (1, 1, 1, 1)}[phase]
        recs.append({"step": step, "phase": phase, "sets": {
            s: {"acc": a * step / 30, "acc_last": a, "kshot": [min(1.0, a * k / 3) for k in range(6)]}
            for s, a in zip(SETS, acc)}})
    return recs


@pytest.fixture
def handmade_sweep(tmp_path):
    """A 3 (n_id) × 2 (alpha) × 2 (depth) sweep whose run folders hold hand-made metrics."""
    sweep, _ = open_sweep(tmp_path / "sw", Config.preset("tiny", p=11, batch_size=32, steps=30),
                          parse_grid(["n_id=8,16,32", "alpha=0.4,0.6", "depth=1,2"]))
    for point in sweep.points()[:-1]:  # the last point has not started
        run = sweep.runs / point_name(point)
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps(sweep.config(point).to_dict()))
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _history(PHASE_OF[point["n_id"]])))
        (run / "summary.json").write_text(json.dumps({"steps": 30, "finished": True, "stopped_early": False}))
    return sweep


def _nontrivial_png(path, min_colors=4):
    import matplotlib.image as mpimg
    img = mpimg.imread(path)
    assert img.shape[0] > 100 and img.shape[1] > 100
    colors = {tuple(px) for px in img.reshape(-1, img.shape[-1])[::7].round(2).tolist()}
    assert len(colors) >= min_colors, f"{path} looks blank ({len(colors)} colours)"
    return img


def test_sweep_figures(handmade_sweep, capsys):
    pytest.importorskip("matplotlib")
    assert main(["plot", str(handmade_sweep.root)]) == 0
    out = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[1] for p in out] == ["phase_diagram.png", "kshot.png", "curves.png"]
    img = _nontrivial_png(handmade_sweep.root / "phase_diagram.png")
    # the three phases' colours are in the diagram
    from matplotlib.colors import to_rgb
    from fastgrok.sweep.plot import PHASE_COLORS
    pixels = {tuple(round(c, 1) for c in px[:3]) for px in img.reshape(-1, img.shape[-1]).tolist()}
    for phase in PHASE_OF.values():
        assert tuple(round(c, 1) for c in to_rgb(PHASE_COLORS[phase])) in pixels, phase
    _nontrivial_png(handmade_sweep.root / "kshot.png")
    _nontrivial_png(handmade_sweep.root / "curves.png")


def test_run_figures_and_errors(handmade_sweep, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    run = handmade_sweep.runs / handmade_sweep.names()[0]
    assert main(["plot", str(run), "--out", str(tmp_path / "figs")]) == 0
    for name in ("curves.png", "kshot.png"):
        _nontrivial_png(tmp_path / "figs" / name)
    assert main(["plot", str(tmp_path)]) == 2
    assert "neither a sweep folder" in capsys.readouterr().err
    empty = handmade_sweep.runs / handmade_sweep.names()[-1]
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    assert main(["plot", str(empty)]) == 2
    assert "no evaluation yet" in capsys.readouterr().err


def test_clear_message_without_matplotlib(handmade_sweep, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    assert main(["plot", str(handmade_sweep.root)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'fastgrok[plot]'" in err and len(err.strip().splitlines()) == 1
