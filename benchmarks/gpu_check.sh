#!/usr/bin/env bash
# GPU check: the GPU-only tests, then the kernel and training-step benchmarks at the paper's sizes.
#
#   benchmarks/gpu_check.sh [OUT_DIR]      # rows appended to OUT_DIR/{kernels,train}.csv (default bench_results)
#   PYTHON=python benchmarks/gpu_check.sh      # another interpreter (default: python3)
#
# Runs the tree as it is (PYTHONPATH=., no install, no package registry; the GPU image has torch 2.11 and
# Triton 3.6). Each stage has a time limit so the whole check ends within 9 minutes on an H100; rows are
# appended as they are measured, so a stage cut short keeps what it measured (eager rows come first).
# Exit status: 0 when every stage passed, else the number of stages that failed or timed out.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
OUT_DIR="${1:-bench_results}"
PY="${PYTHON:-python3}"  # the GPU image's interpreter with torch is python3 (no `python` there)
failed=0

stage() {  # stage NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "=== ${name} (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout --signal=INT --kill-after=15 "${limit}" "$@"
    local rc=$?
    echo "=== ${name}: exit ${rc} after $((SECONDS - t0))s"
    if [ "${rc}" -ne 0 ]; then failed=$((failed + 1)); fi
}

"${PY}" -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__, '|', \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA')"
stage "gpu tests" 140 "${PY}" -m pytest -m gpu -q -p no:cacheprovider
stage "kernel benchmarks" 140 "${PY}" -m fastgrok bench kernels --device cuda --out-dir "${OUT_DIR}"
stage "train benchmarks" 170 "${PY}" -m fastgrok bench train --device cuda --out-dir "${OUT_DIR}"
# DDP's own cost: 1-rank torchrun, each provider timed plain, then as reference-ddp1 / fused-ddp1 (the goal: < 3 %)
stage "ddp train benchmark" 60 "${PY}" -m torch.distributed.run --standalone --nproc_per_node=1 \
    -m fastgrok bench train --device cuda --compile off --out-dir "${OUT_DIR}"
"${PY}" -m fastgrok bench render --out-dir "${OUT_DIR}" || failed=$((failed + 1))
echo "=== gpu_check: ${failed} stage(s) failed, ${SECONDS}s in all"
exit "${failed}"
