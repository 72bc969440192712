"""fastgrok.kernels.report: offline sm_90 compiles (no GPU needed) of the kernels at their GPU tiles."""
import json
import os
import subprocess
import sys

import pytest

SCRIPT = """
import json
from fastgrok.kernels.report import attention_rows
rows = attention_rows(128, 95, 95, "bf16", "paper") + attention_rows(128, 95, 95, "fp32", "paper")
print(json.dumps([[r.kernel, r.dtype, r.regs, r.spill_stores + r.spill_loads, r.shared] for r in rows]))
"""


@pytest.mark.slow
def test_paper_tiles_compile_for_sm90_without_spills():
    """The attention forward and backward at the paper's shape, bf16 and fp32: no spills, shared
    memory within the H100's 227 KiB per block, registers within the 255 limit."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile for the GPU, run nothing
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    if res.returncode and "ptxas" in res.stderr and "No such file" in res.stderr:
        pytest.skip("this Triton build has no bundled ptxas")
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads(res.stdout.strip().splitlines()[-1])
    assert [r[0] for r in rows] == ["rope_attn_fwd", "rope_attn_bwd"] * 2
    for kernel, dtype, regs, spilled, shared in rows:
        assert spilled == 0, (kernel, dtype, spilled)
        assert regs <= 255 and shared <= 227 * 1024, (kernel, dtype, regs, shared)


def test_report_refuses_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, "-m", "fastgrok.kernels.report", "--quick"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert res.returncode == 2 and "TRITON_INTERPRET" in res.stderr
