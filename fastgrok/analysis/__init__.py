"""The paper's interpretability study for any fastgrok run or paper-format checkpoint (`fastgrok analyze`).

Plain functions on tensors and arrays, no plotting (figures.py draws from their numbers):
    ratio_matching(examples, p) -> bool (p, p)       modular_regression(examples, p) -> bool (p, p)
    kshot_grid(model, task, examples, p) -> bool (K, p, p)   correct[k-1, x, y] after the first k examples
    grid_logits(model, examples, p) -> preds (K, p, p), logits (K, p, p, p)   the answers themselves
    strata(examples, p) -> int (p, p)                decompose(preds, examples, task, p) -> Figure 5's strata
    kshot_curve(model, cfg, tasks, split) -> Curve   accuracy per shot with 95 % intervals, per task too
    attention_maps(model, idx) -> (L, H, T, T)       head_features(model, context, p) -> dict of tensors
    label_noise(model, cfg, tasks, split) -> counts  primitive_root(p), discrete_logs(p), pca, cosine_matrix
    open_source(path) -> Subject                     analyze(subject, Options(...)) -> index (files written)
"""
from __future__ import annotations

from .algorithms import (STRATA, check_prime, cosine_matrix, decompose, discrete_logs, modular_regression, pca,
                         primitive_root, ratio_matching, scaled_example_answers, span_rank, strata, wilson_interval)
from .probe import (Curve, Prefix, Trace, all_queries, attention_maps, grid_logits, head_features, kshot_curve,
                    kshot_grid, label_noise, prefix_of, trace)
from .report import ANALYSES, Options, analyze
from .source import Subject, open_source

__all__ = ["STRATA", "decompose", "scaled_example_answers", "strata", "grid_logits", "check_prime",
           "cosine_matrix", "discrete_logs", "modular_regression", "pca", "primitive_root",
           "ratio_matching", "span_rank", "wilson_interval", "Curve", "Prefix", "Trace", "all_queries",
           "attention_maps", "head_features", "kshot_curve", "kshot_grid", "label_noise", "prefix_of", "trace",
           "ANALYSES", "Options", "analyze", "Subject", "open_source"]
