#!/usr/bin/env bash
# GPU check: the first figures on a GPU, at the paper's sizes, in one call of under 8 minutes on an H100.
#
#   benchmarks/gpu_check.sh [OUT_DIR]                # rows appended to OUT_DIR/*.csv (default bench_results)
#   benchmarks/gpu_check.sh --only 4,5 [OUT_DIR]     # some stages only (a rerun after a fix)
#   benchmarks/gpu_check.sh --dry-run [OUT_DIR]      # CPU rehearsal: every stage at toy size (GPU_CHECK_DRY=1 too);
#                                                    # OUT_DIR defaults to a new temporary folder, never bench_results
#   PYTHON=python GPU_CHECK_BUDGET=470 benchmarks/gpu_check.sh    # interpreter (default python3), seconds in all
#   GPU_CHECK_RUN_SECONDS=180                       # the paper run's length at most (dry run: 20)
#
# On a lent GPU machine, with results brought back through $OUT and merged here afterwards:
#   benchmarks/gpu_check.sh "$OUT/bench_results" 2>&1 | tee "$OUT/gpu_check.log"
#   fastgrok bench merge --from <files_at>/bench_results        # (here) append the new rows to bench_results/
#
# Stages, in order, each under `timeout` (SIGINT first: the suites keep what they measured) and writing its
# rows as it measures them:
#   1 ceilings   device, driver, torch/Triton versions; copy GB/s; bf16 GEMM TFLOP/s at M = 1024·95  → ceilings.csv
#   2 gpu tests  pytest -m gpu: fused ops against the reference (bf16/fp16/fp32), inductor fullgraph, batchgen bits
#   3 kernels    fused vs reference eager vs reference compiled at the paper's shapes (then sweeps) → kernels.csv
#   4 train      depth 4 and 2, n_embd 512, batch 1024, both backends eager and compiled, host pipeline beside
#                them; then batch 2048 and 4096 compiled                                        → train.csv
#   5 profile    torch.profiler of compiled depth-4 fused steps: top 15 kernels                  → profile.csv
#   6 paper run  the `paper` preset (fused, compiled), evaluating every 500 steps, with the time left
#                (≤ 180 s)                                      → paper_run.csv, paper_run-<time>.jsonl
# Runs the tree as it is (PYTHONPATH=., no install, no registry; the GPU image has torch 2.11, Triton 3.6,
# Python 3.12). Exit status: the number of stages that failed or ran out of time (0: all passed).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"  # the GPU image's interpreter with torch is python3 (no `python` there)
DRY="${GPU_CHECK_DRY:-0}"
ONLY=""
OUT_DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --only) ONLY="${2:?--only needs a list of stages, e.g. 4,5}"; shift ;;
        --only=*) ONLY="${1#--only=}" ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        -*) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) OUT_DIR="$1" ;;
    esac
    shift
done
if [ "${DRY}" = "1" ]; then
    # CPU rehearsal: toy sizes, fused kernels under Triton's interpreter, graphs compiled with aot_eager
    # (inductor's CPU compile costs minutes here); results to a temporary folder. Time limits ×4: a
    # shared CPU is slow, and the rehearsal checks that every stage runs, not how fast.
    OUT_DIR="${OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_dry.XXXXXX")}"
    export TRITON_INTERPRET=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
    DEV=(--device cpu --toy --compile-backend aot_eager)
    SCALE=4; RUN_SECONDS="${GPU_CHECK_RUN_SECONDS:-20}"; MIN_RUN=3
else
    OUT_DIR="${OUT_DIR:-bench_results}"
    unset TRITON_INTERPRET
    DEV=(--device cuda)
    SCALE=1; RUN_SECONDS="${GPU_CHECK_RUN_SECONDS:-180}"; MIN_RUN=45
fi
BUDGET="${GPU_CHECK_BUDGET:-$((470 * SCALE))}"  # seconds for the whole script; the paper run gets what is left
BENCH=("${PY}" -m fastgrok bench --out-dir "${OUT_DIR}")
failed=0
declare -a SUMMARY=()

