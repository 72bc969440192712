"""The battery of issue 21: what came after `fastgrok train` — `fastgrok sweep`, `fastgrok plot`, the paper's
command line, `fastgrok bench`'s arguments and the Python API — tried as a new user would, each case in its
own process, as the user runs it. Prints one line per case that is not clean and the counts.

    python benchmarks/battery_surfaces.py [--out bench_results/battery_surfaces.csv]   # ≈ 5 min on 2 cores

(issue 33 added the cases of its battery: analyze, sweep/plot, fastgrok-paper's names, the Python API.)

clean: bad input ends with one line on stderr (`fastgrok: error: …`, or argparse's usage and error lines),
exit 2, and leaves nothing behind; a Python call raises ValueError/TypeError naming what is wrong.
traceback: a traceback, or another exception type from the API. silent: accepted where it should have
been refused. left: refused, but a file or folder was left (or a setting saved) that should not be.
unclear: refused without a one-line message. hang: no answer within the time limit.
Rows (case, outcome, commit) are appended to the CSV: run it on two commits to compare them.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from fastgrok.runfolder import CONFIG, LAST, METRICS, SUMMARY  # noqa: E402  (the run folder's file names, named there once)

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
TIMEOUT_S = int(os.environ.get("BATTERY_TIMEOUT_S", "60"))   # a case that trains past this hangs


@dataclass
class Case:
    name: str
    argv: list[str] | None = None         # `python -m fastgrok …`
    code: str | None = None               # or `python -c …` (an API call; prints CLEAN on the expected error)
    as_cli: bool = False                  # code that runs the CLI: judged as a command
    ok: Callable[[Path], str | None] | None = None     # exit 0 expected; returns what is wrong, or None
    cli: str = "fastgrok"                 # or "fastgrok.paper"
    setup: Callable[[Path], None] | None = None
    left: Callable[[Path], str | None] | None = None   # what must not be there afterwards


def _tiny_sweep(d: Path) -> None:
    _run(["sweep", str(d / "sw"), "--preset", "tiny", "--steps", "10", "--eval-every", "10", "--seeds", "1",
          "--no-plots", "--quiet"], d)


def _no(rel: str) -> Callable[[Path], str | None]:
    return lambda d: f"{rel} exists" if (d / rel).exists() else None


def _write(rel: str, text: str | bytes) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return setup


def _both(*fs: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        for f in fs:
            f(d)
    return setup


def _metrics(line: str) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        _tiny_sweep(d)
        run = next((d / "sw" / "runs").iterdir())
        (run / METRICS).write_text(line + "\n" + (run / METRICS).read_text())
    return setup


def _damage_named(d: Path) -> str | None:
    """--status of a sweep with a damaged metrics.jsonl: it answers, and its table names the damage."""
    text = (d / "sw" / "results.csv").read_text() if (d / "sw" / "results.csv").is_file() else ""
    return None if ("corrupt" in text or "lacks" in text) else "the damaged metrics.jsonl is not named"


def _saved_stop(d: Path) -> str | None:
    spec = json.loads((d / "sw" / "sweep.json").read_text())
    return "stop_when_settled=0 was saved" if spec.get("stop_when_settled") == 0 else None


def _py(code: str) -> Callable[[Path], None]:
    """Set-up by a Python snippet run in the case's folder (its path is sys.argv[1])."""
    def setup(d: Path) -> None:
        subprocess.run([sys.executable, "-c", code, str(d)], cwd=d, env=ENV, check=True, capture_output=True,
                       timeout=TIMEOUT_S)
    return setup


def _tiny_run(d: Path) -> None:
    _run(["train", "--preset", "tiny", "--steps", "10", "--eval-every", "10", "--out-dir", str(d), "--run-name", "r",
          "--quiet"], d)


_EDIT_LAST = "import sys, torch\np = sys.argv[1] + '/r/" + LAST + "'\ns = torch.load(p, weights_only=True)\n{edit}\ntorch.save(s, p)\n"
_N_VAR_3 = _both(_tiny_run, _py(_EDIT_LAST.format(
    edit="s['config']['task'].update(n_var=3, selection='random', n_pl=None, n_id=8)")))
