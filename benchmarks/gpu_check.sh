#!/usr/bin/env bash
# Issue 11's GPU checks in one go, for a session with a GPU machine (torch >= 2.11, no package index):
#
#   PYTHONPATH=src bash benchmarks/gpu_check.sh            # from the repository root
#
# Writes under $OUT (default ./gpu-check-out): env.txt (GPU, driver, torch), pytest.txt (the CUDA
# tests of tests/test_gpu.py: graphs vs eager and bf16 vs fp32 per family, two deterministic runs
# bitwise equal, SIGKILL + resume equal to the uninterrupted run), gpu_throughput.txt and
# paper_cost.txt (the benchmarks' tables). Without a GPU the tests skip and the benchmarks say so.
#
# Sized for a ~10-minute slot (not yet timed on a GPU: each step stops at its limit and the next
# one runs). CHECK=full runs paper_cost.py at full size (about twice as long).
# Each step has its own time limit, so one that hangs does not eat the others' time.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
CHECK=${CHECK:-quick}
status=0

{
    date -u
    git rev-parse HEAD 2>/dev/null || echo "not a git checkout"
    nvidia-smi 2>&1 || echo "nvidia-smi: not available"
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

step() {  # step NAME SECONDS COMMAND...: run with a limit, keep its output, remember a failure
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s)"
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    tail -n 40 "$OUT/$name.txt"
    echo "== $name: exit $rc after $((SECONDS - t0))s" | tee -a "$OUT/summary.txt"
    [ "$rc" -eq 0 ] || status=1
}

step pytest 300 python -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py -k "not benchmarks"
if [ "$CHECK" = full ]; then
    step gpu_throughput 420 python benchmarks/gpu_throughput.py --procs 1,2,4 --seconds 3
    step paper_cost 600 python benchmarks/paper_cost.py --epochs 2
else
    step gpu_throughput 240 python benchmarks/gpu_throughput.py --procs 1,2,4 --seconds 2
    step paper_cost 240 python benchmarks/paper_cost.py --quick
fi
echo "outputs in $OUT"
exit $status
