"""Benchmark: k-reciprocal re-ranking, ours vs the straightforward numpy reference.

    python bench/rerank.py [--quick] [--repeat N]

Synthetic identity-clustered 256-d features (1,000 queries + 4,000 gallery; ``--quick``:
300 + 1,200), L2-normalised, k1=20, k2=6, lambda=0.3. Each implementation runs in its own
fresh subprocess (interleaved, best of N; ours with torch's default threads and with 1
thread), whose peak RSS is read with
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` by a fresh intermediate process. Reported:
re-ranking wall time, peak RSS, and R1 / mAP / mINP of the re-ranked distances (each side's
metrics computed by its own evaluator: ours by ``evaluate_ranking``, the reference's by
``bench.reference.evaluate_reference``), plus the largest absolute difference between the two
final distance matrices. The metrics of the plain distance are shown for context.

Prints markdown tables. No assertion on timings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.measure import run_measured  # noqa: E402

K1, K2, LAMBDA = 20, 6, 0.3


def synthetic_features(num_query, num_gallery, num_ids=None, num_cams=6, dim=256, seed=0,
                       noise=1.9, cam_bias=0.4):
    """L2-normalised identity-clustered features with a per-camera bias (float32); by default
    one identity per 6 items."""
    rng = np.random.default_rng(seed)
    num_ids = num_ids or (num_query + num_gallery) // 6
    q_pids = rng.integers(0, num_ids, num_query)
    g_pids = rng.integers(0, num_ids, num_gallery)
    q_cams = rng.integers(0, num_cams, num_query)
    g_cams = rng.integers(0, num_cams, num_gallery)
    centers = rng.standard_normal((num_ids, dim), dtype=np.float32)
    cam_offset = cam_bias * rng.standard_normal((num_cams, dim), dtype=np.float32)

    def features(pids, cams):
        f = centers[pids] + cam_offset[cams]
        f += noise * rng.standard_normal(f.shape, dtype=np.float32)
        return f / np.linalg.norm(f, axis=1, keepdims=True)

    return features(q_pids, q_cams), features(g_pids, g_cams), q_pids, g_pids, q_cams, g_cams


def _sizes(quick):
    return (300, 1200) if quick else (1000, 4000)


def _child(impl: str, quick: bool, out: str) -> None:
    """Worker in a fresh process: re-rank with one implementation, evaluate, save."""
    import torch  # both workers import torch, so that the RSS baselines match

    qf, gf, qp, gp, qc, gc = synthetic_features(*_sizes(quick))
    wq, wg = qf[:20], gf[:80]  # warm-up call on a tiny problem (library initialisation)
    if impl.startswith("ours"):
        from nas_reid.evaluation import evaluate_ranking, rerank

        if impl == "ours1":
            torch.set_num_threads(1)

        rerank(wq, wg, K1, K2, LAMBDA)
        t0 = time.perf_counter()
        final = rerank(qf, gf, K1, K2, LAMBDA).numpy()
        seconds = time.perf_counter() - t0
        metrics = evaluate_ranking(final, qp, gp, qc, gc)
    elif impl == "reference":
        from bench.reference import evaluate_reference, rerank_reference

        rerank_reference(wq, wg, K1, K2, LAMBDA)
        t0 = time.perf_counter()
        final = rerank_reference(qf, gf, K1, K2, LAMBDA)
        seconds = time.perf_counter() - t0
        metrics = evaluate_reference(final, qp, gp, qc, gc)
    else:  # plain distance, for context
        from nas_reid.evaluation import evaluate_features

        evaluate_features(wq, wg, qp[:20], gp[:80], qc[:20], gc[:80], metric="euclidean")
        t0 = time.perf_counter()
        metrics = evaluate_features(qf, gf, qp, gp, qc, gc, metric="euclidean")
        seconds = time.perf_counter() - t0
        final = None
    if final is not None:
        np.save(out + ".npy", np.asarray(final, dtype=np.float64))
    with open(out, "w") as handle:
        json.dump({"seconds": seconds, "R1": float(metrics["cmc"][0]), "mAP": metrics["mAP"],
                   "mINP": metrics["mINP"]}, handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 + 1,200 items")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side (best of)")
    parser.add_argument("--child", choices=["ours", "ours1", "reference", "plain"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.quick, args.out)
        return
    flag = ["--quick"] if args.quick else []
    runs = {"ours": [], "ours1": [], "reference": []}
    mats = {}
    for i in range(args.repeat):  # interleaved
        for impl in runs:
            res, rss, mat = run_measured(__file__, ["--child", impl, *flag], keep_matrix=(i == 0))
            runs[impl].append((res, rss))
            if mat is not None:
                mats[impl] = mat
    plain, plain_rss, _ = run_measured(__file__, ["--child", "plain", *flag])
    max_diff = float(np.abs(mats["ours"] - mats["reference"]).max())

    q, g = _sizes(args.quick)
    best = {k: min(r["seconds"] for r, _ in v) for k, v in runs.items()}
    rss = {k: max(m for _, m in v) for k, v in runs.items()}
    met = {k: v[0][0] for k, v in runs.items()}
    print(f"\n### k-reciprocal re-ranking, {q:,} queries + {g:,} gallery, 256-d, "
          f"k1={K1} k2={K2} lambda={LAMBDA}; best of {args.repeat}, interleaved, each run in a "
          f"fresh subprocess\n")
    print("| Implementation | Re-rank time (s) | Peak RSS (MiB) | R1 | mAP | mINP |")
    print("|---|---|---|---|---|---|")
    print(f"| plain squared Euclidean, no re-ranking (RSS = baseline: torch + features) | - | "
          f"{plain_rss:,.0f} | {plain['R1']:.4f} | "
          f"{plain['mAP']:.4f} | {plain['mINP']:.4f} |")
    import torch

    threads = torch.get_num_threads()
    for name, key in (("numpy reference (dense, Python loops)", "reference"),
                      (f"`rerank` (torch, sparse), torch {threads} threads", "ours"),
                      ("`rerank` (torch, sparse), torch 1 thread", "ours1")):
        print(f"| {name} | {best[key]:.2f} | {rss[key]:,.0f} | {met[key]['R1']:.4f} | "
              f"{met[key]['mAP']:.4f} | {met[key]['mINP']:.4f} |")
    print(f"\nSpeedup {best['reference'] / best['ours']:.1f}x ({threads} threads), "
          f"{best['reference'] / best['ours1']:.1f}x (1 thread); peak RSS "
          f"{rss['ours']:,.0f} vs {rss['reference']:,.0f} MiB (baseline {plain_rss:,.0f} MiB); "
          f"|dR1| {abs(met['ours']['R1'] - met['reference']['R1']):.1e}, "
          f"|dmAP| {abs(met['ours']['mAP'] - met['reference']['mAP']):.1e}, "
          f"|dmINP| {abs(met['ours']['mINP'] - met['reference']['mINP']):.1e}; "
          f"max |d final distance| {max_diff:.1e} (ours float32, reference float64).")


if __name__ == "__main__":
    main()
