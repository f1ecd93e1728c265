"""How sharp must RIB's soft cluster assignments be to carry information? Estimates per beta.

RIB (``nas_reid.losses.rib``) assigns a feature to clusters with softmax(-beta * ||v - c||^2)
on unit vectors, where squared distances lie in [0, 4]. This script takes a trained model's
features of the training images, fits RIB's input clusters and feature centroids as an epoch
start does, and prints the estimates I(X;F), I(F;Y) and IB for several beta, beside the
authors' beta = 1 (the reference row) and the ceiling log(number of identities) of I(F;Y).

    python bench/rib_sharpness.py --checkpoint runs/retrain-X [--betas 1 10 100 1000]

Data: the model's own training set (``data`` of its checkpoint).
"""

from __future__ import annotations

import argparse
import math
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a model checkpoint or retrain run folder")
    parser.add_argument("--betas", nargs="+", type=float, default=[1, 10, 30, 100, 300, 1000, 3000])
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from nas_reid.data import load_dataset
    from nas_reid.data.streams import plain_loader
    from nas_reid.evaluation.features import extract
    from nas_reid.losses import RIBLoss
    from nas_reid.train.checkpoint import load_model

    loaded = load_model(args.checkpoint)
    data = loaded.state["data"]
    ds = load_dataset(data["name"], data["root"])
    size = loaded.genotype.input_size
    feats = extract(loaded.model, ds.train, size, "feat", torch.device("cpu"))
    labels = torch.tensor([pid for _, pid, _ in ds.train])
    print(f"{loaded.path}: {loaded.genotype.summary()}; {len(ds.train)} training images, "
          f"{ds.num_train_pids} identities (I(F;Y) <= log {ds.num_train_pids} = "
          f"{math.log(ds.num_train_pids):.2f} nats)\n")
    print("| beta | I(X;F) nats | I(F;Y) nats | IB nats | seconds |")
    print("|---:|---:|---:|---:|---:|")
    for beta in args.betas:
        started = time.perf_counter()
        rib = RIBLoss(ds.num_train_pids, weight=0.1, beta=beta, seed=0)
        rib.fit_input_clusters(plain_loader(ds.train, size, batch_size=256),
                               size=(min(32, size[0]), min(16, size[1])))
        est = rib.start_epoch(feats, labels)
        mark = " (authors')" if beta == 1 else ""
        print(f"| {beta:g}{mark} | {est['I_XF']:.4f} | {est['I_FY']:.4f} | {est['IB']:.4f} | "
              f"{time.perf_counter() - started:.1f} |", flush=True)


if __name__ == "__main__":
    main()
