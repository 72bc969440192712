#!/usr/bin/env bash
# GPU check: our figures and the paper's own loop on one GPU, every stage within 470 s on an H200.
#
#   benchmarks/gpu_check.sh [--paper-dir DIR] [--wheels DIR] [OUT_DIR]   # rows appended to OUT_DIR/*.csv
#   benchmarks/gpu_check.sh --only 3,4 [OUT_DIR]     # some stages only (a rerun after a fix)
#   benchmarks/gpu_check.sh --dry-run [OUT_DIR]      # CPU rehearsal: every stage at toy size (GPU_CHECK_DRY=1 too);
#                                                    # OUT_DIR defaults to a new temporary folder, never bench_results
#   PYTHON=python GPU_CHECK_BUDGET=470 benchmarks/gpu_check.sh    # interpreter (default python3), seconds in all
#   GPU_CHECK_RUN_SECONDS=60 GPU_CHECK_TESTS=tests GPU_CHECK_TEST_WORKERS=4    # stage 10's length at most; stage 1's
#                                                    # test paths and pytest-xdist processes (0: one process)
# Paths are taken from where it is called (OUT_DIR defaults to bench_results in the tree). --paper-dir DIR: a
# copy of github.com/ablghtianyi/ICL_Modular_Arithmetic (stage 4; without it stage 4 is skipped); --wheels DIR:
# wheels pip installs first (--no-index: schedulefree and rotary_embedding_torch, which the paper's code needs
# and the GPU image lacks). benchmarks/gpu_pack.sh packs this tree (stamped with its commit), the paper's code
# and the wheels into one folder to carry; docs/benchmarks.md ("gpu_check.sh") says how.
#
# Stages, in order, each under `timeout` (SIGINT first: the suites keep what they measured), rows as measured:
#   1 gpu tests   pytest -m gpu (fused ops against the reference, inductor fullgraph, batchgen bits); its outcome
#                 (passed, failed, errors, skipped; each failed test)                               → gpu_tests.csv
#   2 ceilings    device, driver, versions; copy GB/s; bf16 GEMM TFLOP/s at M = 1024·95              → ceilings.csv
#   3 train d4    depth 4, batch 1024, seven providers (fused compiled first; fused-kernels-compiled) → train.csv
#   4 paper code  the paper's icl_grokking.py unchanged at depth 4 and 2: train_step / paper-code   → train.csv
#   5 kernels     fused vs reference eager vs compiled at the paper's shapes (no sweeps)            → kernels.csv
#   6 profile     torch.profiler of compiled depth-4 fused steps: top 15 kernels                    → profile.csv
#   7 train d2    depth 2, batch 1024, the six providers                                            → train.csv
#   8 tasks       step (per 1024 rows) and start-up as n_id goes 8 → every task, p = 29, 59, 97,
#                 on-device batches beside the host pipeline                                         → tasks.csv
#   9 train B4096 depth 4 at batch 4096, fused and reference compiled                                → train.csv
#  10 paper run   the `paper` preset (fused, compiled), evaluating every 500 steps, with the time left (≤ 60 s)
#                                                                  → paper_run.csv, paper_run-<time>.jsonl
#  11 ddp         optional, last, only with ≥ 60 s of the budget left (or alone: --only 11): a 1-rank torchrun run
#                 of the train suite, each provider eager plain then as <provider>-ddp1             → train.csv
# Then (same lease, not this script): python benchmarks/kernel_ab.py --out DIR. Runs the tree as it is
# (PYTHONPATH=., no install, no package index; the GPU image has torch 2.11, Triton 3.6, Python 3.12; not
# submitit). Every row's git_sha is this tree's commit, from git only where the tree is its own repository,
# else from FASTGROK_COMMIT (file or variable, fastgrok/bench/stamp.py). Exit status: the number of stages
# that failed or ran out of time (0: all passed).
set -u
HERE="$(pwd)"
abspath() { case "$1" in /*) echo "$1" ;; *) echo "${HERE}/$1" ;; esac; }
PY="${PYTHON:-python3}"  # the GPU image's interpreter with torch is python3 (no `python` there)
DRY="${GPU_CHECK_DRY:-0}"
ONLY="" OUT_DIR="" PAPER_DIR="" WHEELS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --only) ONLY="${2:?--only needs a list of stages, e.g. 3,4}"; shift ;;
        --only=*) ONLY="${1#--only=}" ;;
        --paper-dir) PAPER_DIR="$(abspath "${2:?--paper-dir needs a folder}")"; shift ;;
        --paper-dir=*) PAPER_DIR="$(abspath "${1#--paper-dir=}")" ;;
        --wheels) WHEELS="$(abspath "${2:?--wheels needs a folder}")"; shift ;;
        --wheels=*) WHEELS="$(abspath "${1#--wheels=}")" ;;
        -h|--help) sed -n '2,37p' "$0"; exit 0 ;;
        -*) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) OUT_DIR="$(abspath "$1")" ;;
    esac
    shift
done
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if [ "${DRY}" = "1" ]; then
    # CPU rehearsal: toy sizes, fused kernels under Triton's interpreter, graphs compiled with aot_eager
    # (inductor's CPU compile costs minutes here); results to a temporary folder. Time limits ×4: a
    # shared CPU is slow, and the rehearsal checks that every stage runs, not how fast.
    OUT_DIR="${OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_dry.XXXXXX")}"
    export TRITON_INTERPRET=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
    DEV=(--device cpu --toy --compile-backend aot_eager)
    SCALE=4; RUN_SECONDS="${GPU_CHECK_RUN_SECONDS:-20}"; MIN_RUN=3; WORKERS="${GPU_CHECK_TEST_WORKERS:-0}"
else
    OUT_DIR="${OUT_DIR:-bench_results}"
    unset TRITON_INTERPRET
    DEV=(--device cuda)
    SCALE=1; RUN_SECONDS="${GPU_CHECK_RUN_SECONDS:-60}"; MIN_RUN=30; WORKERS="${GPU_CHECK_TEST_WORKERS:-4}"
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

COMMIT="$("${PY}" -m fastgrok.bench.stamp 2>/dev/null || echo unknown)"
echo "=== gpu_check $( [ "${DRY}" = 1 ] && echo '(dry run on the CPU) ')-> ${OUT_DIR} | $(date -u +%FT%TZ) | git ${COMMIT}"
mkdir -p "${OUT_DIR}"
if [ "${DRY}" != "1" ] && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
fi
if [ -n "${WHEELS}" ]; then  # the paper's two packages, from wheels: there is no package index on the GPU machine
    SITE="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_site.XXXXXX")"
    if "${PY}" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
            --find-links "${WHEELS}" --target "${SITE}" "${WHEELS}"/*.whl; then
        export PYTHONPATH="${PYTHONPATH}:${SITE}"
        echo "=== wheels from ${WHEELS} installed in ${SITE}: $(cd "${WHEELS}" && ls -- *.whl | tr '\n' ' ')"
    else
        echo "=== wheels: pip could not install ${WHEELS}/*.whl; stage 4 will say what is missing"
    fi
fi
# one line each for what this image lacks (the paper's packages are checked again, and refused, by stage 4)
"${PY}" - <<'EOF' || true
import importlib.util as u
if u.find_spec("submitit") is None:
    print("=== submitit: not installed here; `fastgrok sweep` and the sweep suite need it (gpu_check runs neither)")
EOF
if [ -n "${PAPER_DIR}" ] && wanted 4; then
    "${PY}" - <<'EOF' || true
import importlib.util as u
missing = [m for m in ("schedulefree", "rotary_embedding_torch") if u.find_spec(m) is None]
if missing:
    print(f"=== paper code: {', '.join(missing)} missing: stage 4 will be refused; carry them as wheels (--wheels DIR)")
EOF
fi

stage 1 "gpu tests" 130 "${BENCH[@]}" gpu-tests "${DEV[@]}" --tests "${GPU_CHECK_TESTS:-tests}" --workers "${WORKERS}"
stage 2 "ceilings" 20 "${BENCH[@]}" ceilings "${DEV[@]}"
# depth 4 first (the step-time goal), fused compiled first among the compiled providers
# fused-kernels-compiled forces every kernel (the embedding kernel too), so each run re-checks the route
stage 3 "train benchmarks, depth 4" 75 "${BENCH[@]}" train "${DEV[@]}" --compile all --configs paper-d4 \
    --providers fused-compiled,reference-compiled,fused-kernels-compiled,host-pipeline-compiled,fused,reference,host-pipeline
if wanted 4; then
    if [ -n "${PAPER_DIR}" ]; then
        stage 4 "paper code, depth 4 and 2" 150 "${BENCH[@]}" paper-code "${DEV[@]}" --paper-dir "${PAPER_DIR}" \
            --configs paper-d4,paper-d2
    else
        echo "=== 4 paper code: skipped, no --paper-dir (a copy of github.com/ablghtianyi/ICL_Modular_Arithmetic)"
        SUMMARY+=("4 paper code: skipped (no --paper-dir)")
    fi
fi
stage 5 "kernel benchmarks" 40 "${BENCH[@]}" kernels "${DEV[@]}" --compile main --no-sweeps
stage 6 "profile of a depth-4 step" 35 "${BENCH[@]}" profile "${DEV[@]}" --configs paper-d4 --backend fused --top 15
stage 7 "train benchmarks, depth 2" 45 "${BENCH[@]}" train "${DEV[@]}" --compile all --configs paper-d2 \
    --providers fused-compiled,reference-compiled,host-pipeline-compiled,fused,reference,host-pipeline
stage 8 "task-count sweep" 50 "${BENCH[@]}" tasks "${DEV[@]}" --families p29,p59,p97 --no-evals --repeats 3
stage 9 "train benchmarks, batch 4096" 40 "${BENCH[@]}" train "${DEV[@]}" --compile all --configs paper-d4 \
    --batch-sizes 4096 --providers fused-compiled,reference-compiled
if wanted 10; then
    left=$((BUDGET - SECONDS - 20 * SCALE))  # for the last evaluation and checkpoint after the stop
    run=$(( left < RUN_SECONDS ? left : RUN_SECONDS ))
    if [ "${run}" -ge "${MIN_RUN}" ]; then
        stage 10 "paper run" $(( (run + 20 * SCALE) / SCALE )) "${BENCH[@]}" paper-run "${DEV[@]}" --seconds "${run}" \
            --eval-every 500 --backend fused
    else
        echo "=== 10 paper run: skipped, ${left}s left of the ${BUDGET}s budget"
        SUMMARY+=("10 paper run: skipped (${left}s left)"); failed=$((failed + 1))
    fi
fi
if wanted 11; then  # optional: only with the budget left after the paper run (which takes what it can)
    left=$((BUDGET - SECONDS))
    if [ "${left}" -ge $((60 * SCALE)) ]; then
        stage 11 "ddp train benchmark" 60 "${PY}" -m torch.distributed.run --standalone --nproc_per_node=1 \
            -m fastgrok bench --out-dir "${OUT_DIR}" train "${DEV[@]}" --compile off --providers fused,reference
    else
        echo "=== 11 ddp train benchmark: skipped (optional), ${left}s left of the ${BUDGET}s budget; run it alone with --only 11"
        SUMMARY+=("11 ddp train benchmark: skipped, optional (${left}s left)")
    fi
fi
"${PY}" -m fastgrok bench render --out-dir "${OUT_DIR}" >/dev/null || failed=$((failed + 1))
echo "=== gpu_check summary (${SECONDS}s in all; rows in ${OUT_DIR}):"
for line in "${SUMMARY[@]}"; do echo "    ${line}"; done
echo "=== gpu_check: ${failed} stage(s) failed or ran out of time"
exit "${failed}"
