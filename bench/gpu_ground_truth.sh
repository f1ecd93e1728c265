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
# time by default because side by side none finished (2026-12-04): 8 full-recipe retrains (43 s
# of training each when alone) had none done after 343 s, 6 none after 275 s; the likely reading
# (not measured) is that they shared the GPU with no gain and all progressed together (8 x 43 s
# = 344 s), so a time limit cut them all short.
set -uo pipefail
OUT=${1:?usage: bash bench/gpu_ground_truth.sh OUTDIR [ground_truth.py arguments]}
shift
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
. bench/gpu_setup.sh
GT_CSV=${GT_CSV:-bench/results/ground_truth_cpu_small.csv}
CSV="$OUT/$(basename "$GT_CSV")"
[ -z "${GT_FRESH:-}" ] && [ -f "$GT_CSV" ] && cp "$GT_CSV" "$CSV"
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/env.txt" 2>&1
timeout "${GT_LIMIT:-540}" python3 bench/ground_truth.py --device cuda --jobs "${GT_JOBS:-1}" \
    --threads "${GT_THREADS:-4}" --workers "${GT_WORKERS:-8}" --csv "$CSV" --out "$WORK/runs" "$@" > "$OUT/ground_truth.log" 2>&1
echo "exit $? after ${SECONDS}s" >> "$OUT/ground_truth.log"
