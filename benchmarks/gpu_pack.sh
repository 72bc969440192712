#!/usr/bin/env bash
# Pack this tree for a machine that gets a copy without .git (a lent GPU machine), stamped with its commit.
#
#   benchmarks/gpu_pack.sh DEST [--paper-dir DIR] [--wheels DIR]
#
# DEST (new or empty) gets the files git tracks or does not ignore, as they are on disk (what the device tool
# sends), and DEST/FASTGROK_COMMIT: the short sha, "-dirty" when those files differ from it. Every row
# gpu_check writes from DEST carries that commit, never the sha of a repository DEST happens to sit in
# (fastgrok/bench/stamp.py). --paper-dir DIR copies the paper's
# code (github.com/ablghtianyi/ICL_Modular_Arithmetic: _src/, pre_training/, LICENSE, README.md) to DEST/paper
# with DEST/paper/PAPER_COMMIT; --wheels DIR copies DIR/*.whl (schedulefree, rotary_embedding_torch) to
# DEST/wheels. Then, on the machine: cd DEST && benchmarks/gpu_check.sh --paper-dir paper --wheels wheels OUT.
# The paper's code is never committed here: pack into a folder git ignores (e.g. .pack/, in .git/info/exclude).
set -euo pipefail
die() { echo "gpu_pack: $*" >&2; exit 2; }
DEST="" PAPER="" WHEELS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --paper-dir) PAPER="${2:?--paper-dir needs a folder}"; shift ;;
        --paper-dir=*) PAPER="${1#--paper-dir=}" ;;
        --wheels) WHEELS="${2:?--wheels needs a folder}"; shift ;;
        --wheels=*) WHEELS="${1#--wheels=}" ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [ -z "${DEST}" ] || die "one DEST only (got ${DEST} and $1)"; DEST="$1" ;;
    esac
    shift
done
[ -n "${DEST}" ] || die "DEST missing: benchmarks/gpu_pack.sh DEST [--paper-dir DIR] [--wheels DIR]"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
top="$(git -C "${ROOT}" rev-parse --show-toplevel 2>/dev/null)" || die "${ROOT} is not a git checkout"
[ "$(cd "${top}" && pwd -P)" = "$(cd "${ROOT}" && pwd -P)" ] || die "${ROOT} is not its own repository's root"
if [ -n "${PAPER}" ]; then
    [ -f "${PAPER}/pre_training/icl_grokking.py" ] || die "--paper-dir ${PAPER}: no pre_training/icl_grokking.py there"
    [ -d "${PAPER}/_src" ] || die "--paper-dir ${PAPER}: no _src/ there"
fi
if [ -n "${WHEELS}" ]; then
    compgen -G "${WHEELS}/*.whl" >/dev/null || die "--wheels ${WHEELS}: no .whl files there"
fi
if [ -e "${DEST}" ] && [ -n "$(ls -A "${DEST}" 2>/dev/null)" ]; then
    die "DEST ${DEST} exists and is not empty"
fi
mkdir -p "${DEST}"
DEST="$(cd "${DEST}" && pwd)"

sha="$(git -C "${ROOT}" rev-parse --short HEAD)"
[ -z "$(git -C "${ROOT}" status --porcelain --untracked-files=normal)" ] || sha="${sha}-dirty"
# tracked and untracked-not-ignored files as on disk (a file deleted in the work tree is left out)
(cd "${ROOT}" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf -) | tar -xf - -C "${DEST}"
echo "${sha}" >"${DEST}/FASTGROK_COMMIT"
echo "gpu_pack: ${ROOT} at ${sha} -> ${DEST} ($(du -sh "${DEST}" | cut -f1))"

if [ -n "${PAPER}" ]; then
    mkdir -p "${DEST}/paper"
    for f in _src pre_training LICENSE README.md; do
        [ -e "${PAPER}/${f}" ] && cp -R "${PAPER}/${f}" "${DEST}/paper/"
    done
    find "${DEST}/paper" -name __pycache__ -type d -prune -exec rm -rf {} +
    psha="unknown"
    ptop="$(git -C "${PAPER}" rev-parse --show-toplevel 2>/dev/null || true)"
    if [ -n "${ptop}" ] && [ "$(cd "${ptop}" && pwd -P)" = "$(cd "${PAPER}" && pwd -P)" ]; then
        psha="$(git -C "${PAPER}" rev-parse --short HEAD)"
        [ -z "$(git -C "${PAPER}" status --porcelain --untracked-files=no)" ] || psha="${psha}-dirty"
    elif [ -s "${PAPER}/PAPER_COMMIT" ]; then
        psha="$(head -n1 "${PAPER}/PAPER_COMMIT")"
    fi
    echo "${psha}" >"${DEST}/paper/PAPER_COMMIT"
    echo "gpu_pack: paper code ${PAPER} at ${psha} -> ${DEST}/paper"
fi
if [ -n "${WHEELS}" ]; then
    mkdir -p "${DEST}/wheels"
    cp "${WHEELS}"/*.whl "${DEST}/wheels/"
    echo "gpu_pack: wheels -> ${DEST}/wheels: $(cd "${DEST}/wheels" && ls | tr '\n' ' ')"
fi
