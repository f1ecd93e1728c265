#!/usr/bin/env bash
# The ground truth of the default space (bench/ground_truth.py) on one GPU: retrains one after
# another on the device, every finished row appended to OUTDIR/<GT_CSV's file name>.
#
#   bash bench/gpu_ground_truth.sh OUTDIR [ground_truth.py arguments ...]
#   e.g. bash bench/gpu_ground_truth.sh /tmp/out --seeds 0 1            # the full recipe
#        bash bench/gpu_ground_truth.sh /tmp/out --seeds 0 1 --epochs 6 # the cheap one
# On CUDA the recipe's precision resolves to bf16 + channels_last, and the rows are keyed so;
# add --set precision.bf16=false --set precision.channels_last=false for float32 rows that join
# a CPU's.
#
# Prepare here first: bash bench/gpu_wheels.sh (pydantic for the GPU machine's python), and
#   mkdir -p .gpu_cache && cp -r ~/.cache/nas_reid/pretrained .gpu_cache/
# so that the GPU retrains start from the same pretrained backbone file as the CPU rows (without
# it the backbone is pretrained again there, on the GPU, and is another file). Name .gpu_wheels
# and .gpu_cache in the device tool's carry. GT_CSV (default
# bench/results/ground_truth_cpu_small.csv) is the committed CSV to continue: it is copied in
# first, so rows measured before are skipped (GT_FRESH=1: not copied, every row retrained here);
# a CSV holds the rows of one backbone file (ground_truth.py stops at once on another), so name
# the CSV of the carried file, e.g. GT_CSV=bench/results/ground_truth_cpu_small_backbone_<sha>.csv,
# and merge the returned CSV's new rows (device cuda) into it.
# GT_JOBS retrains at a time (default 1) on GT_THREADS torch threads (default 4) with GT_WORKERS
# image-loading processes each (default 8), GT_LIMIT seconds in all (default 540): a row is
# written the moment its retrain ends, so whatever finished before the limit comes back. One at a
# time, a full-recipe retrain trained in 24-29 s on an H200 in float32 (2026-12-04, 11 rows). Side by
# side none finished (8 and 6 at a time), and 2 at a time trained for 454 and 469 s with the GPU
# idle: each job runs in a spawned process, whose image-loading workers were then spawned too,
# afresh every epoch, importing torch again (3.7x an epoch's loading time on a CPU, measured by
# bench/loader_start.py; fixed since: nas-reid's loaders fork their workers). Whether 2 at a time
# now beats one is not measured on a GPU; 1 stays the default until it is.
# NVIDIA_TF32_OVERRIDE=0 is exported (unless set): cuDNN would otherwise run float32 convolutions
# in TF32 (torch's default), and the rows say float32.
set -uo pipefail
OUT=${1:?usage: bash bench/gpu_ground_truth.sh OUTDIR [ground_truth.py arguments]}
shift
cd "$(dirname "$0")/.."
export NVIDIA_TF32_OVERRIDE=${NVIDIA_TF32_OVERRIDE:-0}
mkdir -p "$OUT"
. bench/gpu_setup.sh
GT_CSV=${GT_CSV:-bench/results/ground_truth_cpu_small.csv}
CSV="$OUT/$(basename "$GT_CSV")"
[ -z "${GT_FRESH:-}" ] && [ -f "$GT_CSV" ] && cp "$GT_CSV" "$CSV"
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/env.txt" 2>&1
timeout "${GT_LIMIT:-540}" python3 bench/ground_truth.py --device cuda --jobs "${GT_JOBS:-1}" \
    --threads "${GT_THREADS:-4}" --workers "${GT_WORKERS:-8}" --csv "$CSV" --out "$WORK/runs" "$@" > "$OUT/ground_truth.log" 2>&1
echo "exit $? after ${SECONDS}s" >> "$OUT/ground_truth.log"
