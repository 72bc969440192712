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
