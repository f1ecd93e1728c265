"""Benchmark: one search step (weights + architecture), softmax (DARTS) vs gumbel (GDAS), side by side.

    python bench/search_step.py [--space YAML] [--device cpu|cuda] [--p P --k K] [--repeats N]
                                [--threads T] [--quick]

Both strategies run on the same search space (``--space``; default ``search_spaces/cpu_small.yaml``
on CPU, ``search_spaces/rga_dcs_ca.yaml`` on CUDA, the GPU target: ResNet-50 at 256x128, all
candidates, batch 16x4 = 64), the space's sampling strategy replaced by each in turn. One search
step is what :mod:`nas_reid.search.loop` does per step:

- weight step on a batch of P x K images: ``CE_ls(logits) + batch_hard_triplet(feat)``, backward,
  gradient clipping, the space's weight optimizer (SGD with momentum by default);
- architecture step on another P x K batch, weights frozen: batch-hard triplet on the
  L2-normalised ``feat_bn``, backward, Adam on the architecture parameters.

Precision is the space's ``schedule.precision`` (by default bf16 autocast and channels_last on
CUDA, float32 on CPU), as in the search; ``--fp32`` turns both off. A space with a cost term
(``schedule.cost``) adds it to the architecture step. For a searchable
backbone (``search_spaces/mobile_cpu.yaml``, ``mobile_dnas.yaml``) a third row, ``widest
fixed``, trains the widest discrete network of the space (no cells) the same way (a weight step
and a second forward/backward): the masked supernet's memory should stay near it whatever the
number of width options. (The RIB term, a (B x K) soft assignment, is left out: it costs next to
nothing.) Inputs are
random tensors already on the device, so image decoding is not timed. Throughput is
``2 * P * K / step time`` (both batches' images), from the best of ``--repeats`` steps after two
warm-up steps (other processes on the machine only ever add time).

Memory:

- CPU: each strategy runs in a fresh process (:func:`bench.measure.run_measured`), which resets
  its RSS high-water mark (Linux ``/proc/self/clear_refs``) just before the first step; the table
  gives the peak RSS above the RSS at that point (activations, gradients, optimizer state,
  workspace) and the process's whole peak RSS. Where the reset is refused, the first figure is
  an upper bound, marked "<=".
- CUDA: ``torch.cuda.max_memory_allocated`` over the steps, in total (weights included) and
  above the allocation before the first step, and ``torch.cuda.max_memory_reserved`` (what the
  caching allocator held: with the CUDA context, what the card must have free; the "fits a 24
  GiB card" line compares it with 24 GiB). A strategy that runs out of GPU memory gets an "out
  of memory" row and the benchmark goes on.

Prints a markdown table and the gumbel / softmax ratios. No assertion on timings.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.measure import WARMUP, add_worker_arguments, measure_case, serve_worker, time_steps  # noqa: E402

STRATEGIES = ("softmax", "gumbel")
FIXED = "widest fixed"
"""The reference row of a searchable backbone: the widest discrete network (no cells, no
architecture), one weight step plus a second forward/backward: what the masks cost."""
NUM_CLASSES = 751  # Market-1501's training identities: the classifier's width


def run_case(case: dict) -> dict:
    """Build the supernet for one strategy and time its search steps."""
    import torch
    import torch.nn.functional as F

    from nas_reid.losses import CrossEntropyLabelSmooth, TripletLoss
    from nas_reid.engine.precision import Precision, PrecisionConfig
    from nas_reid.space import Supernet, load_space

    from nas_reid.search.cost import CostModel
    from nas_reid.search.latency import table_for

    if case["threads"]:
        torch.set_num_threads(case["threads"])
    device = torch.device(case["device"])
    resolved = load_space(case["space"]).resolved()
    fixed = case["strategy"] == FIXED
    resolved["sampling"]["strategy"] = "gumbel" if fixed else case["strategy"]
    space = load_space(resolved)
    sched = space.schedule
    precision = Precision.resolve(PrecisionConfig(bf16=False, channels_last=False)
                                  if case["fp32"] else sched.precision, device)
    torch.manual_seed(0)
    if fixed:
        net = widest_network(space).to(device).train()
    else:
        net = Supernet(space, NUM_CLASSES).to(device).train()
    net = precision.model(net)
    cost = None
    if not fixed and sched.cost.form != "none":
        table = table_for(space, device) if sched.cost.metric == "latency" else None
        cost = CostModel(net, sched.cost, table)
    arch = [] if fixed else net.arch_parameters()
    weights = [q for q in (net.parameters() if fixed else net.weight_parameters()) if q.requires_grad]
    w = sched.weights
    if w.optimizer == "sgd":
        weight_opt = torch.optim.SGD(weights, lr=w.lr, momentum=w.momentum, weight_decay=w.weight_decay)
    else:
        weight_opt = torch.optim.Adam(weights, lr=w.lr, betas=tuple(w.betas), weight_decay=w.weight_decay)
    arch_opt = torch.optim.Adam(arch, lr=sched.arch.lr, betas=tuple(sched.arch.betas),
                                weight_decay=sched.arch.weight_decay) if arch else None
    ce = CrossEntropyLabelSmooth(NUM_CLASSES, sched.loss.label_smoothing)
    triplet = TripletLoss(sched.loss.triplet_margin)
    p, k = case["p"], case["k"]
    h, wd = space.input_size
    x_w = precision.images(torch.randn(p * k, 3, h, wd, device=device))
    x_a = precision.images(torch.randn(p * k, 3, h, wd, device=device))
    labels = torch.arange(p, device=device).repeat_interleave(k)

    def step():
        with precision.autocast(device.type):
            out = net(x_w)
        loss = ce(out["logits"].float(), labels) + triplet(out["feat"].float(), labels)
        weight_opt.zero_grad(set_to_none=True)
        loss.backward()
        if w.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(weights, w.grad_clip)
        weight_opt.step()
        for a in arch:
            a.grad = None
        del out, loss
        for q in weights:
            q.requires_grad_(False)
        with precision.autocast(device.type):
            out = net(x_a)
        loss = triplet(F.normalize(out["feat_bn"].float(), dim=1), labels)
        if cost is not None:
            loss = cost.loss(loss, cost.expected(net))
        if arch_opt is not None:
            arch_opt.zero_grad(set_to_none=True)
        if loss.requires_grad:  # the fixed network: a second forward/backward, nothing to train
            loss.backward()
        for q in weights:
            q.requires_grad_(True)
        if arch_opt is not None:
            arch_opt.step()

    result = {"params_m": sum(q.numel() for q in weights) / 1e6, **precision.as_dict(),
              "candidates": len(space.ops), "cells": len(space.cells.positions)}
    result.update(time_steps(step, device, case["repeats"]))
    result["img_s"] = 2 * p * k / result["best_s"]
    return result


def widest_network(space):
    """The discrete network of a searchable backbone's widest choices, without cells."""
    from nas_reid.space.genotype import Genotype
    from nas_reid.space import build_model

    bb = space.backbone
    genotype = Genotype.from_dict({
        "schema": "nas-reid/genotype", "version": 2, "space": {"name": None, "hash": None},
        "input": {"height": space.input.height, "width": space.input.width},
        "backbone": {"name": bb.name, "last_stride": bb.last_stride,
                     "choices": bb.mobile.widest(bb.last_stride).model_dump(mode="json")},
        "cells": []})
    return build_model(genotype, NUM_CLASSES)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", help="default: cpu_small on CPU, rga_dcs_ca on CUDA")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--p", type=int, help="identities per batch (default: the space's on CPU, 16 on CUDA)")
    parser.add_argument("--k", type=int, help="images per identity (default: the space's on CPU, 4 on CUDA)")
    parser.add_argument("--repeats", type=int, help="timed steps (default: 3 on CPU, 10 on CUDA)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="P=2, K=2, one timed step")
    parser.add_argument("--fp32", action="store_true",
                        help="float32, no channels_last (default: the space's schedule.precision)")
    add_worker_arguments(parser)
    args = parser.parse_args(argv)
    serve_worker(args, run_case)

    from nas_reid.space import load_space

    cuda = args.device == "cuda"
    space_path = args.space or os.path.join(
        ROOT, "search_spaces", "rga_dcs_ca.yaml" if cuda else "cpu_small.yaml")
    space = load_space(space_path)
    p = args.p or (2 if args.quick else 16 if cuda else space.schedule.batch.p)
    k = args.k or (2 if args.quick else 4 if cuda else space.schedule.batch.k)
    repeats = args.repeats or (1 if args.quick else 10 if cuda else 3)
    h, w = space.input_size
    if cuda:
        import torch

        if not torch.cuda.is_available():
            sys.exit("search_step.py: --device cuda, but torch sees no CUDA device")
        where = f"{torch.cuda.get_device_name()}"
    else:
        import torch

        where = f"CPU ({os.cpu_count()} cores, {args.threads or torch.get_num_threads()} threads)"
    print(f"space {space.name} ({space.backbone.name}, {h}x{w}, {len(space.ops)} candidates, "
          f"cells at {', '.join(space.cells.positions)}), batch {p}x{k} per step and per "
          f"held-out step, {repeats} timed steps after {WARMUP} warm-up; {where}")
    print()
    print("| strategy | precision | step ms (best) | img/s | peak MiB above pre-step | peak MiB total |")
    print("|---|---|---:|---:|---:|---:|")
    results = {}
    strategies = STRATEGIES + ((FIXED,) if space.backbone.searchable else ())
    for strategy in strategies:
        case = {"space": space_path, "strategy": strategy, "device": args.device, "p": p, "k": k,
                "repeats": repeats, "threads": args.threads, "fp32": args.fp32}
        r = results[strategy] = measure_case(__file__, case, run_case)
        if r.get("oom"):
            print(f"| {strategy} | | out of memory | | | |", flush=True)
            continue
        bound = "<=" if r.get("upper_bound") else ""
        prec = ("bf16" if r["bf16"] else "fp32") + (", channels_last" if r["channels_last"] else "")
        print(f"| {strategy} | {prec} | {r['ms']:.0f} | {r['img_s']:.1f} | "
              f"{bound}{r['peak_step_mib']:.0f} | {r['peak_total_mib']:.0f} |", flush=True)
    s, g = results["softmax"], results["gumbel"]
    print()
    if cuda:
        for strategy, r in results.items():
            if r.get("oom"):
                print(f"{strategy}: out of memory ({r['error']})")
            else:
                gib = r["cuda_reserved_mib"] / 1024
                print(f"{strategy}: peak reserved {gib:.1f} GiB: "
                      f"{'fits' if gib < 24 else 'does not fit'} a 24 GiB card "
                      "(the CUDA context, ~0.5 GiB, comes on top)")
    if s.get("oom") or g.get("oom"):
        return
    print(f"gumbel / softmax: throughput x{g['img_s'] / s['img_s']:.2f}, step memory "
          f"x{g['peak_step_mib'] / s['peak_step_mib']:.2f}, total memory "
          f"x{g['peak_total_mib'] / s['peak_total_mib']:.2f}")
    if FIXED in results and not results[FIXED].get("oom"):
        f = results[FIXED]
        print(f"gumbel supernet / widest fixed network: throughput x{g['img_s'] / f['img_s']:.2f}, "
              f"step memory x{g['peak_step_mib'] / f['peak_step_mib']:.2f}")


if __name__ == "__main__":
    main()
