"""The `demo` preset learns in context: a short CPU run whose k-shot curve rises.

Guards the trainer against regressions that leave the loss falling but break in-context learning
(a wrong causal mask, a shifted target, a broken gradient). The demo's sequences draw their shots
without replacement, so no query is in its own context: the task of a sequence is known only from
the examples before it, and the first shot can do no better than the tasks' marginal. A model
that fits without reading its context stays near chance at the last shot; one that sees the
future (a broken mask) scores high at the first shot too.

The search behind the preset (bench_results/cpu_phenomenon.csv) found no CPU-sized setting whose
i.d.-test accuracy rises in minutes, so the curve checked is the training set's (the model tells
16 training tasks apart from their examples), not the i.d. test set's.
"""
import pytest
import torch

from fastgrok import Config, train

TEST_STEPS = 1500  # the demo runs 2500; its training tasks are solved from ≈ step 1250-1500


@pytest.mark.slow
def test_demo_learns_in_context(tmp_path):
    torch.set_num_threads(1)
    cfg = Config.preset("demo", out_dir=str(tmp_path), steps=TEST_STEPS, eval_every=TEST_STEPS)
    res = train(cfg, quiet=True)
    assert res.losses[-1] < res.losses[0]
    train_set = res.history[-1]["sets"]["train"]
    kshot = train_set["kshot"]
    chance = 1.0 / cfg.task.p
    curve = [round(k, 2) for k in kshot]
    assert train_set["acc_last"] >= 0.6, f"last-shot train accuracy {train_set['acc_last']:.3f} (chance {chance:.2f})"
    assert kshot[0] <= 0.5, f"first shot already solved — does the model see the future? {curve}"
    assert kshot[-1] >= kshot[0] + 0.3, f"k-shot curve does not rise: {curve}"
