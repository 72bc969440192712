"""benchmarks/kernel_ab.py, the GPU A/B of the attention candidates, rehearsed on the CPU (`--dry-run`: tiny
shapes, Triton's interpreter, aot_eager), so the GPU call can fail only on the GPU. Rows go to tmp_path;
nothing here asserts a speed."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastgrok.bench.core import FIELDS, read_rows

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "kernel_ab.py"


def _run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_dry_run_writes_every_row(tmp_path):
    """The whole flow at tiny size: attention per provider and mode at the main shape, the train step and the
    sweep for the finalists only (the default; with --finalists 0 no other), the first again as `repeat`, and
    the reference-compiled step."""
    p = _run("--dry-run", "--out", str(tmp_path), "--candidates", "split-w4,wg64-w8", "--finalists", "0")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "failed" not in p.stdout, p.stdout[-2000:]
    assert "finalists split-w4 (" in p.stdout
    kernels = read_rows(tmp_path / "kernels.csv")
    assert kernels and set(kernels[0]) == set(FIELDS)
    got = {(r["provider"], r["mode"], r["x_name"]) for r in kernels if r["unit"] == "ms"}
    for provider in ("reference", "fused-split-w4"):
        for mode in ("forward", "backward", "full"):
            assert {(provider, mode, "shape"), (provider, mode, "T")} <= got
    assert ("reference-compiled", "backward", "shape") in got
    assert {("sdpa-math", m, "shape") for m in ("forward", "backward", "full")} <= got  # SDPA held to one backend
    checks = {r["provider"]: float(r["p50"]) for r in kernels if r["mode"] == "check"}
    assert set(checks) == {"fused-split-w4", "fused-wg64-w8", "mlp-epilogue-compiled"} and max(checks.values()) <= 1
    mlp = {(r["provider"], r["mode"]) for r in kernels if r["benchmark"] == "mlp" and r["unit"] == "ms"}
    assert mlp == {(p, m) for p in ("mlp-compiled", "mlp-epilogue-compiled") for m in ("forward", "backward", "full")}
    assert ("fused-wg64-w8", "full", "shape") in got and ("fused-wg64-w8", "full", "T") not in got  # not a finalist
    assert {r["unit"] for r in kernels} == {"ms", "GB/s", "TFLOP/s", "err / allowed"}
    train = {(r["provider"], r["mode"]) for r in read_rows(tmp_path / "train.csv") if r["unit"] == "ms"}
    assert train == {("fused-compiled-split-w4", "step"), ("fused-compiled-split-w4", "repeat"),
                     ("reference-compiled", "step")}
    assert "train step, ms (p50)" in p.stdout  # the summary ends the output


def test_sdpa_core_is_causal_sdpa_without_rope():
    """The `sdpa-<backend>` providers' op: SDPA on the projection's q, k, v as they are, (B, T, 3C) → (B, T, C)."""
    import importlib.util

    import torch
    import torch.nn.functional as F

    spec = importlib.util.spec_from_file_location("kernel_ab", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    B, T, H, D = 2, 7, 2, 16
    qkv = torch.randn(B, T, 3 * H * D, dtype=torch.float64)
    q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in qkv.split(H * D, dim=-1))
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, H * D)
    torch.testing.assert_close(module.sdpa_core(qkv, H, 10000.0), want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="every position"):
        module.sdpa_core(qkv, H, 10000.0, slice(1, None, 3))


def test_mlp_epilogue_matches_the_models_mlp():
    """The A/B's epilogue MLP (c_fc + ReLU as torch._addmm_activation, the backward masking with the saved h) gives
    the model's MLP and its gradients, in fp64 on the CPU."""
    import importlib.util

    import torch
    import torch.nn.functional as F

    spec = importlib.util.spec_from_file_location("kernel_ab", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x, w1, w2 = (torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in ((37, 16), (64, 16), (16, 64)))
    dy = torch.randn(37, 16, dtype=torch.float64)
    want = F.linear(F.relu(F.linear(x, w1)), w2)
    got = F.linear(module.fc_relu_epilogue()(x, w1, torch.zeros(64, dtype=torch.float64)), w2)
    for a, b in zip((got, *torch.autograd.grad(got, (x, w1, w2), dy)), (want, *torch.autograd.grad(want, (x, w1, w2), dy))):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_every_sdpa_provider_names_a_backend():
    """The `sdpa-<name>` providers the GPU run times (and the dry run's math) each hold a real SDPBackend."""
    import importlib.util

    from torch.nn.attention import SDPBackend

    spec = importlib.util.spec_from_file_location("kernel_ab", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in (*module.SDPA_BACKENDS, "math"):
        with module._candidate(f"sdpa-{name}"):
            pass
        assert isinstance(getattr(SDPBackend, module.SDPA_MEMBERS[name]), SDPBackend)


def test_finalists_are_the_fastest_at_the_papers_shape():
    """v2 and the default always; then the n smallest full medians among the candidates whose check passed; no
    row (failed or skipped), or a failed check, no place."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("kernel_ab", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    row = lambda c, v, mode="full", x_name="shape", unit="ms": dict(provider=f"fused-{c}", mode=mode,  # noqa: E731
                                                                   unit=unit, x_name=x_name, p50=str(v))
    rows = [row("v2", 1.5), row("a", 0.9), row("b", 0.7), row("c", 0.8), row("d", 0.1, mode="backward"),
            row("e", 0.05, x_name="T"), dict(provider="reference-compiled", mode="full", unit="ms", x_name="shape",
                                             p50="0.01"), row("dflt", 2.0), row("g", 0.01), row("h", 0.02)]
    rows += [row(c, 0.5, mode="check", unit=module.CHECK_UNIT) for c in ("v2", "a", "b", "c", "d", "e", "dflt")]
    rows += [row("g", 1.5, mode="check", unit=module.CHECK_UNIT)]  # the fastest, but wrong; h was never checked
    names = ["v2", "dflt", "a", "b", "c", "d", "e", "f", "g", "h"]
    assert module.shortlist(rows, names, "dflt", 2) == ["v2", "dflt", "b", "c"]
    assert module.shortlist(rows, names, "dflt", 0) == ["v2", "dflt"]
    assert module.shortlist(rows, names, "dflt", 9) == ["v2", "dflt", "b", "c", "a"]
    assert module.shortlist(rows, ["a", "b"], "dflt", 1) == ["b"]  # neither v2 nor the default asked for


def test_budget_skips_what_does_not_fit(tmp_path):
    p = _run("--dry-run", "--out", str(tmp_path), "--budget", "0.001")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "skipped the train-step A/B" in p.stdout and "skipped the reference-compiled train step" in p.stdout
    assert "skipped the MLP epilogue A/B" in p.stdout
    assert not read_rows(tmp_path / "train.csv")


def _main(monkeypatch, *args: str) -> int:
    """The script's main() in this process (its --dry-run sets TRITON_INTERPRET: restored afterwards)."""
    import importlib.util

    monkeypatch.setenv("TRITON_INTERPRET", os.environ.get("TRITON_INTERPRET", "0"))
    spec = importlib.util.spec_from_file_location("kernel_ab", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return module.main(list(args))
    except SystemExit as e:  # argparse's errors
        return e.code


@pytest.mark.parametrize("args,field", [(("--budget", "-3"), "--budget"), (("--budget", "x"), "--budget"),
                                        (("--budget", "nan"), "--budget"),
                                        (("--candidates", "v2,nope"), "--candidates"),
                                        (("--finalists", "-1"), "--finalists"), (("--finalists", "x"), "--finalists")])
def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys, args, field):
    assert _main(monkeypatch, "--dry-run", "--out", str(tmp_path), *args) == 2
    err = capsys.readouterr().err
    assert field in err.strip().splitlines()[-1] and "Traceback" not in err


def test_unwritable_out(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert _main(monkeypatch, "--dry-run", "--out", str(blocker / "sub")) == 2
    err = capsys.readouterr().err
    assert "--out" in err and len(err.strip().splitlines()) == 1
