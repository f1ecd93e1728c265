"""The papers' models and a searched genotype, retrained on the synthetic benchmark under one budget.

Every model is trained from scratch by ``nas_reid.train.retrain`` with the default recipe of its
backbone on synthreid (``synthetic``: BoT's losses, augmentation and optimizer, 20 epochs, PK
16x4; ``mobile_synthetic`` for a mobile backbone: the same with SGD lr 0.035) and the same seeds,
on the built-in ``synthreid`` benchmark, and evaluated on its query / gallery split (the last
model, no re-ranking, no flip). The reference genotypes (``search_spaces/reference``) are the
papers' ResNet-50 models at 256x128; on a CPU they are retargeted
(:func:`nas_reid.space.reference.retarget`) to the searched genotype's backbone and input size
(ResNet-18, 64x32 for the CPU space), keeping their ops and positions, so every row differs from
the baseline only by its attention cells. The RIB models add the IBB loss (weight 0.1, off for
the first 30 % of the epochs), as their reference recipe says. ``--mobile`` adds a searched
mobile backbone (a ``mobile_cpu.yaml`` search) and, for comparison, the widest network of its
space with no cells; their parameters and FLOPs are those of the whole network.

Runs go to ``--out`` (one retrain run folder per model and seed); a finished run is reused, an
unfinished one resumed, so the script can be stopped and started again. ``--jobs`` runs that
many trainings side by side, each on ``--threads`` torch threads.

    python bench/synthetic_table.py --searched runs/search-X/genotype.json            # the table
    python bench/synthetic_table.py --models baseline rga_sc --seeds 0 --epochs 2     # a quick look
    python bench/synthetic_table.py --models mobile mobile_widest --mobile runs/search-M/genotype.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

REFERENCE_ROWS = ("baseline", "rga_sc", "rib_dcs", "rib_ca")


def genotype_for(name: str, args: argparse.Namespace, backbone: str, size: tuple[int, int]):
    from nas_reid.genotype import Genotype
    from nas_reid.space.reference import resolve_genotype, retarget

    if name == "searched":
        return Genotype.from_json(args.searched), None
    if name == "mobile":
        return Genotype.from_json(args.mobile), None
    if name == "mobile_widest":
        return widest_mobile(args.mobile_space), None
    genotype, reference = resolve_genotype(name)
    return retarget(genotype, backbone=backbone, input_size=size), reference


def widest_mobile(space_file: str):
    """The mobile space's widest backbone (largest width, kernel and expansion, no block
    skipped) with no cells: what the search chooses from, unsearched."""
    from nas_reid.genotype import Genotype
    from nas_reid.space import load_space

    space = load_space(space_file)
    bb = space.backbone
    return Genotype.from_dict({
        "schema": "nas-reid/genotype", "version": 2,
        "space": {"name": None, "hash": None},
        "input": {"height": space.input.height, "width": space.input.width},
        "backbone": {"name": bb.name, "last_stride": bb.last_stride,
                     "choices": bb.mobile.widest(bb.last_stride).model_dump(mode="json")},
        "cells": [],
        "provenance": {"search_run": f"widest network of {space_file}"},
    })


def train_one(job: dict) -> dict:
    """One retrain in a fresh process (spawned), on ``job["threads"]`` threads."""
    import torch

    torch.set_num_threads(job["threads"])
    from nas_reid.genotype import Genotype
    from nas_reid.train.loop import retrain

    out = Path(job["out"])
    started = time.perf_counter()
    resume = (out / "checkpoints" / "last.pt").is_file()
    kwargs = {} if resume else {"recipe": job["recipe"], "overrides": job["overrides"]}
    result = retrain(None if resume else Genotype.from_json(job["genotype"]), "synthreid",
                     out_dir=out, resume=resume, progress=False, **kwargs)
    last = result.metrics[-1]
    return {"model": job["model"], "seed": job["seed"], "plain": result.results["plain"],
            "train_seconds": last["time"], "session_seconds": time.perf_counter() - started,
            "images_per_second": statistics.fmean(m["images_per_second"] for m in result.metrics)}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--searched", default=None, help="genotype.json of a search (its row)")
    parser.add_argument("--mobile", default=None,
                        help="genotype.json of a mobile-backbone search: rows 'mobile' (it) and "
                             "'mobile_widest' (its space's widest backbone, no cells)")
    parser.add_argument("--mobile-space", default="search_spaces/mobile_cpu.yaml",
                        help="the space of --mobile (for the mobile_widest row)")
    parser.add_argument("--models", nargs="+", default=None,
                        help=f"rows (default: {' '.join(REFERENCE_ROWS)} and searched if given)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's 20")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override for every row, as nas-reid retrain --set "
                             "(e.g. optimizer.name=sgd)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/synthetic_table")
    parser.add_argument("--json", default=None, help="write the table's figures to this file")
    args = parser.parse_args()

    import torch

    from nas_reid.data import load_dataset
    from nas_reid.genotype import Genotype
    from nas_reid.ops import op_cost
    from nas_reid.space.discrete import build_model
    from nas_reid.space.reference import REFERENCES
    from nas_reid.train.recipe import default_recipe, merge, parse_overrides

    models = args.models or [*REFERENCE_ROWS, *(["searched"] if args.searched else []),
                             *(["mobile", "mobile_widest"] if args.mobile else [])]
    if "searched" in models and not args.searched:
        sys.exit("--models searched needs --searched GENOTYPE.json")
    if {"mobile", "mobile_widest"} & set(models) and not args.mobile:
        sys.exit("--models mobile / mobile_widest need --mobile GENOTYPE.json")
    backbone, size = "resnet18", (64, 32)
    if args.searched:
        g = Genotype.from_json(args.searched)
        backbone, size = g.backbone.name, g.input_size
    elif args.mobile:
        g = Genotype.from_json(args.mobile)
        size = g.input_size
        if not set(models) - {"mobile", "mobile_widest"}:
            backbone = g.backbone.name
    dataset = load_dataset("synthreid", None)
    classes = dataset.num_train_pids

    out = Path(args.out)
    jobs, costs, summaries, recipes = [], {}, {}, {}
    for name in models:
        genotype, reference = genotype_for(name, args, backbone, size)
        net = build_model(genotype, classes)
        cost = op_cost(net, 3, *genotype.input_size)
        head = net.head.classifier.weight.numel()
        costs[name] = {"params": cost.params - head, "flops": cost.flops}
        text = genotype.summary()
        if genotype.backbone.mobile is not None:
            text = f"{genotype.backbone.mobile.summary()}; cells {text}"
        summaries[name] = text.replace(" | ", "; ")  # "|" would split a table cell
        overrides = REFERENCES[reference].recipe_overrides if reference else {}
        recipes[name] = default_recipe("synthreid", genotype.backbone.name)
        if args.overrides:
            overrides = merge(overrides, parse_overrides(args.overrides))
        if args.epochs is not None:
            overrides = {**overrides, "epochs": args.epochs}
        for seed in args.seeds:
            run_dir = out / f"{name}-seed{seed}"
            genotype_file = out / "genotypes" / f"{name}.json"
            genotype_file.parent.mkdir(parents=True, exist_ok=True)
            genotype.save(genotype_file)
            jobs.append({"model": name, "seed": seed, "out": str(run_dir), "recipe": recipes[name],
                         "genotype": str(genotype_file), "threads": args.threads,
                         "overrides": {**overrides, "seed": seed}})

    print(f"{len(jobs)} trainings ({len(models)} models x {len(args.seeds)} seeds) on synthreid, "
          f"{backbone} {size[0]}x{size[1]}, {args.jobs} at a time x {args.threads} thread(s)",
          flush=True)
    started = time.perf_counter()
    results = []
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        for r in pool.map(train_one, jobs):
            results.append(r)
            p = r["plain"]
            print(f"  {r['model']:<9} seed {r['seed']}: R1 {100 * p['R1']:.1f}  mAP "
                  f"{100 * p['mAP']:.1f}  ({r['train_seconds'] / 60:.1f} min)", flush=True)
    wall = time.perf_counter() - started

    rows = []
    for name in models:
        mine = [r for r in results if r["model"] == name]
        r1 = mean_std([100 * r["plain"]["R1"] for r in mine])
        m_ap = mean_std([100 * r["plain"]["mAP"] for r in mine])
        minutes = statistics.fmean(r["train_seconds"] for r in mine) / 60
        rows.append({"model": name, "cells": summaries[name], **costs[name], "R1": r1, "mAP": m_ap,
                     "minutes": minutes, "runs": mine})
    used = ", ".join(f"{r} ({', '.join(m for m in models if recipes[m] == r)})"
                     for r in dict.fromkeys(recipes.values()))
    print(f"\nsynthreid, {backbone} {size[0]}x{size[1]}, recipe {used}"
          f"{f' ({args.epochs} epochs)' if args.epochs else ''}"
          f"{f', overrides {args.overrides}' if args.overrides else ''}, seeds {args.seeds}; "
          f"{wall / 60:.1f} min wall, torch {torch.__version__}\n")
    print("| model | cells | params (M) | MFLOPs | R1 (%) | mAP (%) | min / run |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['cells']} | {row['params'] / 1e6:.2f} | "
              f"{row['flops'] / 1e6:.1f} | {row['R1'][0]:.1f} +- {row['R1'][1]:.1f} | "
              f"{row['mAP'][0]:.1f} +- {row['mAP'][1]:.1f} | {row['minutes']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