_NAN = _both(_tiny_run, _py(_EDIT_LAST.format(edit="s['model']['transformer.wte.weight'][0, 0] = float('nan')")))
PAPER_NAME = ("noembdFalse_paraleTrue_pltask8_rope_decoder_p5_base5_row6_ntask8_nvar2_dsplitTrue_dfrac60.0_relu_n32_h2_"
              "d1_lctx512_I1_dI0_adamw_bs16_t10_T10_Tw3_lr1.00e-03_wd2.00e+00.pth")
_PAPER_CKPT = _py("import sys\nfrom fastgrok import GPT, Config, save_reference_checkpoint\n"
                  f"save_reference_checkpoint(GPT(Config.preset('tiny', vocab_size=23).model), sys.argv[1] + '/{PAPER_NAME}')")
PAPER_TINY = ["--device=cpu", "--mixed_precision=False", "--p=5", "--base=5", "--n_tasks_pl=2", "--data_pct=60",
              "--n_point_per_row=6", "--n_layer=1", "--n_embd=32", "--n_head=2", "--bs=16", "--eval_bs=16",
              "--n_val_step=1", "--steps=4", "--warmup_steps=1", "--steps_per_record=2", "--n_ckpts=1", "--lr=1e-3",
              "--out_dir={d}", "--quiet"]


def _first_paper_run(d: Path) -> None:
    _run(PAPER_TINY, d, "fastgrok.paper")
    for sub in ("data", "ckpts"):
        shutil.copytree(d / sub, d / f"first-{sub}")


def _paper_kept(d: Path) -> str | None:
    """The first run's .tab and .pth are as it left them, and the second run's are beside them."""
    for sub in ("data", "ckpts"):
        for f in (d / f"first-{sub}").iterdir():
            if (d / sub / f.name).read_bytes() != f.read_bytes():
                return f"{sub}/{f.name} was overwritten"
        if len(list((d / sub).iterdir())) != 2:
            return f"{sub}/ does not hold both runs' files"
    return None


def _reason(says: str) -> Callable[[Path], str | None]:
    """--status answered, and the point's row names the damage."""
    def ok(d: Path) -> str | None:
        rows = [json.loads(line) for line in (d / "sw" / "results.jsonl").read_text().splitlines()]
        return None if any(says in (r.get("reason") or "") for r in rows) else f"no row says {says!r}"
    return ok


def _sw_run(rel: str) -> Callable[[Path], None]:
    """Damage a file of the (one) run of the tiny sweep: empty it, or make it '{'."""
    def setup(d: Path) -> None:
        _tiny_sweep(d)
        path = next((d / "sw" / "runs").iterdir()) / rel
        path.write_text("" if rel == METRICS else "{")
    return setup


SW = ["sweep", "{d}/sw", "--preset", "tiny", "--no-plots", "--quiet"]
API = "import sys\ntry:\n{body}\nexcept (ValueError, TypeError) as e:\n    print('CLEAN', type(e).__name__, e)\n"


def _api(body: str) -> str:
    return API.format(body="\n".join("    " + line for line in body.strip().splitlines()))


