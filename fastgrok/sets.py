"""The four evaluation sets and the phases of a run (SPEC "Measurements"; the paper's Figure 1b), named
here once and torch-free, for the trainer, a sweep's table and figures, and the benchmarks."""
from __future__ import annotations

SPLITS = ("train", "id_test", "ood_train", "ood_test")  # the four sets, in the paper's order

# Each learned phase solves one more of the sets, in SPLITS' order; any other pattern is mixed.
NOT_LEARNED, MIXED = "not_learned", "mixed"
LEARNED_PHASES = ("id_memorization", "id_generalization", "ood_memorization", "ood_generalization")
PHASES = (NOT_LEARNED, *LEARNED_PHASES, MIXED)
SETTLED_PHASE = LEARNED_PHASES[-1]       # all four sets solved: what a sweep's stop_when_settled waits for
PHASE_OF = {tuple(i < k for i in range(len(SPLITS))): phase for k, phase in enumerate((NOT_LEARNED, *LEARNED_PHASES))}

# The analyses of `fastgrok analyze` (fastgrok.analysis.report), named here so the CLI needs no torch to list them.
ANALYSES = ("kshot", "grid", "attention", "embedding", "heads", "cosine", "noise")
