#!/usr/bin/env bash
# CHAOS MR T2-SPIR, the second body task (issues 15 and 16), at the CPU plan.
#
# 19 abdominal MR scans (liver, kidneys, spleen; 1.25 x 1.25 x 7.7 mm) as in ../shared/data/CHAOS_T2.
# Split seed 0: 4 test scans, 2 validation scans, a pool of 13 from which every seed draws its 2 and
# then 5 labelled scans (nested). Spacing, patch and batch are the defaults planned for this CPU
# (`vectorpose plan $CHAOS` prints them). Scratch first, then VectorPOSE (pretrained $PRETRAIN_STEPS steps
# by the benchmark on the 15 scans outside the test split), $STEPS fine-tuning steps, seeds 0-2, one
# torch thread, one process after the other; then one report over both in $DOCS. Every step is
# resumable: rerun the script to finish it. Finished cells' records (no weights) are kept in $KEEP,
# committed as they come, and copied back into $RUNS at the start, so a fresh machine goes on where the
# last one stopped (`bash benchmarks/chaos_study.sh keep` only copies).
#
# Run from the repository root; writes $RUNS (runs/chaos/) and $DOCS (docs/results/chaos_t2/), e.g. the
# longer budget: STEPS=1200 RUNS=runs/chaos-1200 DOCS=docs/results/chaos_t2/steps-1200 bash benchmarks/chaos_study.sh
set -euo pipefail
DATA=${CHAOS:-../shared/data/CHAOS_T2}
PY=${PY:-.venv/bin/python}
R=${RUNS:-runs/chaos}
D=${DOCS:-docs/results/chaos_t2}
KEEP=${KEEP:-$D/cells}
STEPS=${STEPS:-600}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-1000}
source "$(dirname "$0")/lanes.sh"
if [ "${1:-}" = keep ]; then for m in scratch vectorpose; do keep_cells $R/$m $KEEP/$m; done; exit 0; fi
for m in scratch vectorpose; do restore_cells $KEEP/$m $R/$m; done
export OMP_NUM_THREADS=1
VP="$PY -m vectorpose"
STUDY=(--labelled 2,5 --seeds 3 --pretrain-steps $PRETRAIN_STEPS --finetune-steps $STEPS --val-every 50 --quiet)
[ -f "$DATA/dataset.json" ] || { echo "no CHAOS_T2 at $DATA (set CHAOS=...)" >&2; exit 1; }
mkdir -p $R

$VP benchmark "$DATA" --out $R/scratch --methods scratch "${STUDY[@]}" > $R/scratch.log 2>&1
$VP benchmark "$DATA" --out $R/vectorpose --methods vectorpose "${STUDY[@]}" > $R/vectorpose.log 2>&1

# one report over both methods: the finished cells and the pretraining run are reused as they are
for m in scratch vectorpose; do mkdir -p $R/all/cells/$m; cp -rn $R/$m/cells/$m/. $R/all/cells/$m/; done
NOTES=(); [ -f $D/notes.md ] && NOTES=(--notes $D/notes.md)
$VP benchmark "$DATA" --out $R/all --methods scratch,vectorpose --pretrained vectorpose=$R/vectorpose/pretrain/vectorpose \
  "${STUDY[@]}" "${NOTES[@]}"
mkdir -p $D
cp $R/all/report.md $R/all/results.json $R/all/*.png $D/