CASES = [
    # ---- sweep: grids and options
    Case("grid range with nan", SW + ["--grid", "alpha=nan:1:0.1"], left=_no("sw")),
    Case("grid range with an inf step", SW + ["--grid", "alpha=0:1:inf"], left=_no("sw")),
    Case("grid range of 10^5 values", SW + ["--grid", "lr=0:1:0.00001"], left=_no("sw")),
    Case("grid of 10^6 points", SW + ["--grid", "seed=1:1000:1", "--grid", "lr=0.001:1:0.001"], left=_no("sw")),
    Case("grid axis without values", SW + ["--grid", "alpha"], left=_no("sw")),
    Case("grid axis of an unknown field", SW + ["--grid", "alpah=0.5"], left=_no("sw")),
    Case("grid axis repeated", SW + ["--grid", "seed=1", "--seeds", "2"], left=_no("sw")),
    Case("grid empty range", SW + ["--grid", "alpha=0.8:0.2:0.1"], left=_no("sw")),
    Case("a fixed flag that is also an axis", SW + ["--grid", "seed=1,2", "--seed", "3"], left=_no("sw")),
    Case("no grid at all", SW, left=_no("sw")),
    Case("--jobs 0", SW + ["--seeds", "1", "--jobs", "0"], left=_no("sw")),
    Case("--engine lsf", SW + ["--seeds", "1", "--engine", "lsf"], left=_no("sw")),
    Case("--stop-when-settled 0, new folder", SW + ["--seeds", "1", "--stop-when-settled", "0"], left=_no("sw")),
    Case("--stop-when-settled 0, existing sweep", ["sweep", "{d}/sw", "--stop-when-settled", "0"], setup=_tiny_sweep,
         left=_saved_stop),
    Case("--engine slurm without --partition", SW + ["--seeds", "1", "--engine", "slurm"], left=_no("sw")),
    Case("--engine slurm --time 1", SW + ["--seeds", "1", "--engine", "slurm", "--partition", "x", "--time", "1"],
         left=_no("sw")),
    Case("--engine slurm --time 6h", SW + ["--seeds", "1", "--engine", "slurm", "--partition", "x", "--time", "6h"],
         left=_no("sw")),
    Case("a changed base config", SW + ["--seeds", "1", "--steps", "20"], setup=_tiny_sweep),
    Case("a shrunk grid", SW + ["--seeds", "2", "--steps", "10", "--eval-every", "10"], setup=_tiny_sweep),
    Case("a sweep folder that is a file", SW + ["--seeds", "1"], setup=_write("sw", "x")),
    Case("a sweep folder holding other files", SW + ["--seeds", "1"], setup=_write("sw/notes.txt", "x")),
    Case("a corrupt sweep.json", ["sweep", "{d}/sw", "--status"], setup=_write("sw/sweep.json", "{")),
    Case("a non-UTF-8 sweep.json", ["sweep", "{d}/sw", "--status"], setup=_write("sw/sweep.json", b"\xff\xfe{")),
    Case("--status of a folder that is not a sweep", ["sweep", "{d}", "--status"]),
    # ---- sweep: TOML
    Case("TOML not valid", ["sweep", "{d}/sw", "--config", "{d}/g.toml"], setup=_write("g.toml", "a = = 1"),
         left=_no("sw")),
    Case("TOML grid not a table", ["sweep", "{d}/sw", "--config", "{d}/g.toml"],
         setup=_write("g.toml", 'preset = "tiny"\ngrid = 3\n'), left=_no("sw")),
    Case("TOML not UTF-8", ["sweep", "{d}/sw", "--config", "{d}/g.toml"], setup=_write("g.toml", b"seed = 1 # \xff\n"),
         left=_no("sw")),
    Case("TOML field both fixed and in [grid]", ["sweep", "{d}/sw", "--config", "{d}/g.toml"],
         setup=_write("g.toml", 'preset = "tiny"\nseed = 4\n[grid]\nseed = [1, 2]\n'), left=_no("sw")),
    Case("TOML field in the wrong section", ["sweep", "{d}/sw", "--config", "{d}/g.toml"],
         setup=_write("g.toml", 'preset = "tiny"\n[model]\nlr = 1\n[grid]\nseed = [1]\n'), left=_no("sw")),
    Case("TOML that is a folder", ["sweep", "{d}/sw", "--config", "{d}"], left=_no("sw")),
    # ---- damaged run files under a sweep
    Case("--status with a non-object line in metrics.jsonl", ["sweep", "{d}/sw", "--status"], setup=_metrics("[1, 2]"), ok=_damage_named),
    Case("--status with a garbage line in metrics.jsonl", ["sweep", "{d}/sw", "--status"], setup=_metrics("garbage"), ok=_damage_named),
    Case("--status with a record without sets", ["sweep", "{d}/sw", "--status"], setup=_metrics('{"step": 5}'), ok=_damage_named),
    # ---- plot
    Case("plot a sweep with no evaluation", ["plot", "{d}/sw"],
         setup=lambda d: _run(["sweep", str(d / "sw"), "--preset", "tiny", "--seeds", "1", "--status"], d)),
    Case("plot a folder that is neither", ["plot", "{d}"]),
    Case("plot a missing folder", ["plot", "{d}/nope"]),
    Case("plot a run with a record without sets", ["plot", "{d}/r"],
         setup=_both(_write(f"r/{CONFIG}", "{}"), _write(f"r/{METRICS}", '{"step": 5}\n'))),
    Case("plot without matplotlib", code="import sys; sys.modules['matplotlib'] = None\n"
         "from fastgrok.cli import main; sys.exit(main(['plot', sys.argv[1] + '/sw']))", setup=_tiny_sweep,
         as_cli=True),
    Case("sweep --preset ''", ["sweep", "{d}/sw", "--preset", "", "--seeds", "1"], left=_no("sw")),
    # ---- train input the battery of issue 9 did not have
    Case("--steps 1e23", ["train", "--preset", "tiny", "--steps", "1e23", "--out-dir", "{d}"]),
    Case("--device cuda:abc", ["train", "--preset", "tiny", "--device", "cuda:abc", "--out-dir", "{d}"]),
    Case("--preset ''", ["train", "--preset", "", "--out-dir", "{d}"]),
    # ---- the paper's command line
    Case("paper --bs=0", ["--bs=0", "--out_dir={d}"], cli="fastgrok.paper"),
    Case("paper --num_steps=-1", ["--num_steps=-1", "--out_dir={d}"], cli="fastgrok.paper"),
    Case("paper --p=x", ["--p=x", "--out_dir={d}"], cli="fastgrok.paper"),
    # ---- bench arguments
    Case("bench an unknown suite", ["bench", "nosuch"]),
    Case("bench --compile bogus", ["bench", "kernels", "--compile", "bogus"]),
    # ---- the Python API
    Case("import fastgrok; fastgrok.sweep.open_sweep", code=_api(
        "import fastgrok\nfastgrok.sweep.open_sweep\nprint('CLEAN works')")),
    Case("import fastgrok; fastgrok.distributed.launched", code=_api(
        "import fastgrok\nfastgrok.distributed.launched\nprint('CLEAN works')")),
    Case("open_sweep with an empty grid", code=_api(
        "from fastgrok import Config\nfrom fastgrok.sweep import open_sweep\n"
        "open_sweep(sys.argv[1] + '/sw', Config.preset('tiny'), {})")),
    Case("SweepOptions(jobs=0)", code=_api(
        "from fastgrok import Config\nfrom fastgrok.sweep import SweepOptions, open_sweep, parse_grid, run_sweep\n"
        "s, _ = open_sweep(sys.argv[1] + '/sw', Config.preset('tiny'), parse_grid(['seed=1']))\n"
        "run_sweep(s, SweepOptions(jobs=0, plots=False))")),
    Case("SlurmOptions without a partition", code=_api(
        "from fastgrok.sweep import SlurmOptions\nSlurmOptions().check()")),
    # ---- issue 33: analyze
    Case("analyze an n_var = 3 last.pt in an n_var = 2 run", ["analyze", "{d}/r", "--quiet"], setup=_N_VAR_3,
         left=_no("r/analysis")),
    Case("analyze NaN weights, --what kshot,grid,attention,noise", ["analyze", "{d}/r", "--what",
         "kshot,grid,attention,noise", "--quiet"], setup=_NAN, left=_no("r/analysis")),
    Case("analyze NaN weights, --what embedding", ["analyze", "{d}/r", "--what", "embedding", "--quiet"], setup=_NAN,
         left=_no("r/analysis")),
    Case("analyze --noise-seqs 10^9", ["analyze", "{d}/r", "--noise-seqs", "1000000000"], setup=_tiny_run,
         left=_no("r/analysis")),
    Case("analyze --device cuda (on a CPU-only torch)", ["analyze", "{d}/r", "--device", "cuda"], setup=_tiny_run),
    Case("analyze --device cuda:99", ["analyze", "{d}/r", "--device", "cuda:99"], setup=_tiny_run),
    Case("analyze --out ''", ["analyze", "{d}/r", "--out", "", "--what", "kshot"], setup=_tiny_run,
         left=_no("kshot.json")),
    Case("analyze --seed -1", ["analyze", "{d}/r", "--seed", "-1"], setup=_tiny_run, left=_no("r/analysis")),
    Case("analyze a paper name …p5… with --p 7", ["analyze", "{d}/" + PAPER_NAME, "--p", "7"], setup=_PAPER_CKPT),
    Case("analyze a paper name …relu… with --mlp gelu", ["analyze", "{d}/" + PAPER_NAME, "--mlp", "gelu"],
         setup=_PAPER_CKPT),
    Case("analyze --n-shots 200000 on a paper checkpoint", ["analyze", "{d}/" + PAPER_NAME, "--n-shots", "200000"],
         setup=_PAPER_CKPT),
    Case("analyze a run's last.pt given as a file", ["analyze", "{d}/r/" + LAST, "--what", "kshot", "--no-figures",
         "--quiet"], setup=_tiny_run, ok=lambda d: None if (d / "r/analysis/index.json").is_file() else "no index.json"),
    # ---- issue 33: sweep and plot
    Case("--status --grid", ["sweep", "{d}/sw", "--status", "--grid", "seed=2"], setup=_tiny_sweep),
    Case("--status of a finished point with an emptied metrics.jsonl", ["sweep", "{d}/sw", "--status"],
         setup=_sw_run(METRICS), ok=_reason("holds no evaluation")),
    Case("--status of a point with a corrupt summary.json", ["sweep", "{d}/sw", "--status"],
         setup=_sw_run(SUMMARY), ok=_reason(f"{SUMMARY} is damaged")),
    Case("sweep --out-dir", SW + ["--seeds", "1", "--out-dir", "{d}/x"], left=_no("sw")),
    Case("plot RUN --out ''", ["plot", "{d}/sw", "--out", ""], setup=_tiny_sweep, left=_no("phase_diagram.png")),
    Case("plot a sweep whose one run has a damaged line", ["plot", "{d}/sw"], setup=_metrics("garbage")),
    Case("--engine slurm without sbatch on PATH", code="import os, sys\nos.environ['PATH'] = sys.argv[1]\n"
         "from fastgrok.cli import main\nsys.exit(main(['sweep', sys.argv[1] + '/sw', '--preset', 'tiny', '--seeds', "
         "'1', '--engine', 'slurm', '--partition', 'x', '--no-plots']))", as_cli=True, left=_no("sw")),
    # ---- issue 33: the paper's command line
    Case("paper: a second run differing only in --beta1", PAPER_TINY + ["--beta1=0.5"], cli="fastgrok.paper",
         setup=_first_paper_run, ok=_paper_kept),
    Case("fastgrok paper (the subcommand) --bs=0", ["paper", "--bs=0", "--out_dir={d}"]),
    # ---- issue 33: the Python API
    Case("train(on_step=5)", code=_api("from fastgrok import Config, train\n"
         "train(Config.preset('tiny', out_dir=sys.argv[1]), on_step=5)")),
    Case("train(quiet='no')", code=_api("from fastgrok import Config, train\n"
         "train(Config.preset('tiny', out_dir=sys.argv[1], steps=2), quiet='no')")),
    Case("GPT forward with a token id ≥ vocab", code=_api("import torch\nfrom fastgrok import GPT, Config\n"
         "GPT(Config.preset('tiny').model)(torch.full((1, 5), 99))")),
    Case("GPT forward with a float index", code=_api("import torch\nfrom fastgrok import GPT, Config\n"
         "GPT(Config.preset('tiny').model)(torch.zeros(1, 5))")),
    Case("ops.embedding(fallback=True) out of range", code=_api("import torch\nfrom fastgrok import ops\n"
         "ops.embedding(torch.tensor([[100]]), torch.randn(10, 4), fallback=True)")),
    Case("save_reference_checkpoint('model', …)", code=_api("from fastgrok import save_reference_checkpoint\n"
         "save_reference_checkpoint('model', sys.argv[1] + '/x.pth')")),
    Case("Options(shots='3')", code=_api("from fastgrok.analysis import Options\nOptions(shots='3')")),
    Case("open_sweep(…, {'n_pl': 1})", code=_api("from fastgrok import Config\nfrom fastgrok.sweep import open_sweep\n"
         "open_sweep(sys.argv[1] + '/sw', Config.preset('tiny'), {'n_pl': 1})")),
    Case("open_sweep given a dict config", code=_api("from fastgrok.sweep import open_sweep\n"
         "open_sweep(sys.argv[1] + '/sw', {'p': 5}, {'seed': [1]})")),
    Case("TrainConfig(out_dir=3)", code=_api("from fastgrok.config import TrainConfig\nTrainConfig(out_dir=3)")),
    Case("backends.register('embedding', 'num', 42)", code=_api("from fastgrok import backends\n"
         "backends.register('embedding', 'num', 42)")),
    Case("ops.patch(None)", code=_api("from fastgrok import ops\nops.patch(None)")),
    Case("RopeSelfAttention(64, 0)", code=_api("from fastgrok import ops\nops.RopeSelfAttention(64, 0)")),
]


