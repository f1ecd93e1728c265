"""The papers' models (and a searched genotype) retrained on the built-in benchmark, one CSV row
per model and seed.

Protocol (``--protocol``): ``pretrained`` (the default, the papers' protocol: the backbone starts
from the one pretrained on the synthetic pretraining set, ``backbone.weights: synthetic``, the
attention modules from scratch) or ``scratch`` (everything randomly initialised). Every row is
trained by ``nas_reid.train.retrain`` with the default recipe of its backbone on synthreid
(``synthetic``; ``mobile_synthetic`` for a mobile backbone) and the same seeds, and evaluated on
synthreid's query / gallery split (the last model, no re-ranking, no flip).

The reference genotypes (``search_spaces/reference``) are the papers' ResNet-50 models at
256x128, retargeted (:func:`nas_reid.space.reference.retarget`) to ``--backbone`` at ``--size``
(default ResNet-18 at 128x64, where every stage's map has at least 32 positions) keeping their
ops and positions, so every row differs from the baseline by its attention cells (and loss) only:

=========  =====================================================================
baseline   no attention
se         SE (reduction 16) after layer1..4: the channel attention of RIB-CA, without RIB
eca        ECA after layer1..4
rga_s      RGA-S after layer1..4 (ratios 8/8/8), rga_c likewise, rga_sc: S then C
rib_ca     SE after layer1..4 + the RIB (IBB) loss, as the rib_ca reference's recipe says
rib_dcs    DCS-Attention after layer1..4 + RIB; dcs: the same network without RIB
searched   a searched genotype (``--searched``), as it is
=========  =====================================================================

``--mobile`` adds a searched mobile backbone and its space's widest network with no cells.

Results. Each finished training appends one row to ``--csv`` (default
``bench/results/papers_protocol.csv``): model, seed, protocol, input size, epochs, overrides,
params (without the classifier), FLOPs, mAP, R1, mINP, the RIB estimates of the last epoch, wall
seconds, and the run's provenance. Rows already in the CSV are skipped, and a run folder under
``--out`` is reused or resumed, so the script can be stopped and started again at any moment.
``--jobs`` trainings run side by side on ``--threads`` torch threads each. ``--report`` prints the
markdown table (mean +- std over seeds) from the CSV alone.

    python bench/synthetic_table.py                                  # the table, 3 seeds
    python bench/synthetic_table.py --protocol scratch --models baseline rga_sc
    python bench/synthetic_table.py --models baseline rga_sc --seeds 0 --epochs 2   # a quick look
    python bench/synthetic_table.py --report
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from nas_reid.search.quality import append_row, read_rows  # noqa: E402
DEFAULT_CSV = ROOT / "bench" / "results" / "papers_protocol.csv"
PAPER_ROWS = ("baseline", "se", "eca", "rga_s", "rga_c", "rga_sc", "dcs", "rib_ca", "rib_dcs")
NO_RIB = {"loss": {"rib": 0.0}}
ROWS = {
    # row: (reference genotype, op replacing its cells' op or None, recipe overrides)
    "baseline": ("baseline", None, {}),
    "se": ("rib_ca", None, NO_RIB),
    "eca": ("rib_ca", ("eca", {}), NO_RIB),
    "rga_s": ("rga_s", None, {}),
    "rga_c": ("rga_c", None, {}),
    "rga_sc": ("rga_sc", None, {}),
    "rib_ca": ("rib_ca", None, None),  # None: the reference's own recipe overrides (RIB on)
    "rib_dcs": ("rib_dcs", None, None),
    "dcs": ("rib_dcs", None, NO_RIB),
}
FIELDS = ["model", "seed", "protocol", "input", "backbone", "epochs", "overrides", "cells",
          "params", "flops", "mAP", "R1", "mINP", "rib_I_FY", "rib_I_XF", "wall_seconds",
          "threads", "jobs", "recipe", "torch", "package_version", "finished_at"]


def with_op(genotype, op: str, params: dict):
    """``genotype`` with every edge's op replaced by ``op`` (``params``)."""
    from nas_reid.space.genotype import Genotype

    data = genotype.to_dict()
    for cell in data["cells"]:
        for edge in cell["edges"]:
            edge["op"], edge["params"] = op, dict(params)
    data["probabilities"] = {}
    return Genotype.from_dict(data)


def widest_mobile(space_file: str):
    """The mobile space's widest backbone (largest width, kernel and expansion, no block
    skipped) with no cells: what the search chooses from, unsearched."""
    from nas_reid.space.genotype import Genotype
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


def row_setup(name: str, args: argparse.Namespace):
    """(genotype, recipe overrides) of a row."""
    from nas_reid.space.genotype import Genotype
    from nas_reid.space.reference import REFERENCES, resolve_genotype, retarget

    if name == "searched":
        return Genotype.from_json(args.searched), {}
    if name == "mobile":
        return Genotype.from_json(args.mobile), {}
    if name == "mobile_widest":
        return widest_mobile(args.mobile_space), {}
    reference, op, overrides = ROWS[name]
    genotype, _ = resolve_genotype(reference)
    genotype = retarget(genotype, backbone=args.backbone, input_size=args.size)
    if op is not None:
        genotype = with_op(genotype, *op)
    if overrides is None:
        overrides = REFERENCES[reference].recipe_overrides
    return genotype, overrides


