#!/usr/bin/env bash
# The runs behind bench/results/ground_truth_cpu_small.csv, in order: first the check that a
# cheaper recipe (6 epochs, the synthetic recipe's schedule scaled to them) ranks 12
# architectures like the full recipe (20 epochs), then the table itself with the recipe that
# passed (Kendall tau >= 0.8 of the means; see `--report --compare`). Every call skips the rows
# the CSV already has, so this script can be stopped and run again.
#   bash bench/ground_truth_queue.sh               # 2 retrains at a time, 1 thread each
# A 20-epoch retrain of ResNet-18 at 128x64 took 20-39 min (mean 27) on 1 thread beside another
# job on a 2-core machine (bench/results/papers_protocol.csv, wall_seconds, 23 pretrained rows),
# so the 12-architecture check costs about 5.4 thread-hours at 20 epochs and 1.6 at 6 (an
# estimate: epochs x 27/20 min), and the whole table (49 x 2 seeds) about 13 at 6 epochs.
set -u
cd "$(dirname "$0")/.."
T="python bench/ground_truth.py --jobs 2 --threads 1"
$T --archs 12 --seeds 0 --epochs 6
$T --archs 12 --seeds 0
$T --epochs 6 --report --compare ""
# then, once the check has chosen the recipe: GT_EPOCHS=6 (or GT_EPOCHS=full) bash ...
case "${GT_EPOCHS:-}" in
    "") ;;
    full) $T --seeds 0 1 ;;
    *) $T --seeds 0 1 --epochs "$GT_EPOCHS" ;;
esac
