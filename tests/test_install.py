"""The wheel installs into a fresh venv and its packages (the kernels included) import from there."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_in_fresh_venv(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("fastgrok-*.whl"))
    import zipfile
    names = zipfile.ZipFile(wheel).namelist()
    assert "fastgrok/kernels/__init__.py" in names
    assert not any(n.startswith(("kernels/", "tests/", "benchmarks/")) for n in names), "no generic top-level names"
    venv = tmp_path / "venv"
    # system site-packages lend torch & co.; the package itself comes only from the wheel
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    code = ("import fastgrok, fastgrok.kernels, fastgrok.cli, sys; "
            "assert 'site-packages' in fastgrok.__file__, fastgrok.__file__; "
            "assert 'triton' not in sys.modules; print(fastgrok.__version__)")
    out = subprocess.run([str(py), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([str(venv / "bin" / "fastgrok"), "presets"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "paper-d4" in out.stdout, out.stderr
