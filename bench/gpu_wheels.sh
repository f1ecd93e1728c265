#!/usr/bin/env bash
# The wheels bench/gpu_check.sh installs on a lent GPU machine that has no network: pydantic and
# what it needs, for that machine's python3 (3.12, x86_64), into .gpu_wheels/ (ignored by git).
#
#   bash bench/gpu_wheels.sh        # here, where the package registry is reachable
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(python3 -c "import pydantic; print(pydantic.VERSION)" 2>/dev/null || echo 2.14.4)
python3 -m pip download -q "pydantic==$version" --python-version 3.12 \
    --platform manylinux2014_x86_64 --only-binary=:all: -d .gpu_wheels
ls .gpu_wheels
