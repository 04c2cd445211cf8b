#!/usr/bin/env bash
# The label-efficiency benchmark on Task04_Hippocampus whose outputs are committed under
# docs/results/hippocampus/:
#   report.md, results.json, *.png   the main run: scratch, genesis, vectorpose at 5, 10, 100 % labels
#   ablation-5pct/                   every method (with the vp and bfr halves of VectorPOSE) at 5 %
#   transfer_probe.md                encoder-only against encoder+decoder transfer, validation split
#   validation_curves.md             validation Dice of every main-run cell per validation round
# Budget (2-core CPU, about 1 h 45 min): 2000 pretraining steps per method, 200 fine-tuning steps per
# cell, 3 seeds. Both benchmark commands share one folder, so the second reuses the cells they have in
# common; rerunning the script reuses every finished cell and pretraining run.
#
#   bash benchmarks/label_efficiency_hippocampus.sh [DATA] [OUT]
set -euo pipefail
DATA=${1:-../shared/data/Task04_Hippocampus}
OUT=${2:-runs/bench-h}
DOCS=docs/results/hippocampus
BIN=.venv/bin
COMMON=(--seeds 3 --pretrain-steps 2000 --finetune-steps 200 --val-every 50)
mkdir -p "$DOCS/ablation-5pct"

$BIN/vectorpose benchmark "$DATA" --out "$OUT" --methods scratch,genesis,vp,bfr,vectorpose --fractions 0.05 "${COMMON[@]}"
cp "$OUT"/report.md "$OUT"/results.json "$OUT"/*.png "$DOCS/ablation-5pct/"

$BIN/vectorpose benchmark "$DATA" --out "$OUT" --methods scratch,genesis,vectorpose --fractions 0.05,0.1,1.0 \
    "${COMMON[@]}" --notes "$DOCS/notes.md"
cp "$OUT"/report.md "$OUT"/results.json "$OUT"/*.png "$DOCS"/

# Which layers to transfer, decided on the validation split: the same cells with --transfer all.
$BIN/vectorpose benchmark "$DATA" --out "$OUT-transfer-all" --methods vectorpose --fractions 0.05,0.1 \
    "${COMMON[@]}" --transfer all --pretrained "vectorpose=$OUT/pretrain/vectorpose"
$BIN/python benchmarks/compare_transfer.py "$OUT" "$OUT-transfer-all" > "$DOCS/transfer_probe.md.tmp"
mv "$DOCS/transfer_probe.md.tmp" "$DOCS/transfer_probe.md"
$BIN/python benchmarks/validation_curves.py "$OUT" > "$DOCS/validation_curves.md.tmp"
mv "$DOCS/validation_curves.md.tmp" "$DOCS/validation_curves.md"
