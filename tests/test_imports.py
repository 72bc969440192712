"""The shape of the code (#20): no import cycle in fastgrok (top-level imports and those inside functions
alike), the sweep subpackage's layers importing one way, and one module naming a run folder's files.

Checked on the source (ast), so a lazy import inside a function counts like any other: it is read, not run.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"fastgrok": ROOT / "fastgrok", "fastgrok.kernels": ROOT / "kernels"}
# fastgrok.sweep's layers, lowest first: a module imports only from those before it, and results and plot
# (the readers) never from the worker, the engines or the driver.
SWEEP_LAYERS = ("grid", "spec", "state", "results", "plot", "worker", "engines", "driver")
SWEEP_READERS_AVOID = {"results": {"worker", "engines", "plot", "driver"}, "plot": {"worker", "engines", "driver"}}
RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.pt", "summary.json", "env.json", ".lock")


def _modules() -> dict[str, Path]:
    """Every module of fastgrok (kernels/ is fastgrok.kernels) → its file."""
    out = {}
    for pkg, base in PACKAGES.items():
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = path
    return out


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The fastgrok modules that `name` imports anywhere in its file."""
    package = name if _is_package(path) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            targets = [f"{base_name}.{a.name}" if f"{base_name}.{a.name}" in modules else base_name
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # `import fastgrok.sweep.spec.x`-like: the longest module named
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_sees_a_cycle_and_a_lazy_import(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]] and _cycles({"a": {"b"}, "b": set()}) == []
    modules = {"fastgrok.x": tmp_path / "x.py", "fastgrok.y": tmp_path / "y.py", "fastgrok.z": tmp_path / "z.py"}
    modules["fastgrok.x"].write_text("def f():\n    from .y import thing\n    from . import z\n")
    assert _imports("fastgrok.x", modules["fastgrok.x"], modules) == {"fastgrok.y", "fastgrok.z"}


def test_no_import_cycle_in_fastgrok():
    graph = _graph()
    assert len(graph) > 40 and "fastgrok.sweep.driver" in graph and "fastgrok.kernels.rope_attention" in graph
    assert _cycles(graph) == []


def test_the_sweep_layers_import_one_way():
    graph = _graph()
    for i, layer in enumerate(SWEEP_LAYERS):
        inside = {m.rpartition(".")[2] for m in graph[f"fastgrok.sweep.{layer}"] if m.startswith("fastgrok.sweep.")}
        assert inside <= set(SWEEP_LAYERS[:i]), f"fastgrok.sweep.{layer} imports {sorted(inside)}"
        assert not inside & SWEEP_READERS_AVOID.get(layer, set()), f"fastgrok.sweep.{layer} imports {sorted(inside)}"
    assert not [m for m in graph if m.startswith("fastgrok.sweep.") and "fastgrok.sweep" in graph[m]]
    gone = ("fastgrok.engines", "fastgrok.results", "fastgrok.plot", "fastgrok.grid", "fastgrok.kernels.report",
            "fastgrok.kernels.rope_attention_v1")
    assert not [m for m in gone if m in graph]


def _retyped_run_files(path: Path, root: Path = ROOT) -> list[str]:
    """String literals (docstrings and prose aside) that name a run folder's file: "last.pt", ".../last.pt"."""
    tree = ast.parse(path.read_text(), str(path))
    prose = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            if any(node.value == f or node.value.endswith("/" + f) for f in RUN_FILES):
                hits.append(f"{path.relative_to(root)}:{node.lineno} {node.value!r}")
    return hits


def test_only_runfolder_names_the_run_folders_files(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('"""last.pt"""\nx = run / "last.pt"\ny = f"{run}/metrics.jsonl"\nz = "see last.pt"\n')
    assert [h.split(" ", 1)[1] for h in _retyped_run_files(probe, tmp_path)] == ["'last.pt'", "'/metrics.jsonl'"]
    files = [p for base in (ROOT / "fastgrok", ROOT / "kernels", ROOT / "benchmarks") for p in base.rglob("*.py")
             if p != ROOT / "fastgrok" / "runfolder.py"]
    assert len(files) > 40
    assert [h for p in files for h in _retyped_run_files(p)] == []



def test_submodules_are_attributes_after_a_plain_import():
    """`import fastgrok` stays torch-free; `fastgrok.sweep.open_sweep` and the like then work (#21)."""
    import os
    import subprocess
    import sys
    code = ("import sys, fastgrok\n"
            "assert 'torch' not in sys.modules, 'import fastgrok imported torch'\n"
            "assert 'sweep' in dir(fastgrok) and 'distributed' in dir(fastgrok)\n"
            "assert callable(fastgrok.distributed.launched) and callable(fastgrok.sweep.open_sweep)\n"
            "for name in fastgrok._SUBMODULES:\n"
            "    assert getattr(fastgrok, name) is sys.modules['fastgrok.' + name], name\n"
            "assert fastgrok.train is fastgrok.trainer.train and fastgrok.Config is fastgrok.config.Config\n"
            "try:\n    fastgrok.no_such_module\nexcept AttributeError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "module 'fastgrok' has no attribute 'no_such_module'"
    pkg = ROOT / "fastgrok"
    on_disk = {p.stem for p in pkg.glob("*.py")} | {p.parent.name for p in pkg.glob("*/__init__.py")}
    import fastgrok
    assert set(fastgrok._SUBMODULES) <= on_disk
