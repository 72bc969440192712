"""The `demo` preset learns in context: a short CPU run whose k-shot curve rises on unseen inputs.

Guards the trainer against regressions that leave the loss falling but break in-context learning
(a wrong causal mask, a shifted target, a broken gradient): a model that memorizes the training
equations without reading its context scores chance at the last shot of the i.d. test set.
"""
import pytest
import torch

from fastgrok import Config, train

# A shortened `demo`: the same model and data, fewer steps (see DEMO_TEST_STEPS below).
DEMO_TEST_STEPS = 1500


@pytest.mark.slow
def test_demo_learns_in_context(tmp_path):
    torch.set_num_threads(1)
    cfg = Config.preset("demo", out_dir=str(tmp_path), steps=DEMO_TEST_STEPS, eval_every=DEMO_TEST_STEPS)
    res = train(cfg, quiet=True)
    id_test = res.history[-1]["sets"]["id_test"]
    chance = 1.0 / cfg.task.p
    kshot = id_test["kshot"]
    assert id_test["acc_last"] >= 0.5, f"last-shot i.d.-test accuracy {id_test['acc_last']:.3f} (chance {chance:.3f})"
    assert kshot[-1] >= kshot[0] + 0.3, f"k-shot curve does not rise: {[round(k, 2) for k in kshot]}"