wanted() {  # wanted STAGE: whether --only (if given) names it
    [ -z "${ONLY}" ] && return 0
    case ",${ONLY}," in *",$1,"*) return 0 ;; esac
    return 1
}

stage() {  # stage N NAME SECONDS COMMAND...: run under a time limit, never past the budget
    local n=$1 name=$2 limit=$3
    shift 3
    wanted "${n}" || return 0
    limit=$((limit * SCALE))
    local left=$((BUDGET - SECONDS))
    if [ "${left}" -lt 10 ]; then
        echo "=== ${n} ${name}: skipped, the ${BUDGET}s budget is spent"
        SUMMARY+=("${n} ${name}: skipped (budget)"); failed=$((failed + 1)); return 0
    fi
    [ "${limit}" -gt "${left}" ] && limit=${left}
    echo "=== ${n} ${name} (limit ${limit}s, ${SECONDS}s so far): $*"
    local t0=$SECONDS
    timeout --signal=INT --kill-after=20 "${limit}" "$@"
    local rc=$?
    local took=$((SECONDS - t0))
    echo "=== ${n} ${name}: exit ${rc} after ${took}s"
    if [ "${rc}" -eq 124 ] || [ "${rc}" -eq 137 ]; then
        SUMMARY+=("${n} ${name}: TIME LIMIT after ${took}s (rows measured so far are kept)")
    elif [ "${rc}" -ne 0 ]; then
        SUMMARY+=("${n} ${name}: FAILED (exit ${rc}) after ${took}s")
    else
        SUMMARY+=("${n} ${name}: ok, ${took}s")
    fi
    if [ "${rc}" -ne 0 ]; then failed=$((failed + 1)); fi
}

echo "=== gpu_check $( [ "${DRY}" = 1 ] && echo '(dry run on the CPU) ')-> ${OUT_DIR} | $(date -u +%FT%TZ) | git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
mkdir -p "${OUT_DIR}"
if [ "${DRY}" != "1" ] && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
fi

stage 1 "ceilings" 60 "${BENCH[@]}" ceilings "${DEV[@]}"
stage 2 "gpu tests" 150 "${PY}" -m pytest -m gpu -q -p no:cacheprovider -rfEs tests
stage 3 "kernel benchmarks" 75 "${BENCH[@]}" kernels "${DEV[@]}" --compile main
# depth 4 first (the step-time goal), fused compiled first among the compiled providers
stage 4 "train benchmarks, batch 1024" 160 "${BENCH[@]}" train "${DEV[@]}" --compile all --configs paper-d4,paper-d2 \
    --providers fused-compiled,reference-compiled,host-pipeline-compiled,fused,reference,host-pipeline
stage 4 "train benchmarks, batch 2048/4096" 80 "${BENCH[@]}" train "${DEV[@]}" --compile all \
    --configs paper-d4,paper-d2 --batch-sizes 2048,4096 --providers fused-compiled,reference-compiled
stage 5 "profile of a depth-4 step" 60 "${BENCH[@]}" profile "${DEV[@]}" --configs paper-d4 --backend fused --top 15
if wanted 6; then
    left=$((BUDGET - SECONDS - 30 * SCALE))  # for the last evaluation and checkpoint after the stop
    run=$(( left < RUN_SECONDS ? left : RUN_SECONDS ))
    if [ "${run}" -ge "${MIN_RUN}" ]; then
        stage 6 "paper run" $(( (run + 30 * SCALE) / SCALE )) "${BENCH[@]}" paper-run "${DEV[@]}" --seconds "${run}" --eval-every 500 \
            --backend fused
    else
        echo "=== 6 paper run: skipped, ${left}s left of the ${BUDGET}s budget"
        SUMMARY+=("6 paper run: skipped (${left}s left)")
    fi
fi
"${PY}" -m fastgrok bench render --out-dir "${OUT_DIR}" >/dev/null || failed=$((failed + 1))
echo "=== gpu_check summary (${SECONDS}s in all; rows in ${OUT_DIR}):"
for line in "${SUMMARY[@]}"; do echo "    ${line}"; done
echo "=== gpu_check: ${failed} stage(s) failed or ran out of time"
exit "${failed}"
