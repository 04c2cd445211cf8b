#!/usr/bin/env bash
# The label-efficiency benchmark on Task04_Hippocampus whose outputs are committed under
# docs/results/hippocampus/ (report.md, results.json, plots). The budget fits a 2-core CPU in about
# an hour: 2000 pretraining steps per method, 200 fine-tuning steps per cell, 3 methods x 3
# fractions x 3 seeds. Rerunning the same command reuses every finished cell.
#
#   bash benchmarks/label_efficiency_hippocampus.sh [DATA] [OUT]
set -euo pipefail
DATA=${1:-../shared/data/Task04_Hippocampus}
OUT=${2:-runs/bench-h}
DOCS=docs/results/hippocampus
.venv/bin/vectorpose benchmark "$DATA" --out "$OUT" \
    --methods scratch,genesis,vectorpose --fractions 0.05,0.1,1.0 --seeds 3 \
    --pretrain-steps 2000 --finetune-steps 200 --val-every 50 --notes "$DOCS/notes.md"
mkdir -p "$DOCS"
cp "$OUT"/report.md "$OUT"/results.json "$OUT"/*.png "$DOCS"/
