"""The registry's routing (fastgrok.backends.ROUTES): where a kernel lost on a device, `backend="fused"`
runs the reference op there; an explicit per-op "fused" still runs the kernel; the CPU (Triton's
interpreter) is never routed, so the CPU suite keeps exercising every kernel."""
import json

import pytest
import torch

from fastgrok import backends
from fastgrok.backends import ROUTES, Route, embedding_reference, resolve_names, resolve_ops, route
from fastgrok.bench import train as bench_train
from fastgrok.config import Config, ModelConfig


def _kernel_embedding():
    return backends.get_op("embedding", "fused")


def test_fused_embedding_on_cuda_routes_to_the_reference_gather():
    ops = resolve_ops(backend="fused", device="cuda")
    assert ops.embedding is embedding_reference
    assert dict(ops.names) == dict(attention="fused", embedding="reference", batchgen="fused")
    assert [op for op, _ in ops.routed] == ["embedding"] and "0.173 ms" in dict(ops.routed)["embedding"]
    assert ops.label() == "attention=fused embedding=reference(routed) batchgen=fused"
    assert ops.attention is backends.get_op("attention", "fused")  # the other kernels are kept


def test_an_explicit_per_op_choice_forces_the_kernel():
    cfg = ModelConfig(vocab_size=29, n_embd=64, backend="fused", embedding="fused")
    ops = resolve_ops(cfg, device="cuda")
    assert ops.embedding is _kernel_embedding() and ops.routed == ()
    assert dict(resolve_names(cfg, "cuda"))["embedding"] == "fused"
    assert dict(resolve_names(cfg.__class__(vocab_size=29, n_embd=64, backend="fused"), "cuda"))["embedding"] \
        == "reference"


@pytest.mark.parametrize("device", ["cpu", None])
def test_the_interpreter_and_an_unnamed_device_run_every_kernel(device):
    ops = resolve_ops(backend="fused", device=device)
    assert ops.embedding is _kernel_embedding() and ops.routed == ()
    assert dict(ops.names) == dict(attention="fused", embedding="fused", batchgen="fused")


def test_the_reference_backend_is_never_routed():
    assert resolve_ops(backend="reference", device="cuda").routed == ()


def test_a_route_with_a_shape_condition_applies_only_there(monkeypatch):
    monkeypatch.setitem(ROUTES, ("batchgen", "cuda"), Route("reference", "planted", when=lambda c: c.n_embd > 64))
    small, big = ModelConfig(vocab_size=29, n_embd=64, backend="fused"), ModelConfig(vocab_size=29, backend="fused")
    assert route("batchgen", "cuda", small) is None and route("batchgen", "cuda") is None  # no shape: no route
    assert route("batchgen", "cuda", big).why == "planted"
    assert dict(resolve_names(small, "cuda"))["batchgen"] == "fused"
    assert dict(resolve_names(big, "cuda"))["batchgen"] == "reference"


def test_provider_label_names_the_routed_ops():
    assert bench_train.provider_label("fused-compiled", ()) == "fused-compiled"
    assert bench_train.provider_label("fused-compiled", (("embedding", "why"),)) == \
        "fused-compiled (embedding: reference)"


def test_the_trainer_and_the_bench_row_say_which_path_ran(monkeypatch, tmp_path):
    """End to end on the CPU, with a route planted for it (the other ops reference, so nothing runs in the
    interpreter): the session runs the reference gather, env.json records the route, the bench row's
    provider says it; `fused-kernels-compiled` names every op "fused", so nothing of it is routed."""
    from fastgrok.trainer import build, train

    monkeypatch.setitem(ROUTES, ("embedding", "cpu"), Route("reference", "planted for the test"))
    cfg = Config.preset("tiny", device="cpu", backend="fused", attention="reference", batchgen="reference",
                        compile="off", steps=2, eval_every=2)
    sess = build(cfg)
    assert sess.ops.embedding is embedding_reference and sess.model.ops.embedding is embedding_reference
    train(cfg.override(out_dir=str(tmp_path), run_name="r"), quiet=True)
    env = json.loads(next(tmp_path.rglob("env.json")).read_text())
    assert env["backends"]["embedding"] == "reference" and env["routed"] == {"embedding": "planted for the test"}
    prov = {p.name: p for p in bench_train.PROVIDERS}
    rows = bench_train.bench_step(cfg, "tiny", prov["fused"], torch.device("cpu"), quick=True)
    assert {r["provider"] for r in rows} == {"fused (embedding: reference)"}
    kernels = bench_train.provider_config(cfg, prov["fused-kernels-compiled"])
    assert resolve_names(kernels.model, "cuda") == (("attention", "fused"), ("embedding", "fused"),
                                                    ("batchgen", "fused"))
    assert dict(resolve_names(bench_train.provider_config(cfg, prov["fused"]).model, "cuda"))["embedding"] \
        == "reference"
