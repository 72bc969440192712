"""Task-count sweep: step time, start-up time and evaluation cost as n_id grows (8 → every task p^n
allows) for p = 29, 59, 97 and n_var = 3, on-device batches beside the host pipeline.

    python benchmarks/bench_tasks.py [--quick] [--out-dir bench_results] [--device auto]

The same as `fastgrok bench tasks` (fastgrok/bench/tasks.py); appends to OUT_DIR/tasks.csv.
"""
import sys

from fastgrok.bench.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("tasks", description=__doc__.splitlines()[0]))
