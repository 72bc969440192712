"""The k-shot grid of `fastgrok analyze` (the paper's Figure 5): every query (x, y) ∈ Z_p² after k = 1 … K examples,
by the KV-cached path (fastgrok.analysis.kshot_grid: the K-example prefix once, then p² two-token rows per k)
beside plain forward passes of full sequences (what the paper's scripts do), at the paper's size.

    python benchmarks/bench_analysis.py [--quick] [--no-full] [--out-dir bench_results] [--device auto]

Default: p = 29, depth 4, width 512, 4 heads, K = 31 (the paper's depth-4 model). --quick: a small model for a
smoke test. Appends rows (seconds per grid, and the full path's rows per second) to OUT_DIR/analysis.csv.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from fastgrok import GPT, Config
from fastgrok.analysis import all_queries, kshot_grid
from fastgrok.bench.core import Recorder, resolve, row, sync


def full_grid(model: torch.nn.Module, task: tuple[int, int], ex: np.ndarray, p: int, rows: int = 1024) -> np.ndarray:
    """The same grid from full sequences [examples 1 … k, x, y], p² of them per k, in batches of `rows`."""
    q = all_queries(p)
    dev = model.transformer.wte.weight.device
    want = torch.as_tensor((task[0] * q[:, 0] + task[1] * q[:, 1]) % p, device=dev)
    out = np.zeros((len(ex), p, p), dtype=bool)
    with torch.no_grad():
        for k in range(1, len(ex) + 1):
            seq = torch.as_tensor(np.concatenate([np.tile(ex[:k].reshape(-1), (len(q), 1)), q], 1), device=dev)
            pred = torch.cat([model(seq[i:i + rows])[:, -1].argmax(-1) for i in range(0, len(seq), rows)])
            out[k - 1] = (pred == want).view(p, p).cpu().numpy()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small model (p = 11, depth 2, width 64, K = 9)")
    ap.add_argument("--no-full", action="store_true", help="time the cached path only")
    ap.add_argument("--out-dir", default="bench_results")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    device = resolve(args.device)
    if args.quick:
        cfg = Config.preset("tiny", p=11, n_shots=10, depth=2, n_embd=64, n_head=4, vocab_size=11)
    else:
        cfg = Config.preset("paper-d4")
    p, K = cfg.task.p, cfg.task.n_shots - 1
    torch.manual_seed(0)
    model = GPT(cfg.model).to(device).eval()  # timing does not depend on the weights
    rng = np.random.default_rng(0)
    task = (3, 5)
    pts = rng.permutation(p * p)[:K]
    ex = np.c_[pts // p, pts % p, (task[0] * (pts // p) + task[1] * (pts % p)) % p]
    rec = Recorder(f"{args.out_dir}/analysis.csv")
    shape = f"p{p}_d{cfg.model.depth}_w{cfg.model.n_embd}_h{cfg.model.n_head}"
    rec.log(f"k-shot grid, {shape}, K = {K}, {torch.get_num_threads()} threads on {device}")
    kshot_grid(model, task, ex[:2], p)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    cached = kshot_grid(model, task, ex, p)
    sync(device)
    t_cached = time.perf_counter() - t0
    rec.add([row("analysis_grid", "kv_cache", "forward", "shape_K", f"{shape}_K{K}", [t_cached], "s", device)])
    if not args.no_full:
        t0 = time.perf_counter()
        full = full_grid(model, task, ex, p)
        sync(device)
        t_full = time.perf_counter() - t0
        rec.add([row("analysis_grid", "full_sequences", "forward", "shape_K", f"{shape}_K{K}", [t_full], "s",
                     device)])
        # fp32 sums in another order: a near-tie of a random model's logits may break the other way
        rec.log(f"  full / cached: {t_full / t_cached:.1f}x; predictions differ at {(full != cached).sum()} of "
                f"{full.size} (k, x, y)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
