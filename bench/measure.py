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
