#!/usr/bin/env bash
# The GPU checks in one command, sized for one lent GPU's window (10 minutes per command):
#
#   PYTHONPATH=src bash benchmarks/gpu_check.sh            # from the repository root; torch >= 2.11
#   KDPIPE_GPU_CHECK_DRY_RUN=1 bash benchmarks/gpu_check.sh  # every step on the CPU at toy size (CI)
#
# Steps, each under its own `timeout` (a step that hangs loses only its own time; the limits add
# up to 450 s, 470 s with the kill grace, under 8 minutes):
#   env             GPU, driver, torch, git commit               (20 s)
#   pytest          tests/test_gpu.py: every run of every family, graphs vs eager, bf16 vs fp32,
#                   two deterministic runs bitwise equal, SIGKILL + resume   (210 s)
#   gpu_throughput  images/s and ratios against the issue's targets, GPU sharing (140 s; --budget 105)
#   paper_cost      the report's GPU-hours, as many job types as fit        (80 s; --budget 45)
# Output is unbuffered: every line is on stdout and in $OUT/<step>.txt as soon as it is printed,
# and $OUT/gpu_check.json (rewritten atomically after each test, measurement and step) keeps
# whatever finished before a kill. $OUT defaults to ./gpu-check-out. Exit status 1 if a step failed,
# 2 without a CUDA GPU (unless a dry run).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SUMMARY="$OUT/gpu_check.json"
rm -f "$SUMMARY"
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export KDPIPE_GPU_CHECK_SUMMARY="$SUMMARY"  # the pytest plugin (benchmarks/check_summary.py) writes here
DRY_RUN=${KDPIPE_GPU_CHECK_DRY_RUN:-0}
KILL_AFTER=5  # seconds after a step's limit before SIGKILL
status=0

# Without a GPU every CUDA test skips and both benchmarks measure nothing: that is no check, so it
# stops here (the dry run is the CPU's check of this script).
if [ "$DRY_RUN" != 1 ] && ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA GPU is visible (torch.cuda.is_available() is False), so there is nothing to check;" \
         "run it on a GPU machine, or KDPIPE_GPU_CHECK_DRY_RUN=1 for the same steps at toy size on the CPU" >&2
    exit 2
fi

if [ "$DRY_RUN" = 1 ]; then
    echo "gpu_check: DRY RUN on the CPU (toy sizes; no figure means anything)"
    THROUGHPUT_ARGS=(--dry-run --models resnet20,ae_pair_256 --procs 1,2)
    COST_ARGS=(--dry-run --configfile presets/demo.yaml --configfile presets/tiny.yaml --epochs 1 --budget 1)
else
    THROUGHPUT_ARGS=(--budget 105 --procs 1,2,4 --seconds 3)
    COST_ARGS=(--quick --epochs 2 --budget 45)
fi

step() {  # step NAME LIMIT COMMAND...: run under a limit, show and keep its output, record the outcome
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s)"
    local t0=$SECONDS
    timeout -k "$KILL_AFTER" "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - t0))s"
    python benchmarks/check_summary.py step "$SUMMARY" "$name" "$rc" "$((SECONDS - t0))" "$limit"
    [ "$rc" -eq 0 ] || status=1
}

step env 20 bash -c 'date -u; nvidia-smi 2>&1 || echo "nvidia-smi: not available";
    python -u benchmarks/check_summary.py env "$0"' "$SUMMARY"
# One process on the one GPU: pyproject's addopts (pytest-xdist workers, not installed there) dropped.
step pytest 210 python -u -m pytest -q -o addopts= -p no:xdist -p no:cacheprovider -p check_summary -rs \
    tests/test_gpu.py -k "not benchmarks"
step gpu_throughput 140 python -u benchmarks/gpu_throughput.py "${THROUGHPUT_ARGS[@]}" --summary "$SUMMARY"
step paper_cost 80 python -u benchmarks/paper_cost.py "${COST_ARGS[@]}" --summary "$SUMMARY"

python - "$SUMMARY" "$status" <<'EOF'
import sys
import check_summary
check_summary.update(sys.argv[1], "finished", value=True)
check_summary.update(sys.argv[1], "passed", value=sys.argv[2] == "0")
EOF
echo "gpu_check: $([ $status -eq 0 ] && echo passed || echo FAILED) in ${SECONDS}s; outputs in $OUT (summary: $SUMMARY)"
exit $status
