"""`log = "tensorboard,wandb"` (#31): what the trackers hold, read back with the real libraries, and a resume
that writes no step twice. W&B runs offline (no API key here); its run file is read record by record with W&B's
own protobuf schema (wandb ≥ 0.19 moved its file reader into the Go core: the framing is LevelDB's log format)."""
from __future__ import annotations

import json
import shutil
import struct
import sys

import pytest

from fastgrok import Config, runfolder, train
from fastgrok.cli import main
from fastgrok.tracking import SET_METRICS, SETS, check

TB_REASON = "tensorboard is not installed (pip install -e '.[dev]')"


def _cfg(root, name, **kw):
    return Config.preset("tiny", steps=20, eval_every=5, out_dir=str(root), run_name=name, **kw)


def _history(run):
    return runfolder.read_history(run)


# ---- TensorBoard ---------------------------------------------------------------------------------
class _TB:
    """TensorBoard's reader as its server uses it (plugin_event_accumulator: every summary a tensor, purges on a
    restart applied to them all)."""

    def __init__(self, run):
        from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
        self.acc = EventAccumulator(str(run / runfolder.TENSORBOARD), size_guidance={"tensors": 0})
        self.acc.Reload()

    def scalars(self, tag):
        from tensorboard.util import tensor_util
        return [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in self.acc.Tensors(tag)]

    def texts(self, tag):
        return [(e.step, e.tensor_proto.string_val[0].decode()) for e in self.acc.Tensors(tag)]

    def tags(self):
        return self.acc.Tags()["tensors"]


def test_tensorboard_holds_metrics_jsonl_and_a_resume_writes_no_step_twice(tmp_path):
    pytest.importorskip("tensorboard", reason=TB_REASON)
    cfg = _cfg(tmp_path, "tb", log="tensorboard")
    run = tmp_path / "tb"
    train(cfg, stop_at=10, quiet=True)
    ckpt10 = tmp_path / "last10.pt"
    shutil.copy(run / runfolder.LAST, ckpt10)
    train(resume=run, stop_at=15, quiet=True)
    # as if step 15 had been logged and the process then died before its checkpoint: the resume runs 11 … 15
    # again; TensorBoard's purge_step must hide the first step-15 events
    shutil.copy(ckpt10, run / runfolder.LAST)
    train(resume=run, quiet=True)
    tb = _TB(run)
    history = _history(run)
    steps = [r["step"] for r in history]
    assert steps == [5, 10, 15, 20]
    for s in SETS:
        for m in SET_METRICS:
            # TensorBoard stores fp32: metrics.jsonl's value rounded to fp32 (rel. 2^-24)
            assert tb.scalars(f"{s}/{m}") == [(r["step"], pytest.approx(r["sets"][s][m], rel=1e-6)) for r in history]
    assert tb.scalars("lr") == [(r["step"], pytest.approx(r["lr"], rel=1e-6)) for r in history]
    assert tb.scalars("tokens") == [(r["step"], pytest.approx(r["tokens"], rel=1e-6)) for r in history]
    assert [s for s, _ in tb.scalars("perf/steps_per_s")] == steps
    assert all(v > 0 for _, v in tb.scalars("perf/peak_mem_gib"))
    assert tb.texts("phase/text_summary") == [(r["step"], r["phase"]) for r in history]
    kshot = tb.texts("kshot/text_summary")
    assert [s for s, _ in kshot] == steps
    assert kshot[-1][1].count("\n") == 1 + cfg.task.n_shots and kshot[-1][1].startswith("| shot | train | id_test")
    assert "summary/text_summary" in tb.tags() and "config/text_summary" in tb.tags()


