#!/usr/bin/env bash
# Issue 16's budget question on BTCV: does a seed that lost an organ at the study's 1000 steps learn it
# with more steps? Scratch, 5 labelled scans, one run per SEED:STEPS pair in $CELLS (default "1:1000
# 1:2000": seed 1 loses the left kidney in benchmarks/btcv_study.sh), everything else as the study's
# cells (the CPU plan's spacing and CT window from its benchmark.json, validation every 100 steps, one
# torch thread). Prints each run's per-organ validation curve, then its test scores
# (reported beside the study's cells; no setting is chosen from them). Resumable: finished runs are kept,
# a run cut off after a checkpoint goes on from it.
# SPACING=X,Y,Z and WINDOW=LO,HI give the plan directly, on a machine without the study's runs.
#
#   BTCV=... CELLS="1:1000 1:2000 0:2000 2:2000" bash benchmarks/btcv_budget.sh > docs/results/btcv/budget.md
set -euo pipefail
B=${BTCV:-$HOME/.cache/vectorpose-data/BTCV}
PY=${PY:-.venv/bin/python}
R=${RUNS:-runs/btcv}
CELLS=${CELLS:-1:1000 1:2000}
CORES=$(nproc --all)
export OMP_NUM_THREADS=1
MADE_BY="CELLS=\"$CELLS\""
if [ -n "${SPACING:-}" ] && [ -n "${WINDOW:-}" ]; then
  MADE_BY="SPACING=$SPACING WINDOW=$WINDOW $MADE_BY"
else
  [ -f $R/scratch/benchmark.json ] || { echo "run benchmarks/btcv_study.sh first, or set SPACING and WINDOW: the plan is read from $R/scratch/benchmark.json" >&2; exit 1; }
  read -r SPACING WINDOW < <($PY -c "import json; r = json.load(open('$R/scratch/benchmark.json'))['recipe']['pretraining']; print(r['spacing'], r['ct_window'])")
fi
for cell in $CELLS; do
  seed=${cell%%:*} steps=${cell##*:}; out=$R/budget/n5-s$seed-$steps
  again=--overwrite; [ ! -f $out/resume.pt ] || again=--resume
  [ -f $out/convergence.json ] || $PY -m vectorpose finetune "$B" --out $out --split paper_split --labeled 5 --seed $seed --steps $steps \
    --val-every 100 --spacing "$SPACING" --ct-window "$WINDOW" --quiet $again >&2
  [ -f $out-test.json ] || $PY -m vectorpose evaluate $out "$B" --out $out-test.json >&2
done
echo "# BTCV, scratch, 5 labelled scans: fine-tuning budgets (seed:steps $CELLS)"
echo
echo "Made by \`BTCV=... $MADE_BY bash benchmarks/btcv_budget.sh\` at the study's plan ($SPACING mm, CT window $WINDOW), \
on $(uname -m) with $CORES CPU cores, one torch thread per run, beside other jobs. The learning rate warms up, then decays \
to 0 at each run's last step (cosine). Validation Dice (SABS 02, 10 and 11) at every 200 steps, then the test scores of \
the weights each run kept (\`finetune --keep\`; the step is in its \`model.json\`)."
echo
for cell in $CELLS; do
  out=$R/budget/n5-s${cell%%:*}-${cell##*:}
  $PY benchmarks/class_curves.py $out --every 200
  $PY -c "
import json, sys
m = json.load(open(sys.argv[1]))
print(f\"Test split ({m['num_cases']} scans, metrics version {m['metrics_version']}): mean Dice {m['mean_dice']:.3f}\n\")
print('| ' + ' | '.join(m['per_class']) + ' |'); print('|---:' * len(m['per_class']) + '|')
print('| ' + ' | '.join('n/a' if c['dice'] is None else f\"{c['dice']:.3f}\" for c in m['per_class'].values()) + ' |')
print()
" $out-test.json
done
