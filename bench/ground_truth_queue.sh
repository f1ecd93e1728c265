#!/usr/bin/env bash
# The runs behind bench/results/ground_truth_cpu_small.csv, in order: the cheap recipe (6 epochs,
# the synthetic recipe's schedule scaled to them, bf16 on the CPU) on a 12-architecture sample,
# then on the whole table (49 x 2 seeds), then the full recipe (20 epochs, float32) on the same
# 12 architectures, and the check that the cheap recipe ranks them like the full one (Kendall
# tau >= 0.8 of the means; `--report --compare`): the table stands in for the full recipe's
# only if it passes. Every call skips the rows the CSV already has, so this script can be
# stopped and run again.
#   bash bench/ground_truth_queue.sh               # 2 retrains at a time, 1 thread each
# Measured 2026-12-04: the 12 cheap retrains took 16.8 min on 2 jobs x 1 thread (2.2-2.8 min
# of training each), so the whole cheap table is about 4 thread-hours; a 20-epoch float32
# retrain took 20-39 min (mean 27) on 1 thread beside another job (papers_protocol.csv), so the
# full-recipe sample is about 5.4 thread-hours.
set -u
cd "$(dirname "$0")/.."
T="python bench/ground_truth.py --jobs 2 --threads 1"
# the cheap recipe: 6 epochs (schedule scaled), bf16 autocast and channels_last on the CPU (a
# 2-epoch retrain took 0.8 min against 1.4 in float32 on this machine's AVX512-BF16 cores,
# 2026-12-04; docs/results.md)
CHEAP="--epochs 6 --set precision.bf16=true --set precision.channels_last=true"
$T --archs 12 --seeds 0 $CHEAP
$T --seeds 0 1 $CHEAP
$T --archs 12 --seeds 0
$T $CHEAP --report --compare ""