def _run(argv: list[str], d: Path, cli: str = "fastgrok") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", cli, *[a.replace("{d}", str(d)) for a in argv]], cwd=d, env=ENV,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def outcome(case: Case) -> tuple[str, str]:
    d = Path(tempfile.mkdtemp(prefix="fastgrok-battery-"))
    try:
        if case.setup:
            case.setup(d)
        try:
            if case.code is not None:
                r = subprocess.run([sys.executable, "-c", case.code, str(d)], cwd=d, env=ENV, capture_output=True,
                                   text=True, timeout=TIMEOUT_S)
            else:
                r = _run(case.argv or [], d, case.cli)
        except subprocess.TimeoutExpired:
            return "hang", f"no answer in {TIMEOUT_S} s"
        err = r.stderr.strip()
        if "Traceback" in err:
            return "traceback", err.splitlines()[-1]
        if case.code is not None and not case.as_cli:
            return ("clean", "") if "CLEAN" in r.stdout else ("silent" if r.returncode == 0 else "unclear",
                                                               (r.stdout + err)[-200:])
        if case.ok is not None:
            if r.returncode != 0:
                return "unclear", f"exit {r.returncode}: {err[-200:]}"
            problem = case.ok(d)
            return ("silent", problem) if problem else ("clean", "")
        if r.returncode == 0:
            return "silent", "exit 0"
        lines = err.splitlines()
        one_line = len(lines) == 1 and ": error:" in lines[0] and lines[0].split(":")[0] in ("fastgrok", "fastgrok-paper",
                                                                                        "fastgrok bench")
        argparse_style = len(lines) >= 2 and lines[0].startswith("usage:") and ": error:" in lines[-1]
        if r.returncode != 2 or not (one_line or argparse_style):
            return "unclear", f"exit {r.returncode}: {err[-200:]}"
        problem = case.left(d) if case.left else None
        return ("left", problem) if problem else ("clean", "")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench_results" / "battery_surfaces.csv"))
    ap.add_argument("--label", default="", help="a note for the rows (e.g. before/after)")
    ap.add_argument("--match", default="", help="only the cases whose name holds this text")
    args = ap.parse_args()
    cases = [c for c in CASES if args.match in c.name]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    counts: Counter = Counter()
    rows = []
    t0 = time.time()
    for case in cases:
        kind, detail = outcome(case)
        counts[kind] += 1
        if kind != "clean":
            print(f"  [{kind}] {case.name}: {detail[:200]}", flush=True)
        rows.append({"case": case.name, "outcome": kind, "detail": detail[:200], "commit": commit,
                     "label": args.label, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    out = Path(args.out)
    new = not out.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            w.writeheader()
        w.writerows(rows)
    order = ("clean", "traceback", "silent", "left", "unclear", "hang")
    print(f"{len(cases)} cases at {commit} in {time.time() - t0:.0f} s: "
          + ", ".join(f"{counts[k]} {k}" for k in order) + f"; rows appended to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
