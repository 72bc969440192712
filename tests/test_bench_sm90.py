"""fastgrok.bench.sm90: the offline sm_90 compile report (no GPU needed). The kernels' launches are
captured at their GPU tiles (in this process, under the interpreter), then compiled for sm_90 in a
process without it: registers, spills and shared memory from ptxas, loads and tensor cores from the PTX."""
import json
import os
import subprocess
import sys

import pytest

from fastgrok.bench import sm90


def _compile(script: str, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile for the GPU, run nothing
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, **kw)


def test_sm90_captures_every_kernel_launch():
    """The offline compile check sees each kernel of the three ops (captured, never run or compiled here)."""
    found = sm90.launches()
    names = {f.fn.__name__ for f in found}
    assert names == {"_rope_attn_fwd_kernel", "_rope_attn_bwd_kernel", "_embedding_fwd_kernel", "_embedding_bwd_kernel",
                     "_embedding_bwd_reduce_kernel", "_batchgen_kernel", "_rope_attn_bwd_delta_kernel"}
    paper = [f for f in found if f.label == "paper" and f.op == "attention"]
    blocks = {f.fn.__name__: f.kwargs.get("BLOCK_M") for f in paper}
    assert blocks["_rope_attn_fwd_kernel"] < 128  # the GPU tiles, not the interpreter's whole-sequence blocks
    emb = [f for f in found if f.label == "paper" and f.fn.__name__ == "_embedding_bwd_kernel"]
    assert [f.kwargs["INPUT_PRECISION"] for f in emb] == ["tf32x3", "tf32", "tf32"]  # fp32, bf16, fp16: the GPU's


PAPER_SCRIPT = """
import json, torch
from fastgrok.bench import sm90
found = sm90.attention_launches([("paper", 1024, 4, 95, 128, dt) for dt in (torch.bfloat16, torch.float32)],
                                q_slices=(None,))
rows = sm90.compile_all(found, log=None)
print(json.dumps([[c.kernel, c.consts.split()[0], c.error, c.registers, c.spill_stores, c.spill_loads, c.shared]
                  for c in rows]))
"""


@pytest.mark.slow
def test_paper_tiles_compile_for_sm90_without_spills():
    """The attention forward and backward at the paper's shape, bf16 and fp32: no spills, shared
    memory within the H100's 227 KiB per block, registers within the 255 limit."""
    res = _compile(PAPER_SCRIPT)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads(res.stdout.strip().splitlines()[-1])
    if any(err and "ptxas" in err and "No such file" in err for _, _, err, *_ in rows):
        pytest.skip("this Triton build has no bundled ptxas")
    assert [(r[0], r[1]) for r in rows] == [("_rope_attn_fwd_kernel", "bf16"), ("_rope_attn_bwd_kernel", "bf16"),
                                            ("_rope_attn_fwd_kernel", "fp32"), ("_rope_attn_bwd_kernel", "fp32")]
    for kernel, dtype, err, regs, stores, loads, shared in rows:
        assert err is None, (kernel, dtype, err)
        assert stores == 0 and loads == 0, (kernel, dtype, stores, loads)
        assert 0 < regs <= 255 and 0 <= shared <= 227 * 1024, (kernel, dtype, regs, shared)


@pytest.mark.slow
def test_sm90_compiles_offline(tmp_path):
    """One configuration through triton.compile for sm_90 with ptxas's report (a process without the
    interpreter, which the offline compile refuses)."""
    code = ("from fastgrok.bench import sm90; "
            "f = [l for l in sm90.launches() if l.fn.__name__ == '_embedding_bwd_reduce_kernel'][:1]; "
            "(c,) = sm90.compile_all(f, log=None); print(c.error or f'{c.registers} {c.spill_stores} {c.shared}')")
    r = _compile(code, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    regs, spills, shared = r.stdout.split()[-3:]
    assert 0 < int(regs) <= 255 and int(spills) == 0 and int(shared) >= 0
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-m", "fastgrok", "bench", "sm90", "--out-dir", str(tmp_path)],
                       capture_output=True, text=True, env={**env, "TRITON_INTERPRET": "1"}, timeout=300)
    assert r.returncode == 2 and "TRITON_INTERPRET" in r.stderr


def test_report_refuses_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, "-m", "fastgrok.bench.sm90", "--quick"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert res.returncode == 2 and "TRITON_INTERPRET" in res.stderr


