#!/usr/bin/env bash
# BTCV abdominal CT, the paper's main task (issues 15 and 16), at the CPU plan.
#
# The paper's split (dataset.json "paper_split": 21 training scans, 9 test scans); 3 of the 21 are the
# validation split, so at most 18 are labelled. Spacing, CT window, patch and batch are the defaults,
# planned for this CPU (`vectorpose plan $BTCV --split paper_split` prints them). The methods of $METHODS
# (default scratch,vectorpose; each pretraining one pretrained 2000 steps on the images of the 21 training
# scans, in $RUNS/pretrain/<method>) at $LABELLED labelled scans (default 5 then 2), seeds 0-2,
# $FINETUNE_STEPS fine-tuning steps (default 1000) validated every $VAL_EVERY steps (default 100), with the
# settings file $CONFIG if set (e.g. benchmarks/configs/finetune-bf16.json). The pretraining runs, then
# every cell (one `benchmark --shard` process of its method's benchmark, one torch thread), are taken as
# many at once as the machine has cores; a cell starts once its method is pretrained; the methods are
# joined into one report in $DOCS at the end.
# Beside them, at the first count, the fine-tuning recipe before issue 16 (its flags, same plan) for seeds
# $BEFORE_SEEDS (none when empty). Every step is resumable: rerun the script to finish it. Finished cells'
# records (no weights) are kept in $KEEP, committed as they come, and copied back into $RUNS at the start,
# so a fresh machine goes on where the last one stopped (`bash benchmarks/btcv_study.sh keep` only copies, and
# records the SHA-256 of each finished pretraining run in $KEEP/pretraining.sha256: pretraining is rerun on each
# fresh machine, and two lines for one method would say that two machines pretrained it to different weights).
# The cells of docs/results/btcv/steps-2000/ were kept from its results.json (benchmarks/cells_from_results.py):
# KEEP=docs/results/btcv/steps-2000/cells LABELLED=5,2 FINETUNE_STEPS=2000 METHODS=scratch,vectorpose,... adds methods
# beside them (their vectorpose cells name runs/btcv/pretrain/vectorpose, the default RUNS, as their initialisation).
#
# BTCV is built first (not redistributable; keep it outside the repository):
#   VLA=<VLAlignSeg- git dir> DGP=<DGPANet git dir> .venv/bin/python ../shared/tools/make_btcv.py ~/.cache/vectorpose-data/BTCV
# This copy's images were stored as 8-bit slices windowed to [-125, 275] HU: values outside are clipped.
#
# Run from the repository root; writes $RUNS (runs/btcv/) and $DOCS (docs/results/btcv/), e.g. one count on
# its own: LABELLED=2 BEFORE_SEEDS= DOCS=docs/results/btcv/n2 bash benchmarks/btcv_study.sh
set -euo pipefail
B=${BTCV:-$HOME/.cache/vectorpose-data/BTCV}
PY=${PY:-.venv/bin/python}
R=${RUNS:-runs/btcv}
D=${DOCS:-docs/results/btcv}
KEEP=${KEEP:-$D/cells}
[ -f "$B/dataset.json" ] || { echo "no BTCV at $B (set BTCV=...): build it with ../shared/tools/make_btcv.py" >&2; exit 1; }
source "$(dirname "$0")/lanes.sh"
export OMP_NUM_THREADS=1
VP="$PY -m vectorpose"
METHODS=${METHODS:-scratch,vectorpose}
ALL=(${METHODS//,/ })
if [ "${1:-}" = keep ]; then
  for m in "${ALL[@]}"; do keep_cells $R/$m $KEEP/$m; done
  keep_digests $R/pretrain 2000 $KEEP/pretraining.sha256
  exit 0
fi
for m in "${ALL[@]}"; do restore_cells $KEEP/$m $R/$m; done
LABELLED=${LABELLED:-5,2}
STEPS=${FINETUNE_STEPS:-1000}
VAL_EVERY=${VAL_EVERY:-100}
BEFORE_SEEDS=${BEFORE_SEEDS-0 1 2}  # set but empty: none
[ -z "${BEFORE_SEEDS// }" ] || [[ ",$METHODS," == *,scratch,* ]] || { echo "BEFORE_SEEDS compares with scratch: add it to METHODS" >&2; exit 1; }
FIRST=${LABELLED%%,*}
# whether an evaluation file exists and follows today's metric conventions (the benchmark re-scores its own cells)
scored_now() { $PY -c "import json, sys; from vectorpose.inference.metrics import METRICS_VERSION as V
sys.exit(json.load(open(sys.argv[1])).get('metrics_version') != V)" "$1" 2>/dev/null; }
STUDY=(--split paper_split --labelled $LABELLED --seeds 3 --pretrain-steps 2000 --finetune-steps $STEPS --val-every $VAL_EVERY --quiet)
if [ -n "${CONFIG:-}" ]; then
  [ -z "${BEFORE_SEEDS// }" ] || { echo "the recipe before issue 16 is run without CONFIG: set BEFORE_SEEDS= with CONFIG" >&2; exit 1; }
  STUDY+=(--config "$CONFIG")
fi
PRETRAINS=(); for m in "${ALL[@]}"; do [ $m = scratch ] || PRETRAINS+=($m); done
CELLS=$(cell_count "$LABELLED" 3)  # cells per method

pretrained() { [ $1 = scratch ] || echo --pretrained $1=$R/pretrain/$1; }
study_job() {  # pretrain METHOD, or cell METHOD K: the K-th cell of METHOD's benchmark, once METHOD is pretrained
  if [ $1 = pretrain ]; then pretrain_once $R/pretrain/$2 2000 "$B" --method $2 --split paper_split; return; fi
  until [ $2 = scratch ] || finished_at $R/pretrain/$2 2000; do
    [ ! -e $R/claims/.failed ] || { echo "the pretraining of $2 failed" >&2; return 1; }
    sleep 30
  done
  $VP benchmark "$B" --out $R/$2 --methods $2 $(pretrained $2) "${STUDY[@]}" --shard $3/$CELLS
}
JOBS=("${PRETRAINS[@]/#/pretrain:}")
for ((k = 0; k < CELLS; k++)); do for m in "${ALL[@]}"; do JOBS+=(cell:$m:$k); done; done
run_lanes $R/claims $R/logs study_job "${JOBS[@]}"

# the recipe before issue 16, with the benchmark's spacing and CT window, one process per seed
read -r SPACING WINDOW < <($PY -c "import json; r = json.load(open('$R/${ALL[0]}/benchmark.json'))['recipe']['pretraining']; print(r['spacing'], r['ct_window'])")
LEGACY=(--foreground-sampling voxel --dice-background --warmup 0 --augmentation light --no-deep-supervision)
for s in $BEFORE_SEEDS; do
  out=$R/before/n$FIRST-s$s
  { [ -f $out/convergence.json ] || $VP finetune "$B" --out $out --split paper_split --labeled $FIRST --seed $s --steps $STEPS \
      --val-every $VAL_EVERY --spacing "$SPACING" --ct-window "$WINDOW" "${LEGACY[@]}" --quiet --overwrite
    scored_now $out-test.json || $VP evaluate $out "$B" --out $out-test.json --overwrite; } > $R/before-s$s.log 2>&1 &
done
wait

# one report over all methods: the finished cells are reused as they are
PRETRAINED=()
for m in "${ALL[@]}"; do
  PRETRAINED+=($(pretrained $m))
  mkdir -p $R/all/cells/$m; cp -rn $R/$m/cells/$m/. $R/all/cells/$m/
done
NOTES=(); [ -f $D/notes.md ] && NOTES=(--notes $D/notes.md)
$VP benchmark "$B" --out $R/all --methods $METHODS "${PRETRAINED[@]}" "${STUDY[@]}" "${NOTES[@]}"
mkdir -p $D
cp $R/all/report.md $R/all/results.json $R/all/*.png $D/
[ -n "${BEFORE_SEEDS// }" ] || exit 0
for s in $BEFORE_SEEDS; do  # the report reads <run>/ and <run>-test.json
  ln -sfn ../all/cells/scratch/n$FIRST-s$s $R/before/today-n$FIRST-s$s
  cp $R/all/cells/scratch/n$FIRST-s$s/test_metrics.json $R/before/today-n$FIRST-s$s-test.json
done
$PY benchmarks/recipe_runs_report.py --title "BTCV, $FIRST labelled scans: the fine-tuning recipe before issue 16 and today's" \
  --about "Made by \`bash benchmarks/btcv_study.sh\` (LABELLED=$LABELLED, BEFORE_SEEDS=$BEFORE_SEEDS, FINETUNE_STEPS=$STEPS). From scratch, $STEPS steps, \
at the CPU plan and CT window of the benchmark in \`report.md\`; \`before\` adds --foreground-sampling voxel --dice-background \
--warmup 0 --augmentation light --no-deep-supervision; \`today\` is the benchmark's scratch cells of the same seeds. Test Dice on the \
9 test scans of the paper's split." \
  "before=$R/before@n$FIRST" "today=$R/before@today" > $D/recipe.md
