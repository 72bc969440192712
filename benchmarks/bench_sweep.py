"""Sweep overhead: time from `fastgrok sweep` to each run's first training step, the launch cost per
point and the gap between runs, with the local engine on tiny runs.

    python benchmarks/bench_sweep.py [--quick] [--out-dir bench_results]

The same as `fastgrok bench sweep` (fastgrok/bench/sweep.py); appends to OUT_DIR/sweep.csv.
"""
import sys

from fastgrok.bench.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("sweep", description=__doc__.splitlines()[0]))
