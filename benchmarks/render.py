"""Render bench_results/README.md from bench_results/*.csv (the same as `fastgrok bench render`).

    python benchmarks/render.py [--out-dir bench_results]
"""
import argparse
import sys

from fastgrok.bench.render import write

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default="bench_results")
    print(f"rendered {write(p.parse_args().out_dir)}")
    sys.exit(0)
