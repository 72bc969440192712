"""The public functions check their arguments at the boundary (issue 9, item 14): a TypeError or
ValueError that names the argument, never an AttributeError, AssertionError or a silent wrong answer."""
import pytest
import torch

import fastgrok
from fastgrok import GPT, Config, eval_batch, make_tasks, sample_batch, train

CFG = Config.preset("tiny")
TASKS = make_tasks(CFG.task)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: Config.preset(None), TypeError, "preset name must be a string"),
    (lambda: Config.preset(3), TypeError, "preset name"),
    (lambda: Config.from_flat(None), TypeError, "dict"),
    (lambda: Config.from_dict("tiny"), TypeError, "from_dict takes a dict"),
    (lambda: train("tiny"), TypeError, r"train\(cfg\) takes a Config .*got str 'tiny'"),
    (lambda: train({}), TypeError, "takes a Config"),
    (lambda: train(CFG, stop_at="5"), TypeError, "stop_at must be an int"),
    (lambda: train(CFG, stop_at=True), TypeError, "stop_at"),
    (lambda: train(CFG, stop_at=0), ValueError, "stop_at=0"),
    (lambda: train(resume=3), TypeError, "resume must be the path"),
    (lambda: train(resume=""), ValueError, "names no run folder"),
    (lambda: sample_batch(CFG, TASKS, -1), ValueError, r"step=-1 must lie in \[0, "),
    (lambda: sample_batch(CFG, TASKS, 1.0), TypeError, "step must be an int"),
    (lambda: sample_batch(CFG, TASKS, "3"), TypeError, "step must be an int"),
    (lambda: sample_batch(CFG, TASKS, True), TypeError, "step must be an int"),
    (lambda: sample_batch(CFG, TASKS, 2**63), ValueError, "Philox counters are int64"),
    (lambda: sample_batch(CFG, TASKS, torch.tensor(1.5)), TypeError, "integer tensor"),
    (lambda: eval_batch(CFG, TASKS, -2, "ood_test"), ValueError, "step=-2"),
    (lambda: sample_batch(Config.preset("quick"), TASKS, 0), ValueError, "tasks were built for another config"),
    (lambda: sample_batch(CFG, make_tasks(Config.preset("tiny", alpha=0.8).task), 0), ValueError, "another config"),
    (lambda: sample_batch(CFG, None, 0), TypeError, "tasks must be the Tasks"),
    (lambda: sample_batch(CFG.task, TASKS, 0), TypeError, "cfg must be a Config"),
    (lambda: sample_batch(CFG, TASKS, 0, split="test"), ValueError, "split='test'"),
    (lambda: sample_batch(CFG, TASKS, 0, device="tpu"), ValueError, "device='tpu'"),
    (lambda: sample_batch(CFG, TASKS, 0, device=7), TypeError, "device must be"),
    (lambda: make_tasks(None), TypeError, "make_tasks takes a TaskConfig"),
    (lambda: make_tasks(CFG), TypeError, "pass cfg.task"),
    (lambda: GPT(CFG), TypeError, r"pass its .model"),
    (lambda: GPT(None), TypeError, "GPT takes a ModelConfig"),
])
def test_bad_arguments_raise_naming_them(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where CUDA is absent")
def test_cuda_where_there_is_none():
    with pytest.raises(ValueError, match="CUDA is not available"):
        sample_batch(CFG, TASKS, 0, device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        train(CFG.override(device="cuda"), quiet=True)


def test_good_calls_still_work():
    assert sample_batch(CFG, TASKS, 0).shape == (16, 18)
    assert torch.equal(sample_batch(CFG, TASKS, torch.tensor(3)), sample_batch(CFG, TASKS, 3))
    assert sample_batch(CFG, TASKS, 10**12).shape == (16, 18)  # a large but valid batch number
    assert GPT(CFG.model).num_params() > 0
    assert callable(fastgrok.train) and fastgrok.train is train and "train" in dir(fastgrok)
    import fastgrok.trainer as trainer  # the module: its own name, so the function keeps `fastgrok.train`
    assert fastgrok.train is trainer.train and trainer.train_flops_per_step(CFG) > 0
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fastgrok.nope
