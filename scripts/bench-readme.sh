#!/usr/bin/env bash
# Every figure in the README's Benchmark section, in one go (about 35 minutes on 2 cores):
# one stream and four on loopback, the LTE link three times (needs root: network namespaces),
# the capacity sweeps with one and two workers, and the 30-minute soak.
# Usage: scripts/bench-readme.sh [OUTDIR]   (default docs/bench; run on a quiet machine)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/bench}
data=${MOBIEYE_DATA_DIR:-../shared/data}
video=$data/videos/TUD-Stadtmitte.mp4
gt=$data/annotations/TUD-Stadtmitte/gt/gt.txt
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false ORT_DISABLE_TELEMETRY=1 YOLO_VERBOSE=false
# `python -m` from this directory: the code of this checkout runs, whatever is installed.
mobieye() { "${PY:-.venv/bin/python}" -m mobieye.cli "$@"; }
bench() { mobieye bench --video "$video" --gt "$gt" "$@"; }
mkdir -p "$out"
only=${ONLY:-b1,b4,lte,capacity,capacity2,soak}
has() { [[ ",$only," == *",$1,"* ]]; }
if has b1; then
  bench --streams 1 --modes conventional,fixed,mobieye,stock-receive --components \
    --out "$out/b1.json"
fi
has b4 && bench --streams 4 --out "$out/b4.json"
if has lte; then
  for run in 1 2 3; do bench --link lte --sla 250 --out "$out/lte-run$run.json"; done
fi
if has capacity; then
  bench --fps 30 --streams 1,2,4,6 --modes conventional,mobieye --duration 15 \
    --out "$out/capacity.json"
fi
if has capacity2; then
  bench --fps 30 --workers 2 --streams 2,4,6 --modes mobieye --duration 15 \
    --out "$out/capacity-2workers.json"
fi
if has soak; then
  mobieye bench --soak 30 --video "$video" --streams 4 --window 60 \
    --out "$out/soak.json"
fi
