#!/usr/bin/env bash
# Detector throughput on a GPU machine, as in the README's "Detector on a GPU" table:
# `mobieye models throughput` over ultralytics architectures (untrained weights: real compute,
# no download), CUDA FP32 and FP16 at batch 1..32, and this machine's CPU as the baseline.
# Usage: scripts/gpu-throughput.sh OUTDIR   (needs the project importable and a CUDA torch)
set -euo pipefail
out=${1:?usage: $0 OUTDIR}
mkdir -p "$out"
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false YOLO_VERBOSE=false PYTHONUNBUFFERED=1
export MOBIEYE_CACHE_DIR=${MOBIEYE_CACHE_DIR:-/tmp/mobieye-cache}
export MOBIEYE_DATA_DIR=${MOBIEYE_DATA_DIR:-$PWD/.gpu-data}
ladder=${LADDER:-yolo11n.yaml@640,yolo11s.yaml@640,yolo11m.yaml@640}
mobieye() { python3 -m mobieye.cli "$@"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
  | tee -a "$out/gpu.txt"
mobieye models throughput --ladder "$ladder" --device cuda --batch 1,2,4,8,16,32 --calls 20 \
  --json "$out/cuda-fp32.json" --markdown "$out/cuda-fp32.md"
mobieye models throughput --ladder "$ladder" --device cuda --half --batch 1,8,32 --calls 20 \
  --json "$out/cuda-fp16.json" --markdown "$out/cuda-fp16.md"
# The baseline: the same models on this machine's CPU, all its cores for one call.
MOBIEYE_DETECTOR__THREADS=$(nproc) mobieye models throughput --ladder "$ladder" --device cpu \
  --batch 1,4 --calls 5 --json "$out/cpu.json" --markdown "$out/cpu.md"
