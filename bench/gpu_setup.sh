# Sourced by bench/gpu_ground_truth.sh and bench/gpu_search_quality.sh on a lent GPU machine (run
# from the repository root, OUT set): the shared cache under $WORK (default
# /tmp/nas_reid_ground_truth, NAS_REID_CACHE there), the pretrained backbone copied in from
# .gpu_cache/, pydantic from .gpu_wheels/ and the package installed (no network there; output in
# $OUT/install.log). Under a lock, so scripts started side by side set up once.
WORK=${WORK:-/tmp/nas_reid_ground_truth}
mkdir -p "$WORK/cache"
export NAS_REID_CACHE="$WORK/cache" PYTHONUNBUFFERED=1
(
    flock 9
    [ -d .gpu_cache/pretrained ] && [ ! -d "$WORK/cache/pretrained" ] && cp -r .gpu_cache/pretrained "$WORK/cache/"
    if ! python3 -c "import pydantic" 2>/dev/null; then
        python3 -m pip install -q --no-index --no-deps .gpu_wheels/*.whl >> "$OUT/install.log" 2>&1
    fi
    if ! command -v nas-reid > /dev/null; then
        python3 -m pip install -q --no-deps --no-build-isolation -e . >> "$OUT/install.log" 2>&1
    fi
) 9> "$WORK/setup.lock"
