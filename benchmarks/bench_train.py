"""Training-step benchmark: steps/s, tokens/s, TFLOP/s, MFU and peak memory per backend, eager and
compiled, beside the host-pipeline baseline — config A on CPU, the paper's depth 2/4/6 on CUDA.

    python benchmarks/bench_train.py [--quick] [--out-dir bench_results] [--device auto] [--compile main]

The same as `fastgrok bench train` (fastgrok/bench/train.py); appends to OUT_DIR/train.csv.
"""
import sys

from fastgrok.bench.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("train", description=__doc__.splitlines()[0]))
