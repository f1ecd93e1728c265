"""Benchmark: training images per second and peak memory of retrained models, side by side.

    python bench/train_throughput.py [--device cpu|cuda] [--searched GENOTYPE.json]
                                     [--models baseline rga_sc ...] [--p P --k K]
                                     [--backbone resnet18|resnet50] [--size HxW]
                                     [--repeats N] [--threads T] [--bf16]

One training step is what :mod:`nas_reid.train.loop` does per batch: forward of a P x K batch,
label-smoothed CE on the logits + batch-hard triplet on the pre-BN feature, backward, Adam. On
CUDA it runs twice per model, in float32 and as the recipe runs it there (bf16 autocast and
channels_last); on CPU too with ``--bf16`` (worth it on CPUs with AVX512-BF16). The reference is the ``baseline`` row (the same backbone without attention
cells), measured in the same run; each other row gives its ratio to it.

Defaults: on CUDA the papers' models as shipped (ResNet-50, 256x128) at batch 16x4 = 64; on
CPU the references retargeted to ResNet-18 at 64x32 (the CPU space's size), batch 16x4. A
``--searched`` genotype is measured as it is (its own backbone and size, printed in its row).
Inputs are random tensors on the device (image decoding is not timed); the figure is the best
of ``--repeats`` steps after two warm-up steps.

Memory: CPU rows run each in a fresh process (:func:`bench.measure.run_measured`): peak RSS
above the RSS just before the first step, and the whole process's peak. CUDA:
``torch.cuda.max_memory_allocated`` (total, and above the allocation before the first step).

Prints a markdown table. No assertion on timings.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.measure import WARMUP, add_worker_arguments, measure_case, serve_worker, time_steps  # noqa: E402

NUM_CLASSES = 751  # Market-1501's training identities: the classifier's width


def load_genotype(case: dict):
    from nas_reid.space.genotype import Genotype
    from nas_reid.space.reference import resolve_genotype, retarget

    if case["model"] == "searched":
        return Genotype.from_json(case["searched"])
    genotype, _ = resolve_genotype(case["model"])
    if case["backbone"] or case["size"]:
        genotype = retarget(genotype, backbone=case["backbone"],
                            input_size=tuple(case["size"]) if case["size"] else None)
    return genotype


def run_case(case: dict) -> dict:
    """Build one model and time its training steps."""
    import torch

    from nas_reid.losses import CrossEntropyLabelSmooth, TripletLoss
    from nas_reid.space.discrete import build_model

    if case["threads"]:
        torch.set_num_threads(case["threads"])
    device = torch.device(case["device"])
    genotype = load_genotype(case)
    torch.manual_seed(0)
    net = build_model(genotype, NUM_CLASSES).to(device).train()
    fast = case["precision"] == "bf16"
    memory_format = torch.channels_last if fast else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    params = [q for q in net.parameters() if q.requires_grad]
    opt = torch.optim.Adam(params, lr=3.5e-4, weight_decay=5e-4)
    ce = CrossEntropyLabelSmooth(NUM_CLASSES, 0.1)
    triplet = TripletLoss(0.3)
    p, k = case["p"], case["k"]
    h, w = genotype.input_size
    x = torch.randn(p * k, 3, h, w, device=device).contiguous(memory_format=memory_format)
    labels = torch.arange(p, device=device).repeat_interleave(k)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
            out = net(x)
        loss = ce(out["logits"].float(), labels) + triplet(out["feat"].float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    result = {"params_m": sum(q.numel() for q in net.parameters()) / 1e6,
              "size": [h, w], "backbone": genotype.backbone.name, "cells": genotype.summary()}
    result.update(time_steps(step, device, case["repeats"]))
    result["img_s"] = p * k / result["best_s"]
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--searched", help="a genotype.json to measure beside the references")
    parser.add_argument("--models", nargs="+", default=["baseline", "rga_sc"],
                        help="reference names (baseline first: the reference row)")
    parser.add_argument("--backbone", choices=["resnet18", "resnet50"],
                        help="retarget the references (default: resnet18 on CPU, as shipped on CUDA)")
    parser.add_argument("--size", help="retarget the references to HxW (default: 64x32 on CPU)")
    parser.add_argument("--p", type=int, default=16)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--repeats", type=int, help="timed steps (default: 3 on CPU, 10 on CUDA)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--bf16", action="store_true",
                        help="on CPU also measure bf16 autocast + channels_last (always on CUDA)")
    add_worker_arguments(parser)
    args = parser.parse_args(argv)
    serve_worker(args, run_case)

    import torch

    cuda = args.device == "cuda"
    backbone = args.backbone or (None if cuda else "resnet18")
    size = ([int(v) for v in args.size.lower().split("x")] if args.size
            else None if cuda else [64, 32])
    repeats = args.repeats or (10 if cuda else 3)
    precisions = ["fp32", "bf16"] if cuda or args.bf16 else ["fp32"]
    models = list(args.models) + (["searched"] if args.searched else [])
    where = (torch.cuda.get_device_name() if cuda else
             f"CPU ({os.cpu_count()} cores, {args.threads or torch.get_num_threads()} threads)")
    print(f"training step (CE + triplet, Adam) at batch {args.p}x{args.k}, best of {repeats} after "
          f"{WARMUP} warm-up; references on {backbone or 'their own backbone'}"
          f"{f' {size[0]}x{size[1]}' if size else ''}; {where}; torch {torch.__version__}")
    print()
    print("| model | backbone, input | precision | params (M) | step ms | img/s | x baseline "
          "| peak MiB above pre-step | peak MiB total |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    base: dict[str, float] = {}
    for model in models:
        for precision in precisions:
            case = {"model": model, "searched": args.searched, "backbone": backbone, "size": size,
                    "device": args.device, "precision": precision, "p": args.p, "k": args.k,
                    "repeats": repeats, "threads": args.threads}
            r = measure_case(__file__, case, run_case)
            if r.get("oom"):
                print(f"| {model} | | {precision} | | out of memory | | | | |", flush=True)
                continue
            if model == models[0]:
                base[precision] = r["img_s"]
            bound = "<=" if r.get("upper_bound") else ""
            ratio = r["img_s"] / base[precision] if precision in base else float("nan")
            print(f"| {model} | {r['backbone']}, {r['size'][0]}x{r['size'][1]} | {precision} | "
                  f"{r['params_m']:.2f} | {r['ms']:.0f} | {r['img_s']:.1f} | x{ratio:.2f} | "
                  f"{bound}{r['peak_step_mib']:.0f} | {r['peak_total_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
