#!/usr/bin/env bash
# The GPU numbers of docs/performance.md: the throughput benchmark in four settings, a short
# pretraining run, and whole-volume inference on a CT-sized volume. Then two runs that look for the
# cause of the (b)/(a) overhead: profiles of (a) and (b), and the boundary target made by the workers.
#
#   bash benchmarks/gpu_checks.sh ../shared/data/Task04_Hippocampus runs/gpu
set -euo pipefail
DATA=${1:-../shared/data/Task04_Hippocampus}
OUT=${2:-runs/gpu}
CACHE=${CACHE:-$OUT/cache}
WORKERS=${WORKERS:-8}
mkdir -p "$OUT"
vp() { python3 -m vectorpose.cli "$@"; }
common=(--device cuda --workers "$WORKERS" --steps 40 --cache "$CACHE" --overwrite)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
vp bench "$DATA" "${common[@]}" --batch 4 --out "$OUT/bench_b4.json"
vp bench "$DATA" "${common[@]}" --batch 16 --out "$OUT/bench_b16.json"
vp bench "$DATA" "${common[@]}" --batch 16 --amp bf16 --channels-last --out "$OUT/bench_b16_bf16_cl.json"
timeout 240 python3 -m vectorpose.cli bench "$DATA" "${common[@]}" --batch 16 --amp bf16 --channels-last --compile \
    --out "$OUT/bench_b16_bf16_cl_compile.json" || echo "the torch.compile run failed or took over 240 s"
rm -rf "$OUT/pretrain"
vp pretrain "$DATA" --out "$OUT/pretrain" --device cuda --workers "$WORKERS" --batch 16 --steps 300 --log-every 50 --amp bf16 \
    --channels-last --cache "$CACHE" --quiet
python3 benchmarks/inference_speed.py --device cuda --shape 512,512,200 --patch 128,128,128 --window-batch 1,4 | tee "$OUT/inference_ct.json"
python3 benchmarks/inference_speed.py --device cuda --shape 35,51,35 --patch 48,64,48 --window-batch 1,4 | tee "$OUT/inference_hippocampus.json"
vp bench "$DATA" "${common[@]}" --batch 16 --profile "$OUT/profile_b16" --out "$OUT/bench_b16_profiled.json"
vp bench "$DATA" "${common[@]}" --batch 16 --boundary-in workers --out "$OUT/bench_b16_boundary_in_workers.json"
