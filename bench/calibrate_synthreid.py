"""Calibrate the synthetic benchmark: train a plain ResNet-18 for a few CPU minutes.

The benchmark is useful only if a plain model lands far from both 0 and 100 (mAP roughly
30-80 %), so that better architectures have room to show. This script trains torchvision's
ResNet-18 from scratch (no pretrained weights: nothing is downloaded) on the synthreid training
identities and evaluates retrieval on its query/gallery split after every epoch.

Recipe (kept deliberately plain): PK batches 16x4, the standard re-ID train transforms,
global average pooling -> BatchNorm1d (bias frozen) -> bias-free linear classifier, label
smoothed cross-entropy (0.1) only, Adam 3.5e-4 with weight decay 5e-4, a linear warm-up over
the first epoch, then cosine decay to zero at the last step. Retrieval uses the post-BN feature with cosine distance.

    python bench/calibrate_synthreid.py                # default benchmark, 15 epochs (~5 CPU min)
    python bench/calibrate_synthreid.py --epochs 2 --ids 60   # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader

from nas_reid.data import load_dataset
from nas_reid.data.image_dataset import ImageDataset
from nas_reid.data.sampler import PKBatchSampler
from nas_reid.data.synthreid import SynthConfig, ensure_synthreid
from nas_reid.data.transforms import build_transforms
from nas_reid.evaluation import evaluate_features


class PlainResNet18(nn.Module):
    def __init__(self, num_classes: int, last_stride: int) -> None:
        super().__init__()
        net = torchvision.models.resnet18(weights=None)
        if last_stride == 1:
            net.layer4[0].conv1.stride = (1, 1)
            net.layer4[0].downsample[0].stride = (1, 1)
        self.body = nn.Sequential(*list(net.children())[:-2])
        self.bn = nn.BatchNorm1d(512)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(512, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x):
        feat = self.bn(self.body(x).mean(dim=(2, 3)))
        return self.classifier(feat) if self.training else feat


def learning_rate(step: int, warmup: int, total: int, base: float = 3.5e-4) -> float:
    """Linear warm-up from 0.1 x base over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return base * (0.1 + 0.9 * step / warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def extract(model, items, transform, batch_size=128):
    loader = DataLoader(ImageDataset(items, transform), batch_size=batch_size, shuffle=False)
    model.eval()
    return torch.cat([model(images) for images, *_ in loader])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ids", type=int, default=None, help="override the benchmark's identities")
    parser.add_argument("--last-stride", type=int, choices=[1, 2], default=2)
    parser.add_argument("--json", default=None, help="write the per-epoch figures to this file")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    config = SynthConfig() if args.ids is None else replace(SynthConfig(), ids=args.ids)
    t0 = time.perf_counter()
    root = ensure_synthreid(config)
    ds = load_dataset("synthreid", root)
    print(f"benchmark {root} ready in {time.perf_counter() - t0:.1f} s; "
          f"train {ds.stats('train')}, query {ds.stats('query')}, gallery {ds.stats('gallery')}")

    h, w = config.height, config.width
    train_set = ImageDataset(ds.train, build_transforms(h, w, train=True))
    sampler = PKBatchSampler(train_set.pids, p=16, k=4, seed=args.seed, num_replicas=1, rank=0)
    loader = DataLoader(train_set, batch_sampler=sampler)
    model = PlainResNet18(ds.num_train_pids, args.last_stride)
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=3.5e-4, weight_decay=5e-4)
    test_tf = build_transforms(h, w, train=False)
    warmup = len(sampler)
    total_steps = warmup * args.epochs  # epochs have about the same number of batches

    rows = []
    step = 0
    train_time = 0.0
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        model.train()
        t_epoch = time.perf_counter()
        total, correct, loss_sum = 0, 0, 0.0
        for images, pids, _, _ in loader:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, warmup, total_steps)
            logits = model(images)
            loss = F.cross_entropy(logits, pids, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            total += len(pids)
            correct += (logits.argmax(1) == pids).sum().item()
            loss_sum += loss.item() * len(pids)
        train_time += time.perf_counter() - t_epoch
        qf = extract(model, ds.query, test_tf)
        gf = extract(model, ds.gallery, test_tf)
        q = torch.tensor([(p, c) for _, p, c in ds.query])
        g = torch.tensor([(p, c) for _, p, c in ds.gallery])
        res = evaluate_features(qf, gf, q[:, 0], g[:, 0], q[:, 1], g[:, 1], metric="cosine")
        row = dict(epoch=epoch + 1, loss=loss_sum / total, train_acc=correct / total,
                   train_s=train_time, img_per_s=total / (time.perf_counter() - t_epoch),
                   R1=float(res["cmc"][0]), R5=float(res["cmc"][4]), mAP=float(res["mAP"]),
                   mINP=float(res["mINP"]))
        rows.append(row)
        print(f"epoch {row['epoch']:2d}  loss {row['loss']:.3f}  train acc {row['train_acc']:.3f}  "
              f"train {row['train_s']:6.0f} s  R1 {100 * row['R1']:5.1f}  R5 {100 * row['R5']:5.1f}  "
              f"mAP {100 * row['mAP']:5.1f}  mINP {100 * row['mINP']:5.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "threads": torch.get_num_threads(), "epochs": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
