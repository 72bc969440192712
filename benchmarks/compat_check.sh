#!/usr/bin/env bash
# Compatibility with the GPU machines' versions (torch 2.11, Triton 3.6, Python 3.12), checked on a CPU:
#
#   benchmarks/compat_check.sh [OUT_DIR]           # venv (built once), whole test suite, offline sm_90 compile
#   benchmarks/compat_check.sh --no-tests [OUT_DIR] # the offline compile only
#   COMPAT_VENV=/work/venvs/compat COMPAT_PYTHON=python3.12 benchmarks/compat_check.sh
#
# 1. Builds (once; reused after) a venv at $COMPAT_VENV (default /work/venvs/compat-torch2.11) with
#    $COMPAT_PYTHON (default python3.12): torch==2.11.0 and triton==3.6.0 from PyPI (torch's Linux wheel
#    there is the CUDA 13.0 build, as on the GPU machines: ≈ 4.6 GB with its nvidia-* wheels; it runs on
#    the CPU), numpy<2.4 (Triton 3.6's interpreter calls int() on 1-element arrays, which NumPy 2.4
#    refuses; the GPU machines' numpy 2.5 is fine there: CUDA runs compiled kernels, not the interpreter),
#    rich, pytest, pytest-benchmark; fastgrok itself with --no-deps -e.
# 2. Runs the whole test suite under Triton's interpreter with that pair.
# 3. Compiles every kernel configuration the paper presets, benchmarks and GPU tests launch for sm_90
#    offline (`fastgrok bench sm90`: triton.compile with GPUTarget("cuda", 90, 32), ptxas's report) and
#    appends registers / spill bytes / shared bytes to OUT_DIR/sm90.csv (default bench_results).
# Exit status: the number of steps that failed.
set -u
cd "$(dirname "$0")/.."
VENV="${COMPAT_VENV:-/work/venvs/compat-torch2.11}"
PYBASE="${COMPAT_PYTHON:-python3.12}"
TESTS=1
OUT_DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --no-tests) TESTS=0 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        -*) echo "compat_check: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) OUT_DIR="$1" ;;
    esac
    shift
done
OUT_DIR="${OUT_DIR:-bench_results}"
failed=0
PY="${VENV}/bin/python"
if [ ! -x "${PY}" ] || ! "${PY}" -c "import torch, triton, sys; assert torch.__version__.startswith('2.11.') \
and triton.__version__ == '3.6.0'" 2>/dev/null; then
    echo "=== building ${VENV} with ${PYBASE} (torch 2.11.0, triton 3.6.0; several GB, once)"
    "${PYBASE}" -m venv "${VENV}" || exit 1
    "${PY}" -m pip install -q --upgrade pip || exit 1
    "${PY}" -m pip install -q torch==2.11.0 triton==3.6.0 "numpy<2.4" rich pytest pytest-benchmark || exit 1
fi
"${PY}" -m pip install -q --no-deps -e . || exit 1
"${PY}" -c "import sys, torch, triton, numpy; print('=== python', sys.version.split()[0], '| torch', torch.__version__, \
'| triton', triton.__version__, '| numpy', numpy.__version__)"
if [ "${TESTS}" = 1 ]; then
    echo "=== test suite (interpreter) under the old pair"
    t0=$SECONDS
    "${PY}" -m pytest -q -p no:cacheprovider -ra -W "ignore::DeprecationWarning" || failed=$((failed + 1))
    echo "=== test suite: $((SECONDS - t0))s"
fi
echo "=== offline sm_90 compile of every kernel configuration -> ${OUT_DIR}/sm90.csv"
env -u TRITON_INTERPRET "${PY}" -m fastgrok bench sm90 --out-dir "${OUT_DIR}" || failed=$((failed + 1))
echo "=== compat_check: ${failed} step(s) failed"
exit "${failed}"
