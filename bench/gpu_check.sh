#!/usr/bin/env bash
# Every GPU figure nas-reid needs, in one run of at most ~8 minutes on one GPU.
#
#   bash bench/gpu_check.sh OUTDIR        # on a machine with one CUDA GPU
#
# Writes at most 8 files into OUTDIR (the device tool brings back 8): gpu_check.log (the steps,
# their limits and exit codes), env.txt (nvidia-smi, torch, the GPU), cuda_tests.txt (the tests
# skipped without CUDA), search_step.txt (bench/search_step.py --device cuda: softmax vs gumbel
# on the full space rga_dcs_ca, ResNet-50 at 256x128, batch 16x4, bf16, peak reserved memory
# against 24 GiB), train_throughput.txt (bench/train_throughput.py --device cuda: the papers'
# models, bf16 and float32), pretrain.txt, search.txt and retrain.txt (a short real run of each
# on the built-in benchmark, --device cuda --workers 8, the search GDAS on cpu_small, with their
# metrics records appended).
# Run folders and the benchmark cache go to $WORK (default /tmp/nas_reid_gpu_check).
#
# The lent GPU machine has no network: its python3 holds torch but not pydantic. Fetch the
# wheels here first (bash bench/gpu_wheels.sh -> .gpu_wheels/, ignored by git) and name
# .gpu_wheels in the device tool's carry; the script installs them and the package (no deps).
# Each step has its own time limit, so one slow step cannot eat the others' time.
set -uo pipefail
OUT=${1:?usage: bash bench/gpu_check.sh OUTDIR}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
WORK=${WORK:-/tmp/nas_reid_gpu_check}
mkdir -p "$WORK"
export NAS_REID_CACHE="$WORK/cache" PYTHONUNBUFFERED=1
LOG="$OUT/gpu_check.log"

log() { echo "[$(date +%T)] $*" | tee -a "$LOG"; }
step() {  # step NAME LIMIT_SECONDS COMMAND...: output to OUT/NAME.txt
    local name=$1 limit=$2
    shift 2
    log "start $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout "$limit" "$@" >> "$OUT/$name.txt" 2>&1
    log "end $name: exit $? after $((SECONDS - t0))s"
}
records() {  # the epoch records of a run folder, appended to OUT/NAME.txt
    [ -f "$2/metrics.jsonl" ] && grep '"kind": "epoch"' "$2/metrics.jsonl" >> "$OUT/$1.txt"
}

log "nas-reid GPU check, $(git rev-parse --short HEAD 2>/dev/null || echo 'no git')"
if ! python3 -c "import pydantic" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps .gpu_wheels/*.whl >> "$LOG" 2>&1 \
        || log "pydantic is missing and .gpu_wheels/ did not install (run bench/gpu_wheels.sh here)"
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . >> "$LOG" 2>&1 || log "pip install -e . failed"

step env 60 bash -c 'nvidia-smi; python3 -c "import torch, torchvision; print(\"torch\", torch.__version__, \"torchvision\", torchvision.__version__, \"cuda\", torch.version.cuda); print(torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0))"'
step cuda_tests 90 python3 -m pytest -q -p no:cacheprovider -rs tests/test_ranking.py \
    tests/test_rerank.py tests/test_latency.py -k "cuda or gpu or device"
step search_step 150 python3 bench/search_step.py --device cuda
step train_throughput 100 python3 bench/train_throughput.py --device cuda
step pretrain 100 nas-reid pretrain --device cuda --workers 8
step search 90 nas-reid search --device cuda --workers 8 --set sampling.strategy=gumbel --out "$WORK/search"
records search "$WORK/search"
step retrain 60 nas-reid retrain --genotype "$WORK/search" --device cuda --workers 8 \
    --out "$WORK/retrain"
records retrain "$WORK/retrain"
log "done"
