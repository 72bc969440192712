"""The package installs from a wheel and as an editable install, the kernels (top-level kernels/ in the
checkout) import as fastgrok.kernels from both, and the layout keeps the registry the one door to them.
The wheel (built from the sdist, as pip does from an index) holds every module of the tree, and every
command runs from it in a fresh venv, outside the checkout: an editable install's import finder answers
for any file of the checkout, so the rest of the suite cannot see a package the wheel left out.

The fresh venvs get this environment's site-packages (torch & co.) through a .pth file, never through
the base interpreter (`--system-site-packages` would lend the *base* interpreter's packages, which on a
fresh machine hold no torch). A path in a .pth file is added as it is: .pth files inside it (an editable
install of this checkout) are not run, so fastgrok itself comes only from what the test installs.
"""
import argparse
import ast
import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import tarfile
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


# Everything a source checkout holds that is no part of a build (what .gitignore names, and the VCS folder).
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "runs", "__pycache__",
                                     ".pytest_cache", ".benchmarks")


def _source_modules() -> set[str]:
    """Where each module of the source tree lands in an install: fastgrok/**.py as is, kernels/*.py under
    fastgrok/kernels/. Every folder with an __init__.py is a package the wheel must hold."""
    pkgs = [p.parent for p in (ROOT / "fastgrok").rglob("__init__.py")] + [ROOT / "kernels"]
    mods = set()
    for pkg in pkgs:
        rel = pkg.relative_to(ROOT).as_posix()
        dest = "fastgrok/kernels" if rel == "kernels" else rel
        mods |= {f"{dest}/{f.name}" for f in pkg.glob("*.py")}
    return mods


def _run(args: list, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """A command of the installed program, with no path to the checkout in its environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{args[0]} {' '.join(map(str, args[1:]))}: rc {out.returncode}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The sdist of a clean copy of the checkout, the wheel pip builds from that sdist (as from an index), and a
    fresh venv outside the checkout with that wheel installed (--no-deps; torch & co. through the .pth)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCE)
    dist = tmp / "dist"
    # The build runs in the source folder, whose top-level kernels/ would shadow an installed PyPI package of that
    # name (transformers needs one) whose setuptools plugin (egg_info.writers) the build loads: keep the source
    # folder off sys.path here, and let pip build the wheel in its own isolated environment, as from an index.
    build = ("import os, sys; sys.path[:] = [p for p in sys.path if p not in ('', os.getcwd())]; "
             "import setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))")
    res = subprocess.run([sys.executable, "-c", build, str(dist)], cwd=src, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    sdist = next(dist.glob("fastgrok-*.tar.gz"))
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(sdist)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    wheel = next(dist.glob("fastgrok-*.whl"))
    py = _venv_with_this_env(tmp / "venv")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    work = tmp / "work"  # the commands' working folder: outside the checkout, nothing of it on sys.path
    work.mkdir()
    return dict(sdist=sdist, wheel=wheel, venv=tmp / "venv", py=py, bin=tmp / "venv" / "bin", work=work)


@pytest.mark.slow
def test_wheel_holds_every_package(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    missing = sorted(_source_modules() - names)
    assert not missing, f"the wheel lacks {missing}"
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"fastgrok"}, f"the wheel must hold fastgrok alone, not {sorted(tops)}"


@pytest.mark.slow
def test_sdist_holds_every_package(installed):
    with tarfile.open(installed["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    want = {m.replace("fastgrok/kernels/", "kernels/", 1) for m in _source_modules()}
    assert not sorted(want - names), f"the sdist lacks {sorted(want - names)}"
    assert {"pyproject.toml", "setup.py", "README.md"} <= names


@pytest.mark.slow
def test_import_resolves_to_the_install(installed):
    got = _check(installed["py"], installed["work"])
    site_dir = str(installed["venv"])
    assert got["pkg"].startswith(site_dir) and got["kernels"].startswith(site_dir), got
    assert Path(got["kernels"]).parent == Path(got["pkg"]).parent / "kernels", got
    assert not got["triton"], "import fastgrok (and fastgrok.kernels) must not import triton"
    code = ("import fastgrok.sweep, fastgrok.analysis, fastgrok.bench; "
            "print(fastgrok.sweep.__file__); print(fastgrok.analysis.__file__); print(fastgrok.bench.__file__)")
    files = _run([installed["py"], "-c", code], installed["work"]).stdout.split()
    assert len(files) == 3 and all(f.startswith(site_dir) for f in files), files


def _subcommands() -> list[str]:
    from fastgrok.cli import build_parser
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


@pytest.mark.slow
@pytest.mark.parametrize("command", [[c] for c in _subcommands()] + [[]], ids=lambda c: c[0] if c else "fastgrok")
def test_help_from_the_install(installed, command):
    out = _run([installed["bin"] / "fastgrok", *command, "--help"], installed["work"])
    assert out.stdout.startswith("usage: fastgrok"), out.stdout[:200]


@pytest.mark.slow
def test_paper_help_from_the_install(installed):
    out = _run([installed["bin"] / "fastgrok-paper", "--help"], installed["work"])
    assert out.stdout.startswith("usage: fastgrok-paper"), out.stdout[:200]


@pytest.mark.slow
def test_commands_run_from_the_install(installed):
    """The README's work from the installed program: presets, a tiny train, analyze on it, a one-point sweep
    (local engine: its worker is the venv's python too), --status and plot of it."""
    fg, work = installed["bin"] / "fastgrok", installed["work"]
    assert "paper-d4" in _run([fg, "presets"], work).stdout
    _run([fg, "train", "--preset", "tiny", "--steps", "10", "--out-dir", "runs", "--quiet"], work)
    (run,) = (work / "runs").iterdir()
    assert (run / "best.pt").is_file() and (run / "summary.json").is_file()
    _run([fg, "analyze", run, "--noise-seqs", "64", "--quiet"], work)
    index = json.loads((run / "analysis" / "index.json").read_text())
    assert {"kshot", "grid", "attention", "noise"} <= set(index["analyses"]), index
    assert all((run / "analysis" / f"{name}.json").is_file() for name in index["analyses"])
    _run([fg, "sweep", "sw", "--preset", "tiny", "--steps", "10", "--grid", "seed=1", "--quiet"], work)
    assert "done" in _run([fg, "sweep", "sw", "--status"], work).stdout
    pngs = _run([fg, "plot", "sw"], work).stdout.split()
    assert pngs and all((work / p).is_file() and (work / p).stat().st_size > 0 for p in pngs), pngs


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
