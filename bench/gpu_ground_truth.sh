#!/usr/bin/env bash
# The ground truth of the default space (bench/ground_truth.py) on one GPU: many retrains side by
# side on the one device, every finished row appended to OUTDIR/ground_truth_cpu_small.csv.
#
#   bash bench/gpu_ground_truth.sh OUTDIR [ground_truth.py arguments ...]
#   e.g. bash bench/gpu_ground_truth.sh /tmp/out --seeds 0 1            # the full recipe
#        bash bench/gpu_ground_truth.sh /tmp/out --seeds 0 1 --epochs 6 # the cheap one
#
# Prepare here first: bash bench/gpu_wheels.sh (pydantic for the GPU machine's python), and
#   mkdir -p .gpu_cache && cp -r ~/.cache/nas_reid/pretrained .gpu_cache/
# so that the GPU retrains start from the same pretrained backbone file as the CPU rows (the
# cache key and SHA-256 are checked; without it the backbone is pretrained again there). Name
# .gpu_wheels and .gpu_cache in the device tool's carry. The CSV already committed is copied in
# first, so rows measured before are skipped (GT_FRESH=1: not copied, every row retrained
# here); merge the returned CSV's new rows into bench/results/ground_truth_cpu_small.csv (same
# columns; the device column says cuda), or keep them apart when the backbone file differs.
# GT_JOBS retrains at a time (default 8) on GT_THREADS torch threads (default 2) with GT_WORKERS
# image-loading processes each (default 1), GT_LIMIT seconds in all (default 540): a row is
# written the moment its retrain ends, so whatever finished before the limit comes back.
set -uo pipefail
OUT=${1:?usage: bash bench/gpu_ground_truth.sh OUTDIR [ground_truth.py arguments]}
shift
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
. bench/gpu_setup.sh
CSV="$OUT/ground_truth_cpu_small.csv"
[ -z "${GT_FRESH:-}" ] && [ -f bench/results/ground_truth_cpu_small.csv ] && cp bench/results/ground_truth_cpu_small.csv "$CSV"
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/env.txt" 2>&1
timeout "${GT_LIMIT:-540}" python3 bench/ground_truth.py --device cuda --jobs "${GT_JOBS:-8}" \
    --threads "${GT_THREADS:-2}" --workers "${GT_WORKERS:-1}" --csv "$CSV" --out "$WORK/runs" "$@" > "$OUT/ground_truth.log" 2>&1
echo "exit $? after ${SECONDS}s" >> "$OUT/ground_truth.log"
