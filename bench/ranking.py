"""Benchmark: ranking metrics, ours vs the plain numpy reference; chunked feature-level entry.

    python bench/ranking.py [--quick] [--repeat N] [--threads T] [--skip-msmt]

Part 1 (Market-1501 size, 3,368 x 15,913 float32 cosine distances of synthetic features: 750
test ids, 6 cameras, 2,800 distractors): wall time (best of N, measured interleaved in the
same run) of ``evaluate_ranking`` (torch default threads, and 1 thread) and of
``bench.reference.evaluate_reference``; speedup; whether the CMC is identical; |dmAP|,
|dmINP|.

Part 2 (MSMT17 size, 11,659 x 82,161, 256-d features, 3,060 ids, 15 cameras):
``evaluate_features`` in a fresh subprocess; wall time and its peak RSS (read with
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` by a fresh intermediate process), next to
the peak RSS of a subprocess that only builds the same features, and to the size the full
float32 distance matrix would take.

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


def synthetic_reid(num_query, num_gallery, num_ids, num_cams, num_distractors, dim, seed,
                   noise=1.35, cam_bias=0.3):
    """Identity-clustered features with a per-camera bias; gallery pid 0 = distractors."""
    rng = np.random.default_rng(seed)
    g_pids = np.concatenate([rng.integers(1, num_ids + 1, num_gallery - num_distractors),
                             np.zeros(num_distractors, dtype=np.int64)])
    q_pids = rng.integers(1, num_ids + 1, num_query)
    g_cams = rng.integers(0, num_cams, num_gallery)
    q_cams = rng.integers(0, num_cams, num_query)
    centers = rng.standard_normal((num_ids + 1, dim), dtype=np.float32)
    cam_offset = cam_bias * rng.standard_normal((num_cams, dim), dtype=np.float32)

    def features(pids, cams, block=8192):  # by blocks, to keep the generation peak low
        out = np.empty((len(pids), dim), dtype=np.float32)
        for s in range(0, len(pids), block):
            p, c = pids[s:s + block], cams[s:s + block]
            f = centers[p] + cam_offset[c]
            f += noise * rng.standard_normal(f.shape, dtype=np.float32)
            dis = p == 0
            noise_only = rng.standard_normal((int(dis.sum()), dim), dtype=np.float32)
            f[dis] = noise_only + cam_offset[c[dis]]
            out[s:s + block] = f
        return out

    return features(q_pids, q_cams), features(g_pids, g_cams), q_pids, g_pids, q_cams, g_cams


def _best(fn, times):
    t0 = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t0)
    return out


def market_part(quick: bool, repeat: int) -> None:
    import torch

    from bench.reference import evaluate_reference
    from nas_reid.evaluation import evaluate_ranking, pairwise_distance

    if quick:
        sizes = dict(num_query=500, num_gallery=2500, num_ids=120, num_cams=6, num_distractors=400)
    else:
        sizes = dict(num_query=3368, num_gallery=15913, num_ids=750, num_cams=6,
                     num_distractors=2800)
    qf, gf, qp, gp, qc, gc = synthetic_reid(**sizes, dim=128, seed=0)
    distmat = pairwise_distance(qf, gf, "cosine").numpy()
    assert distmat.dtype == np.float32
    threads = torch.get_num_threads()

    t_ours, t_ours1, t_ref = [], [], []
    ours = ref = None
    for _ in range(repeat):  # interleaved, so that load from other processes hits all alike
        ours = _best(lambda: evaluate_ranking(distmat, qp, gp, qc, gc), t_ours)
        torch.set_num_threads(1)
        _best(lambda: evaluate_ranking(distmat, qp, gp, qc, gc), t_ours1)
        torch.set_num_threads(threads)
        ref = _best(lambda: evaluate_reference(distmat, qp, gp, qc, gc), t_ref)

    same_cmc = bool(np.array_equal(ours["cmc"], ref["cmc"]))
    d_map = abs(ours["mAP"] - ref["mAP"])
    d_minp = abs(ours["mINP"] - ref["mINP"])
    q, g = distmat.shape
    size = "quick" if quick else "Market-1501 size"
    print(f"\n### Ranking metrics, {q:,} x {g:,} float32 ({size})"
          f"; best of {repeat}, interleaved\n")
    print(f"R1 {ours['cmc'][0]:.4f}, mAP {ours['mAP']:.4f}, mINP {ours['mINP']:.4f}, "
          f"{ours['num_valid_queries']} valid / {ours['num_skipped_queries']} skipped queries\n")
    print("| Evaluator | Wall time (s) | Speedup vs reference | CMC identical | abs dmAP "
          "| abs dmINP |")
    print("|---|---|---|---|---|---|")
    best_ref = min(t_ref)
    print(f"| numpy reference (per-query stable argsort) | {best_ref:.3f} | 1.0x | - | - | - |")
    print(f"| `evaluate_ranking`, torch {threads} threads | {min(t_ours):.3f} | "
          f"{best_ref / min(t_ours):.1f}x | {'yes' if same_cmc else 'NO'} | {d_map:.1e} | "
          f"{d_minp:.1e} |")
    print(f"| `evaluate_ranking`, torch 1 thread | {min(t_ours1):.3f} | "
          f"{best_ref / min(t_ours1):.1f}x | {'yes' if same_cmc else 'NO'} | {d_map:.1e} | "
          f"{d_minp:.1e} |")


# ------------------------------------------------------------------------------------------
# part 2: the chunked feature-level entry at MSMT17 size, in fresh subprocesses

_MSMT = dict(num_query=11659, num_gallery=82161, num_ids=3060, num_cams=15,
             num_distractors=0)
_MSMT_QUICK = dict(num_query=2000, num_gallery=12000, num_ids=500, num_cams=15,
                   num_distractors=0)


def _child(mode: str, quick: bool, out: str, threads: int) -> None:
    """Worker run in a fresh process: build features, optionally evaluate; write JSON."""
    import torch  # imported in both modes so that the baselines match

    from nas_reid.evaluation import evaluate_features

    if threads:
        torch.set_num_threads(threads)
    sizes = _MSMT_QUICK if quick else _MSMT
    qf, gf, qp, gp, qc, gc = synthetic_reid(**sizes, dim=256, seed=1, noise=1.75)
    result = {}
    if mode == "evaluate":
        t0 = time.perf_counter()
        r = evaluate_features(qf, gf, qp, gp, qc, gc, metric="cosine")
        result = {"seconds": time.perf_counter() - t0, "R1": float(r["cmc"][0]),
                  "mAP": r["mAP"], "mINP": r["mINP"]}
    with open(out, "w") as handle:
        json.dump(result, handle)


def msmt_part(quick: bool, threads: int) -> None:
    sizes = _MSMT_QUICK if quick else _MSMT
    q, g = sizes["num_query"], sizes["num_gallery"]
    flag = (["--quick"] if quick else []) + ["--threads", str(threads)]
    _, base_mib, _ = run_measured(__file__, ["--child", "features", *flag])
    res, peak_mib, _ = run_measured(__file__, ["--child", "evaluate", *flag])
    full_mib = q * g * 4 / 2**20
    print(f"\n### `evaluate_features` (cosine, 256-d, default chunk), {q:,} x {g:,} "
          f"({'quick' if quick else 'MSMT17 size'}), fresh subprocess, torch "
          f"{threads or 'default'} thread(s)\n")
    print(f"R1 {res['R1']:.4f}, mAP {res['mAP']:.4f}, mINP {res['mINP']:.4f}\n")
    print("| Quantity | Value |")
    print("|---|---|")
    print(f"| Wall time (distances + metrics) | {res['seconds']:.1f} s |")
    print(f"| Peak RSS, evaluating | {peak_mib:,.0f} MiB |")
    print(f"| Peak RSS, same process only building the features | {base_mib:,.0f} MiB |")
    print(f"| Extra peak for the evaluation | {peak_mib - base_mib:,.0f} MiB |")
    print(f"| Full float32 distance matrix would take | {full_mib:,.0f} MiB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timing repeats (default 5, quick 3)")
    parser.add_argument("--skip-msmt", action="store_true", help="only part 1")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for part 2 (default: torch's default)")
    parser.add_argument("--child", choices=["features", "evaluate"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.quick, args.out, args.threads)
        return
    repeat = args.repeat or (3 if args.quick else 5)
    market_part(args.quick, repeat)
    if not args.skip_msmt:
        msmt_part(args.quick, args.threads)


if __name__ == "__main__":
    main()
