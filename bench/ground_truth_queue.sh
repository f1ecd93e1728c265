#!/usr/bin/env bash
# The runs behind bench/results/ground_truth_cpu_small.csv, in order: first the check that a
# cheaper recipe (6 epochs, the synthetic recipe's schedule scaled to them, bf16 on the CPU)
# ranks 12 architectures like the full recipe (20 epochs, float32), then the table itself with
# the recipe that
# passed (Kendall tau >= 0.8 of the means; see `--report --compare`). Every call skips the rows
# the CSV already has, so this script can be stopped and run again.
#   bash bench/ground_truth_queue.sh               # 2 retrains at a time, 1 thread each
# A 20-epoch retrain of ResNet-18 at 128x64 took 20-39 min (mean 27) on 1 thread beside another
# job on a 2-core machine (bench/results/papers_protocol.csv, wall_seconds, 23 pretrained rows),
# so the 12-architecture check costs about 5.4 thread-hours at 20 epochs and 1.6 at 6 (an
# estimate: epochs x 27/20 min, float32), and the whole table (49 x 2 seeds) about 13 at 6
# epochs in float32, about 9 with bf16 (x1.5 measured on a 2-epoch retrain, eval included).
set -u
cd "$(dirname "$0")/.."
T="python bench/ground_truth.py --jobs 2 --threads 1"
# the cheap recipe: 6 epochs (schedule scaled), bf16 autocast and channels_last on the CPU (a
# 2-epoch retrain took 0.8 min against 1.4 in float32 on this machine's AVX512-BF16 cores,
# 2026-12-04; docs/results.md)
CHEAP="--epochs 6 --set precision.bf16=true --set precision.channels_last=true"
$T --archs 12 --seeds 0 $CHEAP
$T --archs 12 --seeds 0
$T $CHEAP --report --compare ""
# then, once the check has chosen the recipe: GT_RECIPE=cheap (or GT_RECIPE=full) bash ...
case "${GT_RECIPE:-}" in
    "") ;;
    full) $T --seeds 0 1 ;;
    cheap) $T --seeds 0 1 $CHEAP ;;
esac
