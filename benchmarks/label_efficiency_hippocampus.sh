#!/usr/bin/env bash
# The label-efficiency benchmark on Task04_Hippocampus whose outputs are committed under
# docs/results/hippocampus/: report.md, results.json and the plots of the main run;
# transfer_probe.md, which compares encoder-only with encoder+decoder transfer on the validation
# split; and validation_curves.md, the validation Dice of every cell per validation round. The budget fits a 2-core CPU in about 75 minutes: 2000 pretraining steps per method,
# 200 fine-tuning steps per cell, 3 methods x 3 fractions x 3 seeds, then 6 probe cells.
# Rerunning reuses every finished cell and pretraining run.
#
#   bash benchmarks/label_efficiency_hippocampus.sh [DATA] [OUT]
set -euo pipefail
DATA=${1:-../shared/data/Task04_Hippocampus}
OUT=${2:-runs/bench-h}
DOCS=docs/results/hippocampus
BIN=.venv/bin
COMMON=(--seeds 3 --pretrain-steps 2000 --finetune-steps 200 --val-every 50)
$BIN/vectorpose benchmark "$DATA" --out "$OUT" --methods scratch,genesis,vectorpose --fractions 0.05,0.1,1.0 \
    "${COMMON[@]}" --notes "$DOCS/notes.md"
# Which layers to transfer, decided on the validation split: the same cells with --transfer all.
$BIN/vectorpose benchmark "$DATA" --out "$OUT-transfer-all" --methods vectorpose --fractions 0.05,0.1 \
    "${COMMON[@]}" --transfer all --pretrained "vectorpose=$OUT/pretrain/vectorpose"
mkdir -p "$DOCS"
$BIN/python benchmarks/compare_transfer.py "$OUT" "$OUT-transfer-all" > "$DOCS/transfer_probe.md.tmp"
mv "$DOCS/transfer_probe.md.tmp" "$DOCS/transfer_probe.md"
$BIN/python benchmarks/validation_curves.py "$OUT" > "$DOCS/validation_curves.md.tmp"
mv "$DOCS/validation_curves.md.tmp" "$DOCS/validation_curves.md"
cp "$OUT"/report.md "$OUT"/results.json "$OUT"/*.png "$DOCS"/
