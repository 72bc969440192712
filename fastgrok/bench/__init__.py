"""Benchmarks of fastgrok: kernels, training step, task-count sweep, and the rendered results table.

`core` (timing, rows, CSV), one module per suite (`kernels`, `train`, `tasks`), `hostpipe` (the
paper-style host data pipeline, a baseline), `render` (bench_results/README.md) and `cli`
(`fastgrok bench`). Nothing outside this subpackage imports it.
"""
