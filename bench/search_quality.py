"""Search quality: what each strategy picks on the built-in benchmark, judged by the ground truth.

For every ``--strategies`` entry and ``--seeds`` seed this runs ``nas_reid.search.search`` on the
default space (``--space``) on synthreid, maps the genotype it returns to its architecture in the
ground-truth table (``bench/ground_truth.py``) and appends one row to ``--csv`` (default
``bench/results/search_quality.csv``): the picked architecture, its mean test mAP over the table's
seeds, its regret (the table's best mean minus the pick's), its rank percentile, Kendall's tau
between the strategy's architecture scores (log-probability of each architecture under the final
distribution) and the table's mean test mAP, the search's wall seconds, where it ran (``device``)
and the pretrained backbone file it started from (``backbone_sha256``). Rows already in the file
are skipped: the script can be stopped and continued. ``bench/gpu_search_quality.sh`` runs
searches side by side on a GPU.

Random search at the same compute gets rows too: ``k`` = (median search seconds + one retrain) /
one retrain of the table, architectures sampled, one seed's *validation* mAP observed for each,
the best by validation kept, its *test* mAP reported (one row per seed, and a 2,000-trial
summary in the report). The best of ``k`` random picks for k = 1 .. 20 is printed as a curve.

Strategies: ``gumbel`` (GDAS), ``softmax`` (DARTS), ``uniform`` (SPOS:
single-path uniform training, then every sub-network scored on the held-out identities; its
architecture scores for tau are those held-out mAPs, from the run's ``subnets.csv``);
``zero_cost`` (no training: every sub-network's triplet loss at initialisation, its negation
the score for tau); ``NAME:KEY=VALUE,...`` defines another from search-space overrides, e.g.
``tau1:sampling.tau.end=1.0``.

    python bench/search_quality.py --seeds 0 1 2 3 4                  # run and report
    python bench/search_quality.py --report                           # from the CSVs only
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FIELDS = ["strategy", "seed", "arch", "test_mAP", "regret", "percentile", "tau", "wall_seconds",
          "k", "space", "space_hash", "overrides", "ground_truth", "package_version", "finished_at",
          "device", "backbone_sha256"]
STRATEGIES = {"gumbel": ["sampling.strategy=gumbel"], "softmax": ["sampling.strategy=softmax"],
              "uniform": ["sampling.strategy=uniform"], "zero_cost": ["sampling.strategy=zero_cost"]}


def parse_strategy(text: str) -> tuple[str, list[str]]:
    name, _, rest = text.partition(":")
    if not rest:
        if name not in STRATEGIES:
            sys.exit(f"unknown strategy {name!r}; shipped: {', '.join(STRATEGIES)}, or "
                     "NAME:KEY=VALUE,... for space overrides")
        return name, STRATEGIES[name]
    return name, [item for item in rest.split(",") if item]


def run_search(space_name: str, overrides: list[str], seed: int, out: Path, threads: int,
               device: str = "cpu", workers: int = 0) -> tuple:
    import torch

    from nas_reid.search import search

    torch.set_num_threads(threads)
    started = time.perf_counter()
    resume = (out / "checkpoints" / "last.pt").is_file()  # a resumed run is its own space
    result = search(None if resume else space_name, None if resume else "synthreid",
                    seed=None if resume else seed, overrides=None if resume else overrides or None,
                    out_dir=out, resume=resume, progress=False, device=device,
                    num_workers=workers)
    seconds = result.metrics[-1].get("time", time.perf_counter() - started) if result.metrics \
        else time.perf_counter() - started
    return result.genotype, float(seconds)


def backbone_sha(space) -> str:
    """The first 12 hex digits of the SHA-256 of the pretrained backbone file the searches start
    from (``weights: synthetic``: the cached one, pretrained now if there is none), else ""."""
    from nas_reid.train.pretrain import file_sha256, resolve_backbone_weights

    if space.backbone.weights != "synthetic":
        return ""
    return file_sha256(resolve_backbone_weights("synthetic", space.backbone.name, space.input_size,
                                                space.backbone.last_stride, log=print))[:12]


def subnet_scores(out: Path) -> dict[str, float] | None:
    """A ``uniform`` or ``zero_cost`` search's score of every architecture (held-out mAP, or the
    negated triplet loss at initialisation: higher is better either way), else None."""
    from nas_reid.search.quality import read_rows

    rows = read_rows(out / "subnets.csv")
    return {r["arch"]: float(r["heldout_mAP"]) if "heldout_mAP" in r else -float(r["init_triplet"])
            for r in rows} or None


def _minutes(rows: list[dict], device: str) -> str:
    seconds = [float(r["wall_seconds"]) for r in rows if r["device"] == device]
    return f"{statistics.fmean(seconds) / 60:.1f}" if seconds else "-"


def report(rows: list[dict], truth, k_max: int = 20) -> str:
    from nas_reid.search.quality import random_search, summarize

    lines = [f"ground truth: {len(truth.archs)} architectures; best {truth.best.key} "
             f"({truth.best.test:.1f} mAP); retrain-noise std "
             f"{truth.noise()['std']:.2f} points", "",
             "| strategy | seeds | picks | median regret | mean test mAP | mean percentile | "
             "mean tau | mean minutes (cpu, 1 thread / cuda) |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    for name in strategies:
        mine = [r for r in rows if r["strategy"] == name]
        regrets = [float(r["regret"]) for r in mine]
        taus = [float(r["tau"]) for r in mine if r["tau"] not in ("", "nan")]
        picks = ", ".join(sorted({r["arch"] for r in mine}))
        tau = f"{statistics.fmean(taus):.2f}" if taus else "-"
        lines.append(f"| {name} | {len(mine)} | {picks} | {statistics.median(regrets):.2f} | "
                     f"{statistics.fmean(float(r['test_mAP']) for r in mine):.1f} | "
                     f"{statistics.fmean(float(r['percentile']) for r in mine):.0f} | {tau} | "
                     f"{_minutes(mine, 'cpu')} / {_minutes(mine, 'cuda')} |")
    ks = sorted({int(r["k"]) for r in rows if r["strategy"].startswith("random") and r["k"]})
    for k in ks:
        s = summarize(random_search(truth, k, trials=2000))
        lines.append(f"| random search k={k} (2,000 trials) | 2000 | - | {s['median_regret']:.2f} | "
                     f"{s['test']:.1f} | {s['percentile']:.0f} | - | - |")
    lines += ["", "best of k random picks (selected by validation mAP, 2,000 trials each):", "",
              "| k | median regret | mean regret | mean test mAP |", "|---:|---:|---:|---:|"]
    for k in range(1, min(k_max, len(truth.archs)) + 1):
        s = summarize(random_search(truth, k, trials=2000))
        lines.append(f"| {k} | {s['median_regret']:.2f} | {s['mean_regret']:.2f} | {s['test']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="cpu_small")
    parser.add_argument("--strategies", nargs="+",
                        default=["gumbel", "softmax", "uniform", "zero_cost"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--ground-truth", default=None,
                        help="default bench/results/ground_truth_<space>.csv")
    parser.add_argument("--gt-overrides", default="",
                        help="the ground-truth rows to use (their overrides column; the precision "
                        "it does not name is float32, so \"\" is the full recipe on a CPU)")
    parser.add_argument("--csv", default=str(ROOT / "bench" / "results" / "search_quality.csv"))
    parser.add_argument("--out", default="runs/search_quality")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="where the searches run (cpu, cuda)")
    parser.add_argument("--workers", type=int, default=0, help="image-loading processes")
    parser.add_argument("--report", action="store_true", help="print the tables, run nothing")
    args = parser.parse_args()

    from nas_reid import __version__
    from nas_reid.errors import UserError
    from nas_reid.search.quality import (Truth, append_row, equal_compute_k, judge, key_of,
                                         random_search, read_rows, scores_from_probabilities)
    from nas_reid.space import load_space
    from nas_reid.space.reference import search_space_path

    from bench.ground_truth import complete_tag

    try:
        space = load_space(search_space_path(args.space))
        args.gt_overrides = complete_tag(args.gt_overrides, "synthetic", "cpu")
    except UserError as exc:
        sys.exit(f"error: {exc}")
    gt_path = Path(args.ground_truth or ROOT / "bench" / "results" / f"ground_truth_{space.name}.csv")
    gt_rows = [r for r in read_rows(gt_path) if r["overrides"] == args.gt_overrides]
    if not gt_rows:
        sys.exit(f"{gt_path}: no ground-truth rows (overrides {args.gt_overrides!r}); run "
                 "bench/ground_truth.py first")
    truth = Truth.from_rows(gt_rows)
    csv_path = Path(args.csv)
    if not args.report:
        done = {(r["strategy"], r["seed"]) for r in read_rows(csv_path)}
        retrain_seconds = statistics.fmean(a.seconds for a in truth.archs.values())
        base = {"space": space.name, "space_hash": space.canonical_hash(),
                "ground_truth": f"{gt_path.name} ({args.gt_overrides or 'full recipe'})",
                "package_version": __version__, "backbone_sha256": backbone_sha(space)}
        for text in args.strategies:
            name, overrides = parse_strategy(text)
            seconds = []
            for seed in args.seeds:
                if (name, str(seed)) in done:
                    continue
                out = Path(args.out) / f"{name}-seed{seed}"
                genotype, wall = run_search(args.space, overrides, seed, out, args.threads,
                                            args.device, args.workers)
                key = key_of(genotype, space)
                j = judge(truth, key, subnet_scores(out) or scores_from_probabilities(genotype, space))
                if args.device == "cpu":
                    seconds.append(wall)
                append_row(csv_path, {**base, "strategy": name, "seed": seed, "arch": key,
                                      "test_mAP": round(j.test, 2), "regret": round(j.regret, 2),
                                      "percentile": round(j.percentile, 1), "tau": round(j.tau, 3),
                                      "wall_seconds": round(wall, 1), "overrides": " ".join(overrides),
                                      "device": args.device,
                                      "finished_at": datetime.now(timezone.utc).isoformat(
                                          timespec="seconds")}, FIELDS)
                print(f"{name} seed {seed}: {key}: test mAP {j.test:.1f}, regret {j.regret:.2f}, "
                      f"percentile {j.percentile:.0f}, tau {j.tau:.2f} ({wall / 60:.1f} min)",
                      flush=True)
            # the same compute is counted on the table's device: CPU searches' seconds against
            # the CPU retrains' (a GPU search's seconds are not comparable with them)
            mine = seconds or [float(r["wall_seconds"]) for r in read_rows(csv_path)
                               if r["strategy"] == name and r["device"] == "cpu"]
            if not mine:
                print(f"{name}: no search timed on cpu yet, so no random-search rows at its "
                      "compute (run one seed with --device cpu)", flush=True)
                continue
            k = equal_compute_k(statistics.median(mine), retrain_seconds)
            for seed in args.seeds:
                if (f"random-{name}", str(seed)) in done:
                    continue
                j = random_search(truth, k, trials=1, seed=seed)[0]
                append_row(csv_path, {**base, "strategy": f"random-{name}", "seed": seed,
                                      "arch": j.key, "test_mAP": round(j.test, 2),
                                      "regret": round(j.regret, 2),
                                      "percentile": round(j.percentile, 1), "tau": "",
                                      "wall_seconds": round(k * retrain_seconds, 1), "k": k,
                                      "overrides": f"same compute as {name}",
                                      "device": "cpu", "backbone_sha256": "",
                                      "finished_at": datetime.now(timezone.utc).isoformat(
                                          timespec="seconds")}, FIELDS)
    print(report(read_rows(csv_path), truth))


if __name__ == "__main__":
    main()