def set_gate_bias(bias: float) -> None:
    """Ablation: every RGA gate's last BatchNorm starts with bias ``bias`` instead of 0, so the
    sigmoid weights start near sigmoid(bias) (near 1 for bias 3: the module starts close to the
    identity) instead of near 0.5. Patches the op class of this (worker) process only."""
    import torch

    from nas_reid.ops import rga

    init = rga._RelationGate.__init__

    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs)
        torch.nn.init.constant_(self.score[4].bias, bias)

    rga._RelationGate.__init__ = patched


def train_one(job: dict) -> dict:
    """One retrain in a fresh process (spawned), on ``job["threads"]`` threads."""
    import torch

    torch.set_num_threads(job["threads"])
    from nas_reid.space.genotype import Genotype
    from nas_reid.train.loop import retrain

    if job.get("gate_bias") is not None:
        set_gate_bias(job["gate_bias"])
    out = Path(job["out"])
    started = time.perf_counter()
    resume = (out / "checkpoints" / "last.pt").is_file()
    kwargs = {} if resume else {"recipe": job["recipe"], "overrides": job["overrides"]}
    result = retrain(None if resume else Genotype.from_json(job["genotype"]), "synthreid",
                     out_dir=out, resume=resume, progress=False, **kwargs)
    last = result.metrics[-1]
    rib = last.get("rib") or {}
    plain = result.results["plain"]
    return {**job["row"], "mAP": round(100 * plain["mAP"], 2), "R1": round(100 * plain["R1"], 2),
            "mINP": round(100 * plain["mINP"], 2),
            "rib_I_FY": rib.get("I_FY"), "rib_I_XF": rib.get("I_XF"),
            "wall_seconds": round(last["time"], 1),
            "session_seconds": round(time.perf_counter() - started, 1),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def row_key(row: dict) -> tuple:
    return (row["model"], str(row["seed"]), row["protocol"], row["input"], row["backbone"],
            str(row["epochs"]), row["overrides"])


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def report(rows: list[dict], models: list[str] | None = None) -> str:
    """The markdown table: one line per (model, protocol, input, epochs, overrides), in the
    order the rows first appear, mean +- std over its seeds."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if models and row["model"] not in models:
            continue
        groups.setdefault(row_key(row)[:1] + row_key(row)[2:], []).append(row)
    lines = ["| model | protocol | input | epochs | overrides | cells | params (M) | GFLOPs | "
             "seeds | mAP (%) | R1 (%) | mINP (%) | I(F;Y) nats | min / run |",
             "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (model, protocol, size, backbone, epochs, overrides), mine in groups.items():
        cells = mine[0]["cells"]
        stats = {k: mean_std([float(r[k]) for r in mine]) for k in ("mAP", "R1", "mINP")}
        rib = [float(r["rib_I_FY"]) for r in mine if r["rib_I_FY"] not in ("", None)]
        minutes = statistics.fmean(float(r["wall_seconds"]) for r in mine) / 60
        lines.append(
            f"| {model} | {protocol} | {backbone} {size} | {epochs} | {overrides or '-'} | "
            f"{cells} | {float(mine[0]['params']) / 1e6:.2f} | {float(mine[0]['flops']) / 1e9:.3f} | "
            f"{len(mine)} | " + " | ".join(f"{m:.1f} +- {s:.1f}" for m, s in stats.values()) +
            f" | {f'{statistics.fmean(rib):.2f}' if rib else '-'} | {minutes:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=None,
                        help=f"rows (default: {' '.join(PAPER_ROWS)}, and searched / mobile "
                             "when given)")
    parser.add_argument("--protocol", choices=["pretrained", "scratch"], default="pretrained")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", default="128x64", help="input HxW of the reference rows")
    parser.add_argument("--searched", default=None, help="genotype.json of a search (its row)")
    parser.add_argument("--mobile", default=None,
                        help="genotype.json of a mobile-backbone search: rows 'mobile' (it) and "
                             "'mobile_widest' (its space's widest backbone, no cells)")
    parser.add_argument("--mobile-space", default="search_spaces/mobile_cpu.yaml",
                        help="the space of --mobile (for the mobile_widest row)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None,
                        help="override the recipe's, its warm-up and milestones scaled to them "
                        "(as nas-reid retrain --epochs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override for every row, as nas-reid retrain --set "
                             "(e.g. optimizer.lr=7e-4); recorded in the overrides column")
    parser.add_argument("--gate-bias", type=float, default=None,
                        help="ablation: RGA gates' last BatchNorm bias at initialisation (official: "
                             "0, gates near 0.5; 3: near 0.95); recorded in the overrides column")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/synthetic_table", help="run folders")
    parser.add_argument("--csv", default=str(DEFAULT_CSV), help="results file (appended)")
    parser.add_argument("--report", action="store_true", help="print the table from --csv only")
    args = parser.parse_args()
    try:
        h, w = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        sys.exit(f"--size must look like HxW, got {args.size!r}")
    args.size = (h, w)
    csv_path = Path(args.csv)
    if args.report:
        print(report(read_rows(csv_path), args.models))
        return

    import torch

    from nas_reid import __version__
    from nas_reid.data import load_dataset
    from nas_reid.ops import op_cost
    from nas_reid.space.discrete import build_model
    from nas_reid.train.recipe import default_recipe, load_recipe, merge, parse_overrides, \
        scaled_to

    models = args.models or [*PAPER_ROWS, *(["searched"] if args.searched else []),
                             *(["mobile", "mobile_widest"] if args.mobile else [])]
    unknown = [m for m in models if m not in ROWS and m not in ("searched", "mobile", "mobile_widest")]
    if unknown:
        sys.exit(f"unknown row {unknown[0]!r}; rows: {', '.join(ROWS)}, searched, mobile, mobile_widest")
    if "searched" in models and not args.searched:
        sys.exit("--models searched needs --searched GENOTYPE.json")
    if {"mobile", "mobile_widest"} & set(models) and not args.mobile:
        sys.exit("--models mobile / mobile_widest need --mobile GENOTYPE.json")
    classes = load_dataset("synthreid", None).num_train_pids
    done = {row_key(r) for r in read_rows(csv_path)}
    out = Path(args.out)
    shared = parse_overrides(args.overrides) if args.overrides else {}
    tag = " ".join(args.overrides + ([f"gate_bias={args.gate_bias:g}"]
                                      if args.gate_bias is not None else []))
    jobs = []
    for name in models:
        genotype, overrides = row_setup(name, args)
        net = build_model(genotype, classes)
        cost = op_cost(net, 3, *genotype.input_size)
        head = net.head.classifier.weight.numel()
        recipe = default_recipe("synthreid", genotype.backbone.name)
        overrides = merge(overrides, shared)
        if genotype.backbone.mobile is None:
            weights = "synthetic" if args.protocol == "pretrained" else "none"
            overrides = merge(overrides, {"backbone": {"weights": weights}})
        if args.epochs is not None:  # the schedule at the same shares of the run
            scaled, _ = scaled_to(load_recipe(recipe, overrides), args.epochs, keep=shared)
            overrides = merge(overrides, scaled)
        epochs = load_recipe(recipe, overrides).epochs
        size = "x".join(map(str, genotype.input_size))
        protocol = args.protocol if genotype.backbone.mobile is None else "scratch"
        label = f"{args.protocol}-{size}" + (f"-e{args.epochs}" if args.epochs else "") + (
            "-" + "_".join(o.replace("=", "").replace(".", "") for o in tag.split())
            if tag else "")
        for seed in args.seeds:
            row = {"model": name, "seed": seed, "protocol": protocol, "input": size,
                   "backbone": genotype.backbone.name, "epochs": epochs, "overrides": tag,
                   "cells": genotype.summary().replace(" | ", "; "),
                   "params": cost.params - head, "flops": cost.flops,
                   "threads": args.threads, "jobs": args.jobs, "recipe": recipe,
                   "torch": torch.__version__, "package_version": __version__}
            if row_key({k: str(v) for k, v in row.items()}) in done:
                continue
            run_dir = out / label / f"{name}-seed{seed}"
            genotype_file = out / label / "genotypes" / f"{name}.json"
            genotype_file.parent.mkdir(parents=True, exist_ok=True)
            genotype.save(genotype_file)
            jobs.append({"row": row, "out": str(run_dir), "recipe": recipe,
                         "genotype": str(genotype_file), "threads": args.threads,
                         "gate_bias": args.gate_bias,
                         "overrides": {**overrides, "seed": seed}})

    jobs.sort(key=lambda job: job["row"]["seed"])  # seed-major: a partial table covers every row
    print(f"{len(jobs)} trainings to run ({len(models)} models x {len(args.seeds)} seeds, "
          f"{args.protocol}, rows already in {csv_path} skipped), {args.jobs} at a time x "
          f"{args.threads} thread(s)", flush=True)
    if args.jobs > 1 and args.protocol == "pretrained" and jobs:
        # pretrain (or find) every backbone once before the jobs start, not in each of them
        from nas_reid.train.pretrain import resolve_backbone_weights

        for key in {(j["row"]["backbone"], j["row"]["input"]) for j in jobs
                    if j["row"]["protocol"] == "pretrained"}:
            torch.set_num_threads(args.jobs * args.threads)
            resolve_backbone_weights("synthetic", key[0], tuple(int(v) for v in key[1].split("x")),
                                     log=print)
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(train_one, job) for job in jobs]
        for future in as_completed(futures):
            row = future.result()
            append_row(csv_path, row, FIELDS)
            print(f"  {row['model']:<9} seed {row['seed']}: mAP {row['mAP']:.1f}  R1 {row['R1']:.1f}"
                  f"  ({row['wall_seconds'] / 60:.1f} min)", flush=True)
    print()
    print(report(read_rows(csv_path), models))


if __name__ == "__main__":
    main()
