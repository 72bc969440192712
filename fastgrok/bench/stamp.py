"""Which commit a benchmark row measured, also from a copy of the tree that has no `.git`.

The GPU machines run a copy of the working tree, sometimes inside another repository: asking git
there answers with that repository's commit. So, in order:
1. `$FASTGROK_COMMIT`, when set and not empty;
2. git, only where the tree is its own repository (git's top level is the tree's root);
3. the file `FASTGROK_COMMIT` at the tree's root, which `benchmarks/gpu_pack.sh` writes beside a copy;
4. "unknown".
The same order, with another file and variable, stamps a foreign tree (the paper's code: `PAPER_COMMIT`).
Torch-free: `python -m fastgrok.bench.stamp [ROOT]` prints the stamp (gpu_check.sh's first line).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent  # the tree holding fastgrok/
STAMP_FILE = "FASTGROK_COMMIT"
UNKNOWN = "unknown"


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit(root: Path) -> str | None:
    """Short sha (+ "-dirty" when files git tracks or does not ignore differ from it) of the repository whose
    root is `root` (gpu_pack.sh packs those files);
    None when git is missing or `root` is not a repository's top level (a copy inside another one)."""
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root.resolve():
        return None
    sha = _git(root, "rev-parse", "--short", "HEAD")
    if not sha:
        return None
    dirty = _git(root, "status", "--porcelain", "--untracked-files=normal")
    return sha + ("-dirty" if dirty else "")


def read_stamp(path: Path) -> str | None:
    """The first line of a stamp file, None when absent or empty."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text.splitlines()[0].strip() if text else None


def tree_commit(root: str | Path = ROOT, stamp_file: str = STAMP_FILE, env_var: str | None = STAMP_FILE) -> str:
    """The commit of the tree at `root` (see the module's docstring for the order asked)."""
    root = Path(root)
    if env_var and (given := os.environ.get(env_var, "").strip()):
        return given
    return git_commit(root) or read_stamp(root / stamp_file) or UNKNOWN


if __name__ == "__main__":
    print(tree_commit(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT))
