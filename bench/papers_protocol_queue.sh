#!/usr/bin/env bash
# The runs behind bench/results/papers_protocol.csv, in the order they were queued: the papers'
# nine rows under the pretrained protocol seed by seed, then, seed by seed, the ablations of
# RGA-SC (gates initialised near 1, new modules at 10x the learning rate, from scratch). Every
# call skips the rows the CSV already has, so this script can be stopped and run again.
#   bash bench/papers_protocol_queue.sh            # 2 trainings at a time, 1 thread each
set -u
cd "$(dirname "$0")/.."
T="python bench/synthetic_table.py --jobs 2 --threads 1"
for seed in 0 1 2; do
    $T --seeds $seed
done
for seed in 0 1 2; do
    $T --seeds $seed --models rga_sc --gate-bias 3
    $T --seeds $seed --models rga_sc --set optimizer.new_lr_mult=10
    $T --seeds $seed --models baseline rga_sc --protocol scratch
done
# the budget ablation: the papers train for ~28k iterations (RGA: 600 epochs of 46 on Market),
# the synthetic recipe for 20 epochs of 37; three times the epochs, the schedule scaled
$T --seeds 0 --models baseline rga_sc --epochs 60
