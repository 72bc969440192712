"""The package installs from a wheel and as an editable install, the kernels (top-level kernels/ in the
checkout) import as fastgrok.kernels from both, and the layout keeps the registry the one door to them.

The fresh venvs get this environment's site-packages (torch & co.) through a .pth file, never through
the base interpreter (`--system-site-packages` would lend the *base* interpreter's packages, which on a
fresh machine hold no torch). A path in a .pth file is added as it is: .pth files inside it (an editable
install of this checkout) are not run, so fastgrok itself comes only from what the test installs.
"""
import ast
import json
import re
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CHECK = ("import fastgrok, fastgrok.kernels, fastgrok.kernels._common, fastgrok.bench.cli, fastgrok.cli, sys, json; "
         "print(json.dumps(dict(pkg=fastgrok.__file__, kernels=fastgrok.kernels.__file__, "
         "triton='triton' in sys.modules, version=fastgrok.__version__)))")


def _venv_with_this_env(path: Path) -> Path:
    """A venv from the base interpreter whose sys.path also holds this environment's site-packages."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, capture_output=True, timeout=300)
    py = path / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    ours = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    Path(purelib, "_fastgrok_test_deps.pth").write_text("".join(f"{p}\n" for p in dict.fromkeys(ours)))
    return py


def _check(py: Path, cwd: Path) -> dict:
    out = subprocess.run([str(py), "-c", CHECK], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_wheel_in_fresh_venv(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("fastgrok-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "fastgrok/kernels/__init__.py" in names and "fastgrok/kernels/rope_attention.py" in names
    assert "fastgrok/bench/cli.py" in names
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"fastgrok"}, f"the wheel must hold fastgrok alone, not {sorted(tops)}"
    py = _venv_with_this_env(tmp_path / "venv")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    got = _check(py, tmp_path)
    site_dir = str(tmp_path / "venv")
    assert got["pkg"].startswith(site_dir) and got["kernels"].startswith(site_dir), got
    assert Path(got["kernels"]).parent == Path(got["pkg"]).parent / "kernels", got
    assert not got["triton"], "import fastgrok (and fastgrok.kernels) must not import triton"
    out = subprocess.run([str(tmp_path / "venv" / "bin" / "fastgrok"), "presets"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and "paper-d4" in out.stdout, out.stderr


@pytest.mark.slow
def test_editable_install_maps_kernels(tmp_path):
    py = _venv_with_this_env(tmp_path / "venv")
    # pip's isolated build takes setuptools from the package index, as `pip install -e .` does in the README
    res = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got = _check(py, tmp_path)  # run from outside the checkout: only the install can find the package
    assert got["pkg"] == str(ROOT / "fastgrok" / "__init__.py"), got
    assert got["kernels"] == str(ROOT / "kernels" / "__init__.py"), got
    assert not got["triton"]


def test_source_tree_finds_kernels(tmp_path):
    """PYTHONPATH=<checkout>, no install (the GPU machines run the tree so). -S keeps an editable install's
    finder out; this environment's site-packages are added as plain paths for torch."""
    deps = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    code = (f"import sys; sys.path[:0] = [{str(ROOT)!r}]; sys.path += {deps!r}; import fastgrok.kernels; "
            "print(fastgrok.kernels.__file__); assert 'triton' not in sys.modules")
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(ROOT / "kernels" / "__init__.py")


def test_layout():
    assert (ROOT / "kernels" / "__init__.py").is_file() and not (ROOT / "fastgrok" / "kernels").exists()
    assert (ROOT / "fastgrok" / "bench" / "__init__.py").is_file()
    assert not list((ROOT / "fastgrok").glob("bench*.py")) and not (ROOT / "fastgrok" / "hostpipe.py").exists()


def test_only_the_registry_imports_the_kernels():
    pattern = re.compile(r"^\s*(from\s+(fastgrok)?\.+kernels\b|from\s+fastgrok\s+import\s+kernels\b|"
                         r"import\s+fastgrok\.kernels\b)|[\"']fastgrok\.kernels[.:]", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "fastgrok").rglob("*.py")
                 if p.name != "backends.py" and pattern.search(p.read_text())]
    assert not offenders, f"only fastgrok/backends.py may import fastgrok.kernels: {offenders}"


def test_kernels_import_only_torch_and_triton():
    """kernels/ depends on torch, triton and the standard library only: every import, those inside
    functions and `if TYPE_CHECKING:` included (a kernel takes tensors and ints, never fastgrok's types)."""
    for path in (ROOT / "kernels").glob("*.py"):
        nodes = list(ast.walk(ast.parse(path.read_text())))
        names = [a.name for n in nodes if isinstance(n, ast.Import) for a in n.names]
        names += [n.module for n in nodes if isinstance(n, ast.ImportFrom) and n.level == 0]
        roots = {i.split(".")[0] for i in names}
        assert roots <= {"torch", "triton"} | set(sys.stdlib_module_names), (path.name, roots)
