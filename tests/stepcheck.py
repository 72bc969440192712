"""One training step of two sessions from one state, compared: how tests that train stay CPU-independent.

A test that compares two ways of training (fused against reference kernels, compiled against eager, two
ranks against one process) puts the second session in the first one's state — model and optimiser — takes
the same step on both and compares what the step computes: the batch, the loss and every gradient. Two
free-running trajectories are never compared: AdamW divides by sqrt(v), so rounding differences of 1e-7 in
a gradient move some parameters by 1e-4 after one step (measured), and how such differences grow through
training depends on the CPU's kernels (vector width, BLAS blocking, thread count). See tests/README.md.
"""
import pytest
import torch


def step(sess, n):
    """train_step on batch `n`: (the batch, the loss, every parameter's gradient) as the optimiser saw them."""
    from fastgrok.trainer import train_step
    grads = {}
    hooks = [p.register_post_accumulate_grad_hook(lambda p, name=name: grads.__setitem__(name, p.grad.detach().clone()))
             for name, p in sess.model.named_parameters()]
    try:
        batch = sess.ops.batchgen(sess.train_src, n)
        loss = train_step(sess, n).item()
    finally:
        for h in hooks:
            h.remove()
    return batch, loss, grads


def grad_errors(got, want):
    """max |g_got - g_want| / max |g_want| per parameter."""
    assert got.keys() == want.keys()
    return {name: ((got[name] - g).abs().max() / g.abs().max()).item() for name, g in want.items()}


def compare_step(ref, other, n, name, grad_tol, loss_rel=1e-5):
    """Put `other` in ref's state (model and optimiser), take step `n` on both, compare what the step
    computes; ref goes on along its own trajectory. Returns ref's loss."""
    other.model.load_state_dict(ref.model.state_dict())
    other.opt.load_state_dict(ref.opt.state_dict())
    b_other, l_other, g_other = step(other, n)
    b_ref, l_ref, g_ref = step(ref, n)
    assert torch.equal(b_other, b_ref), (name, n, "batches differ")  # Philox on both: bit for bit
    assert l_other == pytest.approx(l_ref, rel=loss_rel), (name, n, l_other, l_ref)
    for param, err in grad_errors(g_other, g_ref).items():
        assert err <= grad_tol, (name, n, param, err)
    return l_ref
