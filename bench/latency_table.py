"""Benchmark: does the latency lookup table rank networks as their measured latency does?

    python bench/latency_table.py [--space YAML|NAME] [--device cpu|cuda] [--archs N]
                                  [--batch B] [--warmup W] [--repeats R] [--threads T] [--seed S]

FBNet's lookup table prices a network as the sum of its blocks' latencies, each block timed
alone (:mod:`nas_reid.search.latency`). This script checks that assumption on a device: it
measures the table of ``--space`` (default ``search_spaces/mobile_cpu.yaml``), draws ``--archs``
random networks of the space (every backbone choice and every cell edge's op uniformly at
random, from ``--seed``), and for each prints side by side its LUT sum
(:meth:`nas_reid.search.cost.CostModel.achieved`), the built network (``build_model`` of its
genotype: backbone, cells and the BNNeck, eval mode) timed end to end with the same batch,
warm-up and repeats (median), their ratio, and its MFLOPs. Then Kendall's tau of the LUT sums
and of the FLOPs against the measured latencies (scipy.stats.kendalltau): how well each cost
ranks the networks, which is what the search's cost term needs. The BNNeck (pooling and a
BatchNorm1d) is in the measured network and not in the table; Python's per-module overhead is
in every block of the table once and in the network once per block too. No assertion on
timings.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def random_genotypes(space, n: int, seed: int) -> tuple:
    """``n`` genotypes of ``space`` (every architecture choice one-hot at a random option) and
    the supernet they were derived from."""
    import torch

    from nas_reid.space.genotype import derive_genotype
    from nas_reid.space import Supernet

    net = Supernet(space, num_classes=2)
    g = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for _ in range(n):
            for a in net.arch_parameters():
                pick = torch.randint(a.shape[-1], a.shape[:-1], generator=g)
                a.copy_(torch.nn.functional.one_hot(pick, a.shape[-1]).float() * 1e4)
            out.append(derive_genotype(net, skip_cap=None))
    return out, net


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default="mobile_cpu", help="YAML or shipped name (mobile_cpu)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--archs", type=int, default=10, help="random networks (10)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch
    from scipy.stats import kendalltau

    from nas_reid.viz.genotype_report import network_cost
    from nas_reid.search.cost import CostModel, latency_bounds
    from nas_reid.search.latency import measure_table, measurement_device, time_forward
    from nas_reid.space import build_model, load_space
    from nas_reid.space.reference import search_space_path

    if args.threads:
        torch.set_num_threads(args.threads)
    device = measurement_device(args.device)
    space = load_space(search_space_path(args.space))
    settings = dict(warmup=args.warmup, repeats=args.repeats)
    start = time.monotonic()
    table = measure_table(space, batch=args.batch, device=device, **settings)
    print(f"space {space.name} ({space.input.height}x{space.input.width}): {len(table.entries)} "
          f"blocks measured on {table.device} in {time.monotonic() - start:.1f} s "
          f"(batch {args.batch}, warmup {args.warmup}, repeats {args.repeats})")
    fastest, slowest = latency_bounds(space, table)
    print(f"LUT sums over the space: fastest network {fastest:.3f} ms, slowest {slowest:.3f} ms\n")

    genotypes, net = random_genotypes(space, args.archs, args.seed)
    cost = CostModel(net, space.schedule.cost.model_copy(update={"metric": "latency"}), table)
    rows = []
    print("| # | LUT sum (ms) | measured (ms) | measured / LUT | MFLOPs | network |")
    print("|---|---:|---:|---:|---:|---|")
    for i, genotype in enumerate(genotypes):
        lut = cost.achieved(genotype)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(i)
            model = build_model(genotype, num_classes=2).eval().to(device)
            x = torch.randn(args.batch, 3, *space.input_size).to(device)
        measured = time_forward(model, x, **settings)
        mflops = network_cost(genotype)[1] / 1e6
        rows.append((lut, measured, mflops))
        mobile = genotype.backbone.mobile
        what = ((mobile.summary() if mobile is not None else genotype.backbone.name)
                + f" | {genotype.summary()}").replace(" | ", "; ")
        print(f"| {i + 1} | {lut:.3f} | {measured:.3f} | {measured / lut:.2f} | {mflops:.2f} | "
              f"{what} |")
    luts, measured, flops = zip(*rows)
    tau_lut, p_lut = kendalltau(luts, measured)
    tau_flops, p_flops = kendalltau(flops, measured)
    print(f"\nKendall tau, LUT sum vs measured: {tau_lut:.3f} (p {p_lut:.2g})")
    print(f"Kendall tau, FLOPs   vs measured: {tau_flops:.3f} (p {p_flops:.2g})")
    ratios = [m / lut for lut, m, _ in rows]
    print(f"measured / LUT sum: mean {sum(ratios) / len(ratios):.2f}, "
          f"min {min(ratios):.2f}, max {max(ratios):.2f}")


if __name__ == "__main__":
    main()
