#!/usr/bin/env bash
# BTCV abdominal CT, the paper's main task (issues 15 and 16), at the CPU plan.
#
# The paper's split (dataset.json "paper_split": 21 training scans, 9 test scans); 3 of the 21 are the
# validation split, so at most 18 are labelled. Spacing, CT window, patch and batch are the defaults,
# planned for this CPU (`vectorpose plan $BTCV --split paper_split` prints them). Scratch and VectorPOSE
# (pretrained 2000 steps on the images of the 21 training scans) at 2 and 5 labelled scans, seeds 0-2,
# 500 fine-tuning steps; beside them, at 5 labelled scans, the fine-tuning recipe before issue 16 (its
# flags, same plan). The two label counts run as two processes with one torch thread each, and are
# joined into one report at the end. Every step is resumable: rerun the script to finish it.
#
# BTCV is built first (not redistributable; keep it outside the repository):
#   VLA=<VLAlignSeg- git dir> DGP=<DGPANet git dir> .venv/bin/python ../shared/tools/make_btcv.py ~/.cache/vectorpose-data/BTCV
# This copy's images were stored as 8-bit slices windowed to [-125, 275] HU: values outside are clipped.
#
# Run from the repository root; writes runs/btcv/ and docs/results/btcv/.
set -euo pipefail
B=${BTCV:-$HOME/.cache/vectorpose-data/BTCV}
PY=${PY:-.venv/bin/python}
R=${RUNS:-runs/btcv}
[ -f "$B/dataset.json" ] || { echo "no BTCV at $B (set BTCV=...): build it with ../shared/tools/make_btcv.py" >&2; exit 1; }
export OMP_NUM_THREADS=1
VP="$PY -m vectorpose"
PRE=$R/pretrain/vectorpose
STUDY=(--split paper_split --methods scratch,vectorpose --seeds 3 --pretrain-steps 2000 --finetune-steps 500 --val-every 100
       --pretrained vectorpose=$PRE --quiet)

if ! grep -qs '"step": 2000' $PRE/model.json; then
  [ -f $PRE/resume.pt ] && again=--resume || again=--overwrite
  $VP pretrain "$B" --out $PRE --split paper_split --steps 2000 --quiet $again
fi

$VP benchmark "$B" --out $R/n2 --labelled 2 "${STUDY[@]}" > $R/n2.log 2>&1 &
$VP benchmark "$B" --out $R/n5 --labelled 5 "${STUDY[@]}" > $R/n5.log 2>&1 &
wait

# the recipe before issue 16, with the benchmark's spacing and CT window
read -r SPACING WINDOW < <($PY -c "import json; r = json.load(open('$R/n5/benchmark.json'))['recipe']['pretraining']; print(r['spacing'], r['ct_window'])")
LEGACY=(--foreground-sampling voxel --dice-background --warmup 0 --augmentation light --no-deep-supervision)
for s in 0 1 2; do
  out=$R/before/n5-s$s
  [ -f $out/convergence.json ] || $VP finetune "$B" --out $out --split paper_split --labeled 5 --seed $s --steps 500 --val-every 100 \
    --spacing "$SPACING" --ct-window "$WINDOW" "${LEGACY[@]}" --quiet --overwrite
  [ -f $out-test.json ] || $VP evaluate $out "$B" --out $out-test.json
done

# one report over both label counts: the finished cells are reused as they are
mkdir -p $R/all/cells
for n in 2 5; do
  for m in scratch vectorpose; do mkdir -p $R/all/cells/$m; cp -rn $R/n$n/cells/$m/. $R/all/cells/$m/; done
done
$VP benchmark "$B" --out $R/all --labelled 2,5 "${STUDY[@]}" --notes docs/results/btcv/notes.md
mkdir -p docs/results/btcv
cp $R/all/report.md $R/all/results.json $R/all/*.png docs/results/btcv/
for s in 0 1 2; do  # the report reads <run>/ and <run>-test.json
  ln -sfn ../n5/cells/scratch/n5-s$s $R/before/after-n5-s$s
  cp $R/n5/cells/scratch/n5-s$s/test_metrics.json $R/before/after-n5-s$s-test.json
done
$PY benchmarks/recipe_runs_report.py --title "BTCV, 5 labelled scans: the fine-tuning recipe before issue 16 and today's" \
  --about "Made by \`bash benchmarks/btcv_study.sh\`. From scratch, 500 steps, seeds 0-2, at the CPU plan and CT window of the \
benchmark in \`report.md\`; \`before\` adds --foreground-sampling voxel --dice-background --warmup 0 --augmentation light \
--no-deep-supervision; \`today\` is the benchmark's scratch cells. Test Dice on the 9 test scans of the paper's split." \
  "before=$R/before@n5" "today=$R/before@after" > docs/results/btcv/recipe.md
