#!/usr/bin/env bash
# One prepared command for a GPU lease (15 minutes of device time, at most 600 s a call): gpu_check.sh with a
# budget, then the attention A/B (benchmarks/kernel_ab.py) with its own, rows of both under OUT_DIR.
#
#   benchmarks/gpu_lease.sh [--paper-dir DIR] [--wheels DIR] OUT_DIR     # on the GPU machine, from a packed tree
#   benchmarks/gpu_lease.sh --dry-run OUT_DIR                            # CPU rehearsal of both (toy sizes)
#   GPU_LEASE_CHECK_BUDGET=230 GPU_LEASE_AB_BUDGET=280 GPU_LEASE_ONLY=1,2,3 benchmarks/gpu_lease.sh OUT_DIR
#
# Defaults: gpu_check's stages 1-3 (GPU tests, ceilings, the depth-4 train step beside the reference-compiled
# one: the issue #29 step target's denominator, in the same lease) in 230 s, then the A/B in 280 s with one
# finalist besides v2 and the default (GPU_LEASE_AB_ARGS, default "--finalists 1") and the MLP epilogue part:
# ≈ 510 s, so a call with timeout_s 550 holds both and leaves a warm machine minutes for a second call, the
# paper's own loop (gpu_check.sh --only 4 --paper-dir paper --wheels wheels OUT, ≤ 150 s: the other target's
# denominator). OUT_DIR/check and OUT_DIR/ab get the rows; `fastgrok bench merge --from` each of them here.
# Exit status: gpu_check's count of failed stages plus the A/B's exit status.
set -u
HERE="$(pwd)"
abspath() { case "$1" in /*) echo "$1" ;; *) echo "${HERE}/$1" ;; esac; }
PY="${PYTHON:-python3}"
DRY=() CHECK_ARGS=() OUT_DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=(--dry-run) ;;
        --paper-dir|--wheels) CHECK_ARGS+=("$1" "$(abspath "${2:?$1 needs a folder}")"); shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        -*) echo "gpu_lease: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) [ -z "${OUT_DIR}" ] || { echo "gpu_lease: one OUT_DIR only (got ${OUT_DIR} and $1)" >&2; exit 2; }
           OUT_DIR="$(abspath "$1")" ;;
    esac
    shift
done
[ -n "${OUT_DIR}" ] || { echo "gpu_lease: OUT_DIR missing (see --help)" >&2; exit 2; }
cd "$(dirname "$0")/.."
mkdir -p "${OUT_DIR}/check" "${OUT_DIR}/ab" || exit 2
echo "=== gpu_lease: gpu_check (stages ${GPU_LEASE_ONLY:-1,2,3}, ${GPU_LEASE_CHECK_BUDGET:-230} s) then the A/B" \
     "(${GPU_LEASE_AB_BUDGET:-280} s) -> ${OUT_DIR}"
GPU_CHECK_BUDGET="${GPU_LEASE_CHECK_BUDGET:-230}" bash benchmarks/gpu_check.sh "${DRY[@]}" \
    --only "${GPU_LEASE_ONLY:-1,2,3}" "${CHECK_ARGS[@]}" "${OUT_DIR}/check"
check=$?
AB_ARGS="--finalists 1"  # GPU_LEASE_AB_ARGS, when set (even empty), replaces it: words for kernel_ab.py
[ -n "${GPU_LEASE_AB_ARGS+set}" ] && AB_ARGS="${GPU_LEASE_AB_ARGS}"
# shellcheck disable=SC2086  # AB_ARGS is meant to split into words
PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" "${PY}" benchmarks/kernel_ab.py "${DRY[@]}" \
    --budget "${GPU_LEASE_AB_BUDGET:-280}" --out "${OUT_DIR}/ab" ${AB_ARGS}
ab=$?
echo "=== gpu_lease: gpu_check ${check} stage(s) failed or cut; kernel_ab exit ${ab}"
exit $((check + ab))