PTX_SCRIPT = """
import json, torch
from fastgrok.bench import sm90
from fastgrok.kernels import rope_attention as ra
from fastgrok.kernels.embedding import embedding_backward
fwd = []
for name in ("v2", ra.DEFAULT_CANDIDATE):  # today's default launch and the one the H200 measured
    with ra.attention_candidate(name):
        fwd += [l for l in sm90.attention_launches([("paper", 1024, 4, 95, 128, torch.bfloat16)], q_slices=(None,))
                if l.fn.__name__ == "_rope_attn_fwd_kernel"]
dout, idx = torch.empty(1024, 95, 512), torch.zeros(1024, 95, dtype=torch.int64)
bwd = [l for p in ("ieee", "tf32x3")
       for l in sm90.capture("embedding", p, lambda p=p: embedding_backward(dout, idx, 29, input_precision=p))
       if l.fn.__name__ == "_embedding_bwd_kernel"]
rows = sm90.compile_all(fwd + bwd, log=None)
print(json.dumps([[c.consts, c.error, c.ld_vector, c.ld_scalar, c.mma] for c in rows]))
"""


@pytest.mark.slow
def test_ptx_vector_loads_and_tensor_cores():
    """The review's findings, checked in the PTX: the RoPE forward's q/k loads are all vectorised
    (no scalar 2-byte loads for the even/odd halves), and the fp32 embedding backward's one-hot dot
    runs on tensor cores (tf32x3) where "ieee" compiled to plain FMA."""
    res = _compile(PTX_SCRIPT)
    assert res.returncode == 0, res.stderr[-2000:]
    (v2, default, ieee, tf32x3) = json.loads(res.stdout.strip().splitlines()[-1])
    assert [v2[1], default[1], ieee[1], tf32x3[1]] == [None] * 4, (v2, default, ieee, tf32x3)
    assert "BLOCK_M=128 BLOCK_N=32" in v2[0] and "BLOCK_V=32" in ieee[0], (v2[0], ieee[0])  # the paper's tiles
    for fwd in (v2, default):
        assert fwd[3] == 0 and fwd[2] > 0, fwd  # (vector, scalar, mma)
        assert fwd[4] > 0  # q kᵀ and P v on tensor cores
    assert ieee[4] == 0 and tf32x3[4] > 0, (ieee, tf32x3)


CANDIDATES_SCRIPT = """
import json, torch
from fastgrok.bench import sm90
from fastgrok.kernels import rope_attention as ra
found = sm90.attention_launches([("paper", 1024, 4, 95, 128, torch.bfloat16)], q_slices=(None,))
found += sm90.candidate_launches([("paper", 1024, 4, 95, 128, torch.bfloat16)])
rows = sm90.compile_all(found, log=None)
print(json.dumps([[c.labels, c.kernel, c.error, c.registers, c.spill_stores, c.spill_loads, c.shared] for c in rows]))
"""


@pytest.mark.slow
def test_every_attention_candidate_compiles_without_spills():
    """Each launch candidate (kernels/rope_attention.py CANDIDATES) at the paper's shape in bf16: compiled for
    sm_90, no spills, registers ≤ 255, shared memory within 227 KiB — what the A/B on the GPU will launch."""
    from fastgrok.kernels.rope_attention import CANDIDATES, DEFAULT_CANDIDATE

    res = _compile(CANDIDATES_SCRIPT)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads(res.stdout.strip().splitlines()[-1])
    if any(err and "ptxas" in err and "No such file" in err for _, _, err, *_ in rows):
        pytest.skip("this Triton build has no bundled ptxas")
    labels = {label for r in rows for label in r[0]}
    assert labels == {"paper"} | {f"paper [{n}]" for n in CANDIDATES if n != DEFAULT_CANDIDATE}
    for labels_, kernel, err, regs, stores, loads, shared in rows:
        assert err is None and stores == 0 and loads == 0, (labels_, kernel, err, stores, loads)
        assert 0 < regs <= 255 and 0 <= shared <= 227 * 1024, (labels_, kernel, regs, shared)


@pytest.mark.slow
def test_attention_sass_issue_floor():
    """benchmarks/attention_sass.py: the backward's two programs compiled apart, disassembled, loops counted; a floor
    per candidate, lower without the loops' RoPE (fewer instructions), none for a one-program-per-head launch; the
    rotation's pin (`_rope_operand`) worth ≥ 10 % of split-w4's backward (19 % under Triton 3.6 and 3.9)."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "attention_sass.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    runs = [subprocess.run([sys.executable, script, "--candidates", "v2,split-w4", *extra], capture_output=True,
                           text=True, env=env, timeout=300) for extra in ((), ("--no-rope",), ("--no-pin",))]
    if any("No such file" in r.stderr for r in runs):
        pytest.skip("this Triton build has no bundled ptxas / nvdisasm")
    floors = []
    for r in runs:
        assert r.returncode == 0, r.stderr[-2000:]
        rows = {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines()[2:]}
        assert rows["v2"][1] == "—" and 0 < float(rows["v2"][0]) < 1
        floors.append(float(rows["split-w4"][1]))
    pinned, no_rope, no_pin = floors
    assert 0 < no_rope < pinned <= 0.9 * no_pin < 1, floors
    bad = subprocess.run([sys.executable, script, "--candidates", "nope"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert bad.returncode == 2 and "nope" in bad.stderr.strip().splitlines()[-1]
