"""Benchmark: image loading of training epochs in a spawned process, against the same in the parent.

    python bench/loader_start.py [--workers 2] [--epochs 2] [--threads 1]

``bench/ground_truth.py --jobs N`` (N > 1) runs each retrain in a process started by ``spawn``.
A DataLoader's workers start like their parent unless told otherwise, so there every worker was
spawned afresh each epoch and imported torch and the package again; nas-reid's loaders now fork
their workers on Linux (:func:`nas_reid.data.image_dataset.worker_context`). This times
``--epochs`` epochs of the built-in benchmark's PK training stream (128x64, batch 16x4, the
training transform, ``--workers`` workers) three ways: in this process (the reference), in a
spawned child as nas-reid loads now, and in a spawned child with the workers spawned (as it
loaded before). Prints a markdown table; no assertion on timings.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def load_epochs(workers: int, epochs: int, threads: int, spawn_workers: bool) -> tuple[int, float]:
    """(images, seconds) for ``epochs`` epochs of the PK training stream."""
    import torch
    from torch.utils.data import DataLoader

    from nas_reid.data import load_dataset
    from nas_reid.data.streams import BatchStream

    torch.set_num_threads(threads)
    data = load_dataset("synthreid", None)
    stream = BatchStream(data.train, (128, 64), p=16, k=4, seed=0, stream=0, num_workers=workers)
    if spawn_workers:
        stream.loader = DataLoader(stream.dataset, batch_sampler=stream.sampler, num_workers=workers,
                                   multiprocessing_context="spawn",
                                   generator=torch.Generator().manual_seed(0))
    images = 0
    started = time.perf_counter()
    for epoch in range(epochs):
        for batch in stream.epoch_batches(epoch):
            images += batch[0].shape[0]
    return images, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="image-loading workers (>= 1)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the loading process")
    args = parser.parse_args()
    if args.workers < 1 or args.epochs < 1 or args.threads < 1:
        sys.exit("error: --workers, --epochs and --threads must be >= 1")
    cases = [("this process (reference)", None), ("a spawned child, workers forked (now)", False),
             ("a spawned child, workers spawned (before)", True)]
    print(f"| {args.epochs} epoch(s), {args.workers} workers, loaded in | images | seconds | "
          "images/s | x reference time |\n|---|---:|---:|---:|---:|")
    reference = None
    for label, spawn_workers in cases:
        if spawn_workers is None:
            images, seconds = load_epochs(args.workers, args.epochs, args.threads, False)
        else:
            with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
                images, seconds = pool.submit(load_epochs, args.workers, args.epochs, args.threads,
                                              spawn_workers).result()
        reference = reference or seconds
        print(f"| {label} | {images} | {seconds:.1f} | {images / seconds:.0f} | "
              f"{seconds / reference:.2f} |", flush=True)


if __name__ == "__main__":
    main()
