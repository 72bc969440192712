import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "fastgrok", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def _one_line_error(r, match):
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert match in lines[0], lines[0]


@pytest.mark.parametrize("args, match", [
    (["--alpha", "1.5"], "alpha"),
    (["--n-embd", "30", "--n-head", "4"], "divisible"),
    (["--n-pl", "20"], "o.o.d."),
    (["--batch-size", "4"], "cannot cover"),
    (["--preset", "huge"], "unknown preset"),
    (["--alpah", "0.3"], "alpah"),
    (["--depth", "two"], "depth"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, match):
    preset = [] if "--preset" in args else ["--preset", "tiny"]
    _one_line_error(run("train", *preset, "--out-dir", str(tmp_path), *args), match)
    assert not any(tmp_path.iterdir()), "a rejected config must write nothing"


def test_missing_resume_folder(tmp_path):
    _one_line_error(run("train", "--resume", str(tmp_path / "no" / "run")), "does not exist")


def test_train_tiny_then_corrupt_resume(tmp_path):
    r = run("train", "--preset", "tiny", "--out-dir", str(tmp_path), "--run-name", "a")
    assert r.returncode == 0, r.stderr
    assert "step 20" in r.stdout and "phase:" in r.stdout and "ood_test" in r.stdout
    # the head: what differs from the preset (here nothing), the backends as op=name, no JSON wall
    assert "config: preset tiny, no changes" in r.stdout and "{" not in r.stdout
    assert "attention=reference embedding=reference batchgen=reference" in r.stdout
    (tmp_path / "a" / "last.pt").write_bytes(b"\x00" * 10)
    _one_line_error(run("train", "--resume", str(tmp_path / "a")), "corrupt")
    _one_line_error(run("train", "--resume", str(tmp_path / "a"), "--alpha", "0.5"), "resume")


def test_stop_and_resume_from_cli(tmp_path):
    r = run("train", "--preset", "tiny", "--out-dir", str(tmp_path), "--run-name", "b", "--stop-at", "7")
    assert r.returncode == 0, r.stderr
    r = run("train", "--resume", str(tmp_path / "b"), "--quiet")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "b" / "summary.json").is_file()


def test_config_command_and_toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('preset = "paper"\nn_pl = 16\n[train]\nseed = 4\n')
    r = run("config", "--config", str(path), "--depth", "4")
    assert r.returncode == 0, r.stderr
    assert '"n_id": 64' in r.stdout and '"seed": 4' in r.stdout and '"depth": 4' in r.stdout
    assert run("presets").returncode == 0


# ---- issue 9: every bad input is one line and exit 2, and leaves nothing behind (in-process: fast) -----
def _main_error(capsys, argv, match):
    from fastgrok.cli import main
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert match in err[0], err[0]


@pytest.mark.parametrize("args, match", [
    (["--grad-clip", "nan"], "grad_clip=nan must be a finite number"),
    (["--lr", "inf"], "lr=inf must be a finite number"),
    (["--weight-decay", "nan"], "weight_decay=nan"),
    (["--weight-decay=-inf"], "weight_decay=-inf"),
    (["--alpha", "nan"], "alpha=nan"),
    (["--rope-theta", "inf"], "rope_theta=inf"),
    (["--run-name", "../../x"], "run_name='../../x' must be one folder name"),
    (["--run-name", "/abs/path"], "run_name='/abs/path'"),
    (["--run-name", ".."], "run_name='..'"),
    (["--data-seed", "99999999999999999999"], "data_seed=99999999999999999999 must lie in [0, 2^60)"),
    (["--p", "100003"], "needs about"),
    (["--n-shots", "100000"], "needs about"),
    (["--batch-size", "100000000"], "needs about"),
    (["--depth", "100000"], "needs about"),
    (["--device", "cuda"] if not __import__("torch").cuda.is_available() else ["--device", "cuda:99"], "device="),
])
def test_more_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, match):
    import time
    t = time.perf_counter()
    _main_error(capsys, ["train", "--preset", "quick", "--out-dir", str(tmp_path / "o"), "--quiet", *args], match)
    assert time.perf_counter() - t < 20  # refused before anything big is allocated (≈ 0.1 s)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_resume_empty_string_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _main_error(capsys, ["train", "--resume", ""], "names no run folder")
    assert not any(tmp_path.iterdir())


def test_os_errors_at_the_boundary(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    _main_error(capsys, ["train", "--preset", "tiny", "--out-dir", str(tmp_path / "file")], "is a file, not a folder")
    _main_error(capsys, ["train", "--preset", "tiny", "--out-dir", str(tmp_path / "file" / "x")], "cannot create out_dir")
    _main_error(capsys, ["train", "--config", str(tmp_path)], "is a folder, not a TOML file")
    (tmp_path / "latin1.toml").write_bytes("seed = 3 # caf\xe9\n".encode("latin-1"))
    _main_error(capsys, ["train", "--config", str(tmp_path / "latin1.toml")], "latin1.toml' is not UTF-8")
    _main_error(capsys, ["train", "--resume", str(tmp_path / "file")], "is a file, not a run folder")


def test_empty_config_file_means_the_default_preset(tmp_path, capsys):
    from fastgrok.cli import main
    from fastgrok.config import DEFAULT_PRESET, Config
    (tmp_path / "empty.toml").write_text("# nothing set\n")
    assert main(["config", "--config", str(tmp_path / "empty.toml"), "--seed", "5"]) == 0
    import json
    got = Config.from_dict(json.loads(capsys.readouterr().out))
    assert got == Config.preset(DEFAULT_PRESET, seed=5) and got.train.steps == 3000


def test_ctrl_c_at_start_up_in_a_real_process(tmp_path):
    """SIGINT while the process is still setting up: one line, exit 130, no folder."""
    import signal
    import time
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "fastgrok", "train", "--preset", "quick", "--out-dir",
                             str(tmp_path / "o"), "--compile", "on", "--quiet"], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and "libtorch" not in _maps(proc.pid):  # torch loads inside main() only
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("fastgrok: interrupted"), lines


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["bench", "--nope"], ["train", "--depth"],
                                  ["presets"], ["config", "--preset", "demo"], ["analyze", "--help"], ["analyze"]])
def test_help_and_bad_flags_do_not_import_torch(argv):
    code = ("import sys, fastgrok.cli as c\n"
            "try:\n    c.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('torch imported' if 'torch' in sys.modules else 'no torch')")
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.stdout.strip().splitlines()[-1] == "no torch", r.stdout[-500:] + r.stderr[-500:]


# ---- issue 21: a new user's battery --------------------------------------------------------------
@pytest.mark.parametrize("args, match", [
    (["--steps", "1e23"], "steps='1e23' is a float of 2^53 or more"),
    (["--steps", "100000000000000000000000"], "steps=100000000000000000000000 is too many"),
    (["--device", "cuda:abc"], "device='cuda:abc' is not one of"),
    (["--preset", ""], "unknown preset ''"),
    (["--config", ""], "config file '' names no file"),
])
def test_battery_values_are_one_line_errors(capsys, args, match):
    _main_error(capsys, ["config", *args], match)  # `train` resolves its config the same way (below)


def test_train_with_an_empty_preset_trains_nothing(tmp_path, capsys):
    _main_error(capsys, ["train", "--preset", "", "--steps", "2", "--out-dir", str(tmp_path), "--quiet"],
                "unknown preset ''")
    assert not any(tmp_path.iterdir())


def test_resume_with_an_empty_preset_is_refused(tmp_path, capsys):
    _main_error(capsys, ["train", "--resume", str(tmp_path), "--preset", ""], "--resume continues the saved config")
