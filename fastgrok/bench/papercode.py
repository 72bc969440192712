"""The paper's own training loop on this device, timed the way `train_step` is: rows `train_step / paper-code`.

The code is github.com/ablghtianyi/ICL_Modular_Arithmetic, `pre_training/icl_grokking.py`, given as a folder
(`--paper-dir DIR`, holding `pre_training/` and `_src/`) and run unchanged with its defaults (p 29, n_embd
512, 4 heads, batch 1024, bf16 autocast, torch.compile of its DDP model) at `--n_layer` 4 and 2, one process
under torchrun's environment (it wraps the model in DDP). Flags beyond its defaults, none of which touches
a training step: --steps (warm-up + window + one window of margin), --warmup_steps 100 (its learning-rate warm-up, as in the H200
run), --steps_per_record 10^6 and --n_val_step 0 (its evaluations then run no batch: the one at step 1
would compile two inference graphs, ~20 s a depth on an H200, outside the window anyway).

Timing: a global optimizer-step post-hook (`torch.optim.optimizer.register_optimizer_step_post_hook`)
stamps each optimizer step in the child process; after WARMUP steps (compilation, the first DataLoader
batch) the WINDOW steps are cut into windows of PER_WINDOW consecutive steps, and each window's mean is
one sample: median and 20/80 % quantiles, as `train_step`'s windows of 10 (fastgrok/bench/train.py). The
loop syncs every step itself (`loss.item()`), so no sync is added. The H200 timing of 2026-12-04 took steps
101-1200 the same way (its README). Its `_src` imports and `../data`, `../ckpts` writes go to a scratch
folder (links to the code), so DIR is only read. Rows' git_sha is `paper@<its commit>` (stamp.py:
git in DIR, else DIR/PAPER_COMMIT, which benchmarks/gpu_pack.sh writes).
"""
from __future__ import annotations

import importlib.util
import json
import os
import runpy
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .core import Recorder, Timing, row
from .stamp import ROOT, tree_commit

SCRIPT = Path("pre_training") / "icl_grokking.py"
NEEDS = ("schedulefree", "rotary_embedding_torch")  # its imports that the GPU image lacks
DEPTHS = {"paper-d4": 4, "paper-d2": 2}
WARMUP, WINDOW, PER_WINDOW = 50, 200, 10   # optimizer steps: settled by ~step 10 on the H200 (its first_steps_ms)
TOY_STEPS = (3, 6, 2)                      # the CPU rehearsal with a stand-in folder
TOKENS = 1024 * (32 * 3 - 1)               # its defaults: batch 1024, 32 shots of 3 one-digit tokens, inputs x[:, :-1]
TAIL = 30                                  # lines of its log shown when it fails


def check_folder(paper_dir: str | Path | None) -> Path:
    if not paper_dir:
        raise ValueError("paper-code needs --paper-dir DIR, a copy of github.com/ablghtianyi/ICL_Modular_Arithmetic")
    d = Path(paper_dir)
    if not (d / SCRIPT).is_file() or not (d / "_src").is_dir():
        raise ValueError(f"--paper-dir {paper_dir}: no {SCRIPT} and _src/ there (a copy of "
                         "github.com/ablghtianyi/ICL_Modular_Arithmetic)")
    return d.resolve()


def missing_packages() -> list[str]:
    return [m for m in NEEDS if importlib.util.find_spec(m) is None]


def paper_argv(depth: int, device: torch.device, steps: int, lr_warmup: int) -> list[str]:
    argv = [f"--n_layer={depth}", f"--steps={steps}", f"--warmup_steps={lr_warmup}", "--steps_per_record=1000000",
            "--n_val_step=0"]
    if device.type == "cuda":
        return ["--device=cuda"] + argv
    return ["--device=cpu", "--mixed_precision=False", "--dist_backend=gloo"] + argv  # the rehearsal only


def scratch(paper: Path, tmp: Path) -> Path:
    """tmp/_src → DIR/_src, tmp/pre_training/ (the cwd: its "..", "../data", "../ckpts" resolve in tmp)."""
    (tmp / "_src").symlink_to(paper / "_src", target_is_directory=True)
    for d in ("pre_training", "data", "ckpts"):
        (tmp / d).mkdir()
    return tmp / "pre_training"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(port: int) -> dict[str, str]:
    """One rank of torchrun's environment; PYTHONPATH absolute (the child's cwd is the scratch folder)."""
    paths = [str(ROOT)] + [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)), "RANK": "0", "WORLD_SIZE": "1",
            "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}  # no __pycache__ written into DIR


def window_samples(stamps: list[float], warmup: int, window: int, per_window: int) -> list[float]:
    """Seconds per step of each run of `per_window` steps after `warmup`: stamps[i] ends step i + 1."""
    if len(stamps) < warmup + window or warmup < 1:
        raise ValueError(f"{len(stamps)} optimizer steps stamped, {warmup + window} needed")
    return [(stamps[j + per_window] - stamps[j]) / per_window for j in range(warmup - 1, warmup - 1 + window, per_window)]


