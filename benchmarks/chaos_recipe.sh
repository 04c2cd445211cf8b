#!/usr/bin/env bash
# Few labelled body scans (issue 16): CHAOS T2, 2 labelled scans, seeds 0-2, fine-tuned from scratch with
# the recipe before (commit b0d9532) and after the class-balanced / foreground-Dice / warm-up / nnU-Net
# augmentation / deep supervision / left-right rule changes, 400 steps, patch 128x128x32, batch 2, one
# torch thread; then the budget of tests/training/test_body_few_labels.py (200 steps of 96x96x32 at
# 2.5 x 2.5 x 7.7 mm, seed 0) with the default recipe and with the earlier recipe's flags on today's
# code (which no longer mirrors left-right here: the labels name a left and a right kidney). Every run
# is scored on its split's 4 test scans. Resumable: finished runs are kept. Run from the repository root; writes
# runs/chaos-{before,after,ci}/ and docs/results/chaos_t2/recipe.md.
set -euo pipefail
D=${CHAOS:-../shared/data/CHAOS_T2}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1
[ -d runs/b0d9532 ] || git worktree add --detach runs/b0d9532 b0d9532
run() {  # run SRC OUT ARGS...: fine-tune with the code in SRC, then evaluate on the test split
  local src=$1 out=$2; shift 2
  [ -f $out/convergence.json ] || PYTHONPATH=$src $PY -m vectorpose finetune $D --out $out --labeled 2 --batch 2 --quiet --overwrite "$@"
  [ -f $out-test.json ] || PYTHONPATH=$src $PY -m vectorpose evaluate $out $D --out $out-test.json
}
for s in 0 1 2; do
  run runs/b0d9532/src runs/chaos-before/s$s --steps 400 --patch 128,128,32 --seed $s
  run src runs/chaos-after/s$s --steps 400 --patch 128,128,32 --seed $s
done
LEGACY="--foreground-sampling voxel --dice-background --warmup 0 --augmentation light --no-deep-supervision"
run src runs/chaos-ci/default-s0 --steps 200 --patch 96,96,32 --seed 0 --spacing 2.5,2.5,7.7 --val-every 50
run src runs/chaos-ci/legacy-s0 --steps 200 --patch 96,96,32 --seed 0 --spacing 2.5,2.5,7.7 --val-every 50 $LEGACY
$PY benchmarks/recipe_runs_report.py --title "CHAOS T2, two labelled scans: the fine-tuning recipe before and after" \
  --about "Made by \`bash benchmarks/chaos_recipe.sh\` (the commands are in it), one torch thread per run, beside other jobs \
(times are upper bounds). CHAOS MR T2-SPIR as in \`../shared/data/CHAOS_T2\` (19 scans, 1.25 × 1.25 × 7.7 mm); split seed 0: \
4 test scans, 2 validation scans, 2 labelled training scans drawn by each seed from the other 13. Test Dice per organ on the \
4 test scans (\`vectorpose evaluate\`, native grid)." \
  "before (b0d9532)=runs/chaos-before" "after=runs/chaos-after@s" \
  "after, CI budget=runs/chaos-ci@default" "earlier flags, CI budget=runs/chaos-ci@legacy" > docs/results/chaos_t2/recipe.md
