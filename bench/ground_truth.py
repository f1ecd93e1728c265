"""Ground truth of a small search space on the built-in benchmark: every architecture retrained.

Every architecture of ``--space`` (default ``cpu_small``: one op at each of two positions, 49
architectures) is retrained with ``--recipe`` (default: the benchmark's ``synthetic``) for each
of ``--seeds``, on synthreid's training identities less a held-out quarter (the tuner's
identity-disjoint split, seed 0), and evaluated on that held-out quarter (validation) and on
synthreid's query / gallery (test). One row per (architecture, seed) is appended to ``--csv``
(default ``bench/results/ground_truth_<space>.csv``) as it finishes; rows already there (same
``--set`` overrides) are skipped, so the run can be stopped and continued at any time, with
``--jobs`` trainings side by side on ``--threads`` threads each. Seed-major order: every
architecture's first seed is trained before any second seed. Run folders go under ``--out``;
their checkpoints are deleted once the row is written (a half-done run is resumed).

    python bench/ground_truth.py --jobs 2 --threads 1              # the table (resumable)
    python bench/ground_truth.py --archs 12 --seeds 0              # the full recipe on 12 archs
    python bench/ground_truth.py --epochs 8 --archs 12 --seeds 0   # a cheaper recipe on them
    python bench/ground_truth.py --epochs 8 --report --compare ""  # does it rank them alike?
    python bench/ground_truth.py --report                          # summary of the CSV

Every row records the pretrained backbone file it started from (``backbone_sha256``, 12 hex
digits); a CSV holds rows of one file only (retraining from another one, pretrained again or on
another processor, stops with the name of the file to write to instead), so seed-to-seed noise
is never confounded with the backbone's.

``--device cuda`` runs every retrain on the GPU (``--workers`` image-loading processes each);
``bench/gpu_ground_truth.sh`` is the script for a lent GPU machine.

``--epochs N`` retrains for N epochs with the recipe's learning-rate schedule scaled to them
(warm-up and milestones at the same shares of the run, as ``nas-reid retrain --epochs``); it is
recorded in the ``overrides`` column (``--epochs N``), so the rows of each recipe are apart. So
is the precision the retrains ran in: ``precision.bf16`` and ``precision.channels_last`` as the
recipe resolves them on ``--device`` (``auto``: on CUDA only) join the ``--set`` items when they
do not name them, so float32 rows from a CPU and bf16 rows from a GPU never mix.
``--compare TAG`` (with ``--report``; ``--compare-csv PATH`` takes those rows from another CSV,
such as another backbone file's) prints Kendall's tau between this recipe's per-architecture
mean test and validation mAP and those of the rows whose overrides are ``TAG`` (completed with
the precision in the same way: "" names the full recipe on ``--device``), over the architectures
both hold: the test a cheaper recipe must pass (tau >= 0.8
over >= 12 architectures) before it stands in for the full one. Beside it, what retrain noise
alone allows: each recipe's seed-to-seed taus over those architectures, and the noise ceiling
(:func:`nas_reid.search.quality.agreement_ceiling`): the tau two recipes ranking *alike* would
show with these seed stds and seed counts (median, 5-95%, and how often >= 0.8), and whether the
observed tau lies below that range.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VALIDATION = {"fraction": 0.25, "seed": 0}


def train_job(job: dict) -> dict:
    """One (architecture, seed) in a fresh process: retrain, evaluate on validation and test."""
    import torch

    torch.set_num_threads(job["threads"])
    from nas_reid import __version__
    from nas_reid.data import load_dataset
    from nas_reid.evaluation.evaluate import evaluate_model
    from nas_reid.space.genotype import Genotype
    from nas_reid.hpo.objective import validation_split
    from nas_reid.ops import op_cost
    from nas_reid.train.checkpoint import load_model
    from nas_reid.train.loop import retrain

    test = load_dataset("synthreid", None)
    data = validation_split(test, **VALIDATION)
    run_dir = Path(job["out"]) / (re.sub(r"[^A-Za-z0-9_.-]+", "_", job["arch"]) + f"-seed{job['seed']}")
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    if not resume:
        shutil.rmtree(run_dir, ignore_errors=True)
    overrides = {**job["overrides"], "seed": job["seed"], "eval": {"every": 0}}
    device = torch.device(job.get("device", "cpu"))
    workers = job.get("workers", 0)
    started = time.perf_counter()
    print(f"  started {job['arch']} seed {job['seed']} on {device}", flush=True)
    result = retrain(None if resume else Genotype.from_json(job["genotype"]), data,
                     recipe=None if resume else job["recipe"],
                     overrides=None if resume else overrides, out_dir=run_dir, resume=resume,
                     epochs=None if resume else job.get("epochs"), progress=False,
                     device=device, num_workers=workers)
    val = result.results["plain"]
    print(f"  trained {job['arch']} seed {job['seed']} in {time.perf_counter() - started:.0f} s "
          f"({result.epochs} epochs)", flush=True)
    loaded = load_model(run_dir, device=device)
    got = evaluate_model(loaded.model, test, device=device, num_workers=workers,
                         keep_features=False).plain
    net = loaded.model
    cost = op_cost(net, 3, *loaded.genotype.input_size)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # 100+ MB each; the row is kept
    return {"arch": job["arch"], "seed": job["seed"],
            **{f"val_{k}": round(100 * val[k], 2) for k in ("mAP", "R1", "mINP")},
            **{f"test_{k}": round(100 * got[k], 2) for k in ("mAP", "R1", "mINP")},
            "params": cost.params - net.head.classifier.weight.numel(), "flops": cost.flops,
            "wall_seconds": round(result.metrics[-1]["time"], 1), "recipe": job["recipe"],
            "overrides": job["tag"], "epochs": result.epochs, "space": job["space"],
            "space_hash": job["space_hash"],
            "validation": f"{VALIDATION['fraction']} of the training ids, seed {VALIDATION['seed']}",
            "threads": job["threads"], "device": str(device), "torch": torch.__version__,
            "package_version": __version__,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "backbone_sha256": job["backbone_sha256"]}


def report(truth, space_name: str) -> str:
    from nas_reid.search.quality import kendall_tau

    ranked = truth.ranked()
    tests = [a.test for a in ranked]
    noise = truth.noise("test_mAP")
    noise_val = truth.noise("val_mAP")
    vt = kendall_tau([a.val for a in ranked], tests)
    seeds = sorted({int(r["seed"]) for r in truth.rows})
    lines = [f"ground truth of {space_name}: {len(ranked)} architectures, {len(truth.rows)} "
             f"retrains (seeds {seeds}), {sum(float(r['wall_seconds']) for r in truth.rows) / 3600:.1f}"
             " thread-hours",
             f"test mAP: best {ranked[0].test:.1f} ({ranked[0].key}), worst {ranked[-1].test:.1f} "
             f"({ranked[-1].key}), median {statistics.median(tests):.1f}, spread "
             f"{ranked[0].test - ranked[-1].test:.1f} points",
             f"seed noise: test mAP std {noise['std']:.2f} (mean over architectures), Kendall tau "
             f"between seeds {', '.join(f'{k}: {v:.2f}' for k, v in noise['tau'].items()) or '-'}; "
             f"validation mAP std {noise_val['std']:.2f}",
             _rank_noise_line(truth),
             f"Kendall tau of mean validation vs mean test mAP over architectures: {vt:.2f}",
             "", "| rank | architecture | test mAP (%) | val mAP (%) | seeds |", "|---:|---|---:|---:|---:|"]
    lines += [f"| {i + 1} | {a.key} | {a.test:.1f} +- {a.test_std:.1f} | {a.val:.1f} +- "
              f"{a.val_std:.1f} | {a.seeds} |" for i, a in enumerate(ranked)]
    return "\n".join(lines)


def _rank_noise_line(truth) -> str:
    """The seed noise split into what a seed does to every architecture alike and the rest."""
    from nas_reid.search.quality import rank_noise

    fit = rank_noise(truth, "test")
    if fit is None:
        return ("noise that can reorder architectures: unknown (fewer than two architectures have "
                "two seeds)")
    first, *others = sorted(fit["offsets"])
    offsets = ", ".join(f"seed {s} - seed {first}: {fit['offsets'][s]:+.2f}" for s in others)
    return (f"of it, offsets a seed gives every architecture alike ({offsets}; they reorder "
            f"nothing) and the rest, which can: test mAP std {fit['sd']:.2f} (residual of "
            f"architecture + seed effects, {fit['dof']} degrees of freedom)")


def compare(truth, tag: str, all_rows, other: str, where: str = "") -> str:
    """Kendall's tau between this recipe's ranking and that of the rows tagged ``other`` (of
    ``all_rows``; ``where`` names their file when it is another)."""
    from nas_reid.errors import UserError
    from nas_reid.search.quality import Truth, agreement_ceiling, recipe_agreement

    rows = [r for r in all_rows if r["overrides"] == other]
    if not rows:
        sys.exit(f"no rows with overrides {other!r}{where} to compare with")
    reference = Truth.from_rows(rows)
    lines = [f"rank agreement of {tag!r} with {other!r}{where}:"]
    for metric in ("test", "val"):
        got = recipe_agreement(reference, truth, metric)
        lines.append(f"  {metric} mAP: Kendall tau {got['tau']:.2f} over {got['archs']} "
                     f"architectures; same best: {'yes' if got['same_best'] else 'no'}")
    common = set(reference.archs) & set(truth.archs)
    lines.append("  what retrain noise alone gives, each recipe's seeds against each other over "
                 f"those architectures (test mAP): {tag!r} {_seed_taus(truth, common)}; "
                 f"{other!r}{where} {_seed_taus(reference, common)}")
    try:
        ceiling = agreement_ceiling(reference, truth, "test")
    except UserError as exc:
        lines.append(f"  noise ceiling: not computed ({exc})")
        return "\n".join(lines)
    observed = recipe_agreement(reference, truth, "test")["tau"]
    names = {"full": other + where, "cheap": tag}
    noise = "; ".join(f"{names[n]!r}: noise std {sd:.2f} (seed offsets left out), noise / spread {r:.2f}"
                      for n, (sd, r) in ceiling["noise"].items() if sd is not None)
    assumed = "".join(f" ({names[n]!r} has fewer than two architectures with two seeds: its "
                      "noise / spread taken as the other's)" for n in ceiling["assumed"])
    verdict = ("below that range: the recipes rank differently beyond the noise"
               if observed < ceiling["low"] else "within what the noise allows")
    lines.append(f"  noise ceiling (test mAP; {noise}){assumed}: two recipes ranking alike would "
                 f"show tau {ceiling['median']:.2f} (5-95%: {ceiling['low']:.2f} to "
                 f"{ceiling['high']:.2f}) over these {ceiling['archs']}, and tau >= "
                 f"{ceiling['threshold']} in {100 * ceiling['p_threshold']:.0f}% of 2,000 "
                 f"simulations; the observed {observed:.2f} is {verdict}")
    return "\n".join(lines)


def _seed_taus(truth, archs) -> str:
    """Kendall's tau of test mAP between every two seeds of ``truth`` over ``archs`` (those
    both seeds hold)."""
    from itertools import combinations

    from nas_reid.search.quality import kendall_tau

    by_seed: dict[int, dict[str, float]] = {}
    for r in truth.rows:
        if r["arch"] in archs:
            by_seed.setdefault(int(r["seed"]), {})[r["arch"]] = float(r["test_mAP"])
    out = []
    for a, b in combinations(sorted(by_seed), 2):
        shared = sorted(set(by_seed[a]) & set(by_seed[b]))
        if len(shared) >= 2:
            tau = kendall_tau([by_seed[a][k] for k in shared], [by_seed[b][k] for k in shared])
            out.append(f"seeds {a}-{b}: {tau:.2f} over {len(shared)}")
    return ", ".join(out) or "(one seed)"


def resolved_precision(recipe: str, overrides: list[str], device: str) -> list[str]:
    """``precision.bf16=...`` and ``precision.channels_last=...`` as the recipe resolves them on
    ``device`` (``auto``: on CUDA only), for those the overrides do not set: part of the row key,
    so float32 rows on a CPU and bf16 rows on a GPU of one recipe never mix."""
    from nas_reid.engine.precision import Precision
    from nas_reid.train.recipe import load_recipe, parse_overrides

    given = {item.partition("=")[0].strip() for item in overrides}
    config = load_recipe(recipe, parse_overrides(overrides) if overrides else {}).precision
    settings = Precision.settings(config, device.partition(":")[0]).as_dict()
    return [f"precision.{k}={str(v).lower()}" for k, v in settings.items()
            if f"precision.{k}" not in given]


def complete_tag(text: str, recipe: str, device: str) -> str:
    """A ``--compare`` tag as this script writes tags: its ``KEY=VALUE`` items, the precision
    they leave out as ``device`` resolves it, then ``--epochs N`` (so ``""`` names the full
    recipe's rows on that device)."""
    words = text.split()
    epochs = []
    if "--epochs" in words:
        at = words.index("--epochs")
        epochs, words = words[at:at + 2], words[:at] + words[at + 2:]
    return " ".join(words + resolved_precision(recipe, words, device) + epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="cpu_small", help="a space YAML or shipped name")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--recipe", default="synthetic")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="recipe override (recorded; part of the row key)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="retrain for this many epochs, the recipe's schedule scaled to them "
                        "(recorded; part of the row key)")
    parser.add_argument("--compare", default=None, metavar="TAG",
                        help="with --report: rank agreement with the rows whose overrides are TAG")
    parser.add_argument("--compare-csv", default=None, metavar="PATH",
                        help="with --compare: take the TAG rows from this CSV (e.g. another "
                        "backbone file's), not from --csv")
    parser.add_argument("--archs", type=int, default=None,
                        help="only this many architectures, drawn at random (seed 0)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (every job on that device)")
    parser.add_argument("--workers", type=int, default=0, help="image-loading workers per job")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--csv", default=None, help="default bench/results/ground_truth_<space>.csv")
    parser.add_argument("--out", default="runs/ground_truth", help="run folders")
    parser.add_argument("--report", action="store_true", help="summarise the CSV, train nothing")
    args = parser.parse_args()

    from nas_reid.errors import UserError
    from nas_reid.search.quality import Truth, enumerate_architectures, pending_jobs, read_rows, \
        run_ground_truth
    from nas_reid.space import load_space
    from nas_reid.space.reference import search_space_path
    from nas_reid.train.recipe import load_recipe, parse_overrides

    try:
        space = load_space(search_space_path(args.space))
        args.overrides += resolved_precision(args.recipe, args.overrides, args.device)
        tag = " ".join(args.overrides + ([f"--epochs {args.epochs}"] if args.epochs else []))
        if args.compare is not None:
            args.compare = complete_tag(args.compare, args.recipe, args.device)
        csv_path = Path(args.csv or ROOT / "bench" / "results" / f"ground_truth_{space.name}.csv")
        if args.report:
            rows = [r for r in read_rows(csv_path) if r["overrides"] == tag]
            if not rows:
                sys.exit(f"{csv_path}: no rows with overrides {tag!r}")
            print(report(Truth.from_rows(rows), space.name))
            if args.compare is not None:
                other = Path(args.compare_csv) if args.compare_csv else csv_path
                if not other.is_file():
                    sys.exit(f"error: --compare-csv {other}: no such file")
                label = f" in {other.name}" if other != csv_path else ""
                print(compare(Truth.from_rows(rows), tag, read_rows(other), args.compare, label))
            return
        overrides = parse_overrides(args.overrides) if args.overrides else {}
        load_recipe(args.recipe, overrides)  # fails here, before any training, if invalid
        archs = enumerate_architectures(space)
    except UserError as exc:
        sys.exit(f"error: {exc}")
    if args.archs is not None:
        archs = sorted(random.Random(0).sample(archs, min(args.archs, len(archs))))
    jobs = pending_jobs(archs, args.seeds, read_rows(csv_path), tag)
    print(f"{space.name}: {len(archs)} architectures x {len(args.seeds)} seeds, {len(jobs)} "
          f"retrains to run ({args.jobs} at a time x {args.threads} thread(s)) -> {csv_path}",
          flush=True)
    sha = ""
    if jobs:
        from nas_reid.search.quality import GT_FIELDS, check_columns, check_one_backbone
        from nas_reid.train.pretrain import file_sha256, resolve_backbone_weights

        try:  # once here, not per job (and on the jobs' device: a GPU pretrains in a minute)
            check_columns(csv_path, GT_FIELDS)
            weights = resolve_backbone_weights(
                load_recipe(args.recipe, overrides).backbone.weights, space.backbone.name,
                space.input_size, space.backbone.last_stride, device=args.device, log=print)
            sha = file_sha256(weights)[:12] if weights is not None else ""
            print(f"backbone weights: {weights or 'none'}" + (f" (sha256 {sha})" if sha else ""))
            check_one_backbone(read_rows(csv_path), sha, csv_path)
        except (UserError, OSError) as exc:
            sys.exit(f"error: {exc}")
    label = re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{space.name}-{args.recipe}-{tag}" if tag
                   else f"{space.name}-{args.recipe}")
    started = time.perf_counter()
    run_ground_truth(jobs, train_job, csv_path, workers=args.jobs, log=lambda s: print(s, flush=True),
                     base={"recipe": args.recipe, "overrides": overrides, "tag": tag,
                           "backbone_sha256": sha,
                           "epochs": args.epochs,
                           "threads": args.threads, "device": args.device,
                           "workers": args.workers, "out": str(Path(args.out) / label),
                           "space": space.name, "space_hash": space.canonical_hash()})
    print(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    rows = [r for r in read_rows(csv_path) if r["overrides"] == tag]
    if rows:
        print(report(Truth.from_rows(rows), space.name))


if __name__ == "__main__":
    main()