# ---- W&B -----------------------------------------------------------------------------------------
def _wandb_records(path):
    """The records of a .wandb file: a 7-byte header (':W&B', magic, version), then LevelDB log blocks of 32 KiB,
    each chunk a 7-byte header (crc32c, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, buf, out = 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0:  # padding to the end of a block
            pos += left - 7
            continue
        buf += data[pos:pos + n]
        pos += n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


def _wandb_runs(run):
    """Per offline run file (one per train call), in order: (run record, config, history {step: {key: value}},
    summary, its files/ folder)."""
    out = []
    for f in sorted((run / runfolder.WANDB).glob("offline-run-*/run-*.wandb")):
        run_rec, config, history, summary = None, {}, {}, {}
        for r in _wandb_records(f):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                run_rec = r.run
                config.update({i.key: json.loads(i.value_json) for i in r.run.config.update})
            elif kind == "config":
                config.update({i.key: json.loads(i.value_json) for i in r.config.update})
            elif kind == "history":
                items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
                history[int(items["_step"])] = items
            elif kind == "summary":
                summary.update({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.summary.update})
        out.append((run_rec, config, history, summary, f.parent / "files"))
    return out


@pytest.fixture
def offline(monkeypatch, tmp_path):
    pytest.importorskip("wandb", reason="wandb is not installed (pip install -e '.[dev]')")
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc key
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))


def test_wandb_offline_run_holds_metrics_and_resumes_the_same_run(offline, tmp_path, capsys):
    cfg = _cfg(tmp_path, "wb", log="wandb")
    run = tmp_path / "wb"
    assert main(["train", "--preset", "tiny", "--steps", "20", "--eval-every", "5", "--out-dir", str(tmp_path),
                 "--run-name", "wb", "--log", "wandb", "--stop-at", "10"]) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("wandb:")]
    assert len(said) == 1 and "logging offline to" in said[0], said
    train(resume=run, quiet=True)
    parts = _wandb_runs(run)
    assert len(parts) == 2
    ids = {p[0].run_id for p in parts}
    assert ids == {json.loads((run / runfolder.TRACKING).read_text())["wandb_id"]}  # one W&B run, resumed
    steps = [s for p in parts for s in p[2]]
    assert steps == [5, 10, 15, 20]  # no step twice
    history = {r["step"]: r for r in _history(run)}
    for p in parts:
        for step, items in p[2].items():
            for s in SETS:
                for m in SET_METRICS:
                    assert items[f"{s}/{m}"] == pytest.approx(history[step]["sets"][s][m], rel=1e-12)
            assert items["phase"] == history[step]["phase"] and items["lr"] == pytest.approx(history[step]["lr"])
            assert items["perf/peak_mem_gib"] > 0 and items["kshot/_type"] == "table-file"
            table = json.loads((p[4] / items["kshot/path"]).read_text())
            assert table["columns"] == ["shot", *SETS]
            assert table["data"] == [[k, *(history[step]["sets"][s]["kshot"][k] for s in SETS)]
                                     for k in range(cfg.task.n_shots)]
    config = parts[0][1]
    assert config["n_shots"] == cfg.task.n_shots and config["log"] == "wandb" and config["depth"] == cfg.model.depth
    summary = parts[-1][3]
    assert summary["steps"] == 20 and summary["phase"] == history[20]["phase"]
    assert summary["final/ood_test/acc"] == pytest.approx(history[20]["sets"]["ood_test"]["acc"])


def test_a_sweep_point_is_grouped_with_its_grid_values(offline, tmp_path):
    from fastgrok.sweep import open_sweep
    from fastgrok.sweep.spec import load_sweep
    sweep, _ = open_sweep(tmp_path / "sw", Config.preset("tiny", steps=10, eval_every=10, log="wandb"),
                          {"alpha": [0.6]}, None)
    from fastgrok.sweep.worker import run_point
    name = load_sweep(sweep.root).names()[0]
    assert run_point(sweep.root, name, quiet=True) == "done"
    (rec, config, history, _, _), = _wandb_runs(sweep.runs / name)
    assert rec.run_group == "sw" and config["sweep"] == "sw" and config["grid/alpha"] == 0.6
    assert list(history) == [10]


def test_a_missing_package_is_one_line_naming_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # Python's own way to make an import fail
    with pytest.raises(ValueError, match=r'^log=\'wandb\' needs the wandb package .*pip install "fastgrok\[wandb\]"$'):
        check(_cfg(tmp_path, "x", log="tensorboard,wandb"))
    assert main(["train", "--preset", "tiny", "--out-dir", str(tmp_path), "--run-name", "m", "--log", "wandb"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'fastgrok[wandb]' in err
    assert not (tmp_path / "m").exists()  # refused before anything was made
    assert main(["train", "--preset", "tiny", "--log", "mlflow"]) == 2
    assert "'mlflow' is not a tracker" in capsys.readouterr().err