def run_one(paper: Path, depth: int, device: torch.device, steps: tuple[int, int, int], log: Path) -> dict:
    """The paper's script at one depth in a child process: its stamps (perf_counter seconds) and the
    seconds from its launch to its first optimizer step (imports, data, DDP, compilation)."""
    warmup, window, per_window = steps
    with tempfile.TemporaryDirectory(prefix="fastgrok-paper-code-") as tmp:
        cwd = scratch(paper, Path(tmp))
        out = Path(tmp) / "stamps.json"
        total = warmup + window + per_window  # a margin: GradScaler skips the step (and its hook) on an inf
        cmd = [sys.executable, "-m", "fastgrok.bench.papercode", str(out), str(paper / SCRIPT),
               *paper_argv(depth, device, total, min(100, total // 2))]
        with open(log, "w") as f:
            f.write(" ".join(cmd) + "\n")
            f.flush()
            launched = time.time()
            proc = subprocess.Popen(cmd, cwd=cwd, env=child_env(_free_port()), stdout=f, stderr=subprocess.STDOUT)
            try:
                rc = proc.wait()
            except KeyboardInterrupt:  # gpu_check's limit: the child got the SIGINT too and writes its stamps
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                raise
        res = json.loads(out.read_text()) if out.is_file() else {"stamps": []}
        if res["stamps"]:
            res["first"] = res["wall_t0"] - launched + res["stamps"][0]
        return {**res, "rc": rc}


def _tail(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines()
    return "\n".join("    " + ln[:300] for ln in lines[-TAIL:])


def run(device: torch.device, rec: Recorder, *, quick: bool = False, compile: str = "main",
        paper_dir: str | None = None, configs: tuple[str, ...] | None = None, toy: bool = False) -> None:
    """The paper's loop at each config (default paper-d4, paper-d2)."""
    paper = check_folder(paper_dir)
    configs = tuple(configs or DEPTHS)
    if unknown := [c for c in configs if c not in DEPTHS]:
        raise ValueError(f"paper-code config(s) {', '.join(unknown)} not one of {', '.join(DEPTHS)}")
    if missing := missing_packages():
        raise ValueError(f"paper-code: the paper's code imports {', '.join(missing)}, absent here: carry them as "
                         "wheels (gpu_check.sh --wheels DIR; docs/benchmarks.md, 'The paper's code')")
    steps = TOY_STEPS if toy or device.type != "cuda" else (WARMUP, WINDOW, PER_WINDOW)
    sha = "paper@" + tree_commit(paper, "PAPER_COMMIT", env_var=None)
    rec.log(f"paper-code: {paper / SCRIPT} ({sha}), {steps[0]} warm-up + {steps[1]} timed optimizer steps per depth")
    logs = Path(tempfile.mkdtemp(prefix="fastgrok-paper-code-logs-"))
    for name in configs:
        log = logs / f"{name}.log"
        t0 = time.perf_counter()
        res = run_one(paper, DEPTHS[name], device, steps, log)
        took = time.perf_counter() - t0
        stamps = res.get("stamps", [])
        if res["rc"] != 0 or len(stamps) < steps[0] + steps[1]:
            rec.note(f"paper-code: {name} failed: exit {res['rc']}, {len(stamps)} optimizer steps after {took:.0f} s; "
                     f"its log ({log}) ends:\n{_tail(log)}")
            continue
        t = Timing.of(window_samples(stamps, *steps))
        r = lambda value, unit, scale=1.0, mode="step": {  # noqa: E731
            **row("train_step", "paper-code", mode, "config", name, value, unit, device, scale), "git_sha": sha}
        first = res["first"]
        rec.add([r(t, "ms", 1e3), r(t.rate(1.0), "steps/s"), r(t.rate(TOKENS), "tokens/s"),
                 r(Timing(first, first, first), "s", mode="to first step")])
        rec.log(f"paper-code: {name} done in {took:.0f} s (first optimizer step at {first:.1f} s)")


def _child(out: str, script: str, argv: list[str]) -> None:
    """In the child: stamp every optimizer step, run the script as __main__, write the stamps (also when
    it is interrupted or exits)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook  # global: every optimizer's step
    wall_t0, t0 = time.time(), time.perf_counter()
    stamps: list[float] = []
    register_optimizer_step_post_hook(lambda opt, args, kwargs: stamps.append(time.perf_counter()))
    sys.argv = [script, *argv]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        Path(out).write_text(json.dumps({"wall_t0": wall_t0, "stamps": [s - t0 for s in stamps]}))


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], sys.argv[3:])
