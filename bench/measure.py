"""Peak memory of one run of a benchmark script, measured in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_measured(script: str, args: list[str], keep_matrix: bool = False):
    """Run ``python SCRIPT ARGS --out F`` under a fresh intermediate process that reports
    ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of its only child.

    The child writes its figures as JSON to ``F`` (and, with ``keep_matrix``, an array to
    ``F.npy``). Returns ``(figures, peak MiB, array or None)``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [sys.executable, os.path.abspath(script), *args, "--out", out]
        launcher = ("import resource, subprocess, sys; "
                    f"subprocess.run({cmd!r}, check=True); "
                    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        done = subprocess.run([sys.executable, "-c", launcher], check=True, capture_output=True,
                              text=True, env=env)
        with open(out) as handle:
            result = json.load(handle)
        matrix = np.load(out + ".npy") if keep_matrix else None
    return result, int(done.stdout.strip().splitlines()[-1]) / 1024.0, matrix  # KiB on Linux


WARMUP = 2
"""Untimed calls before the timed ones (allocator and library initialisation)."""


def reset_rss_high_water_mark() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs``), so that the peak a launcher reads
    afterwards excludes what came before (imports, data). False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def current_rss_kb() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def time_steps(step, device, repeats: int, warmup: int = WARMUP) -> dict:
    """Best-of-``repeats`` wall time of ``step()`` after ``warmup`` untimed calls, and memory.

    Returns ``best_s`` and ``ms``; on CUDA ``cuda_peak_mib`` (peak allocated),
    ``cuda_step_mib`` (peak above what was allocated before the first call) and
    ``cuda_reserved_mib`` (peak held by the caching allocator: what the card must have free); on CPU
    ``base_rss_kb`` (RSS before the first call) and ``hwm_reset``: the peak RSS is read by the
    launcher (:func:`run_measured`) once this process has exited.
    """
    import time

    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    result: dict = {}
    sync()
    if device.type == "cuda":
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        result["hwm_reset"] = reset_rss_high_water_mark()
        result["base_rss_kb"] = current_rss_kb()
    times = []
    for i in range(repeats + warmup):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    result["best_s"] = min(times)
    result["ms"] = 1000 * result["best_s"]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        result["cuda_peak_mib"] = peak / 2**20
        result["cuda_step_mib"] = (peak - base) / 2**20
        result["cuda_reserved_mib"] = torch.cuda.max_memory_reserved(device) / 2**20
    return result


def measure_case(script: str, case: dict, run_case) -> dict:
    """``run_case(case)`` with its memory: on CUDA in this process (``peak_total_mib`` /
    ``peak_step_mib`` from :func:`time_steps`' CUDA figures), on CPU in a fresh process running
    ``script --_worker CASE`` (:func:`run_measured`; peak RSS in all and above the pre-step RSS,
    ``upper_bound`` when the high-water mark could not be reset). On CUDA the allocator's cache
    is emptied first, so one case's cached blocks do not crowd the next. A case that runs out of
    GPU memory returns ``{"oom": True, "error": ...}`` instead of ending the benchmark."""
    if case["device"] == "cuda":
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            result = run_case(case)
        except torch.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            return {"oom": True, "error": str(exc).splitlines()[0]}
        result["peak_total_mib"] = result["cuda_peak_mib"]
        result["peak_step_mib"] = result["cuda_step_mib"]
        return result
    result, peak_mib, _ = run_measured(script, ["--_worker", json.dumps(case)])
    result["peak_total_mib"] = peak_mib
    result["peak_step_mib"] = peak_mib - result["base_rss_kb"] / 1024
    result["upper_bound"] = not result["hwm_reset"]
    return result


def add_worker_arguments(parser) -> None:
    """The hidden ``--_worker CASE --out FILE`` arguments :func:`measure_case` calls a script with."""
    import argparse

    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)


def serve_worker(args, run_case) -> None:
    """In a ``--_worker`` process: run the case, write its figures to ``--out`` and exit at once
    (interpreter teardown could only add to the peak). Returns when not a worker."""
    if not args._worker:
        return
    result = run_case(json.loads(args._worker))
    with open(args.out, "w") as handle:
        json.dump(result, handle)
    sys.stdout.flush()
    os._exit(0)
