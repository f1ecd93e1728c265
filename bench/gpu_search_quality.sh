#!/usr/bin/env bash
# Search-quality rows (bench/search_quality.py) on one GPU: several searches side by side, each
# finished search appended to OUTDIR/search_quality.csv with device cuda.
#
#   bash bench/gpu_search_quality.sh OUTDIR GT_OVERRIDES "STRATEGY SEED..." ["STRATEGY SEED..." ...]
#   e.g. bash bench/gpu_search_quality.sh /tmp/out \
#            "precision.bf16=true precision.channels_last=true --epochs 6" "softmax 1 2" "gumbel 3 4"
#
# Each quoted group is one stream (one process, its seeds one after another); the streams run
# at the same time, so their wall seconds are contended GPU seconds: the random-search rows at
# the same compute are counted from CPU searches only (bench/search_quality.py). Prepare as for
# bench/gpu_ground_truth.sh (.gpu_wheels and .gpu_cache in the device tool's carry; both set up
# through bench/gpu_setup.sh, under a lock, so they may start together). The CSV already
# committed is copied in first, so its rows are skipped; merge the returned CSV's new rows into
# bench/results/search_quality.csv. SQ_LIMIT seconds in all (default 540).
set -uo pipefail
OUT=${1:?usage: bash bench/gpu_search_quality.sh OUTDIR GT_OVERRIDES "STRATEGY SEED..." ...}
GT=${2?usage: bash bench/gpu_search_quality.sh OUTDIR GT_OVERRIDES "STRATEGY SEED..." ...}
shift 2
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
. bench/gpu_setup.sh
CSV="$OUT/search_quality.csv"
cp bench/results/search_quality.csv "$CSV"
for stream in "$@"; do
    read -r strategy seeds <<< "$stream"
    # shellcheck disable=SC2086  # the seeds are words
    timeout "${SQ_LIMIT:-540}" python3 bench/search_quality.py --device cuda --workers 2 \
        --threads 1 --strategies "$strategy" --seeds $seeds --gt-overrides "$GT" --csv "$CSV" \
        --out "$WORK/search_quality" 2>&1 | sed -u "s/^/[$strategy $seeds] /" >> "$OUT/search_quality.log" &
done
wait
echo "done after ${SECONDS}s" >> "$OUT/search_quality.log"
