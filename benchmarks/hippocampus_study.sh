#!/usr/bin/env bash
# Issue 14's label-efficiency study on Task04_Hippocampus: converged cells and 10 seeds, at the default
# recipe and plan, planned for this CPU across several sittings.
#
#   main       scratch, genesis, mae, vectorpose at 5 % and 10 % labels, $SEEDS seeds (default 10),
#              $FEW_STEPS fine-tuning steps per cell                          -> $DOCS/
#   ablation   vp and bfr (the halves of VectorPOSE) at 5 %, the same seeds, beside the main run's
#              scratch and vectorpose cells at 5 %                             -> $DOCS/ablation-5pct/
#   all labels scratch, genesis, mae, vectorpose at 100 %, seeds 0-2, $FULL_STEPS steps -> $DOCS/all-labels/,
#              and each method's three seeds as one ensemble -> $DOCS/all-labels/ensemble-<method>.json
#
# The budgets are where scratch converged by the run's own rule on seed 0 (validation split only):
# 1000 steps at 5 % and 10 % (docs/results/hippocampus/recipe/fraction-0.05-steps-1000.md, -0.1-),
# 3000 at 100 % (fraction-1-steps-3000.md; 1500 converged too, but 3000 scored higher).
# Every pretraining method is pretrained once, $PRETRAIN_STEPS steps (default 2000), in
# $RUNS/pretrain/<method>, and shared by all three parts. Pretraining never reads the images of the
# cells' test split: `pretrain` holds out split seed 0's 20 % of the labelled cases, as the cells do.
# The recipe is the `finetune` defaults of the study's time, fixed by benchmarks/configs/hippocampus-study.json:
# model.* holds the best validation round's weights (--keep best), so that later defaults leave its cells valid.
# Each cell is one `benchmark --shard` process of its (part, method) with one torch thread; as many run at
# once as the machine has cores, each taking the next unclaimed one in the order above ($WORKERS DataLoader
# workers each, default 0: on a GPU machine 1 lets a cell's augmentation overlap its steps). A GPU plans a
# larger automatic batch than the CPU (8 patches against 4 here), so its cells are another plan: give such a
# machine its own RUNS and DOCS (the benchmark refuses to report cells of two plans together).
# Everything is resumable (a cut-off cell continues from its last checkpoint): rerun the script to go on;
# the reports are written once every cell of a part is done.
# Finished cells' records (no weights) are kept in $KEEP, committed as they come, and copied back into
# $RUNS at the start, so a fresh machine goes on where the last one stopped. Pretraining is rerun there;
# $KEEP/pretraining.sha256 records the weights each machine got, so that a difference would show.
#
#   bash benchmarks/hippocampus_study.sh                       # writes runs/hippocampus/, docs/results/hippocampus/converged/
#   PARTS=main METHODS=scratch,vectorpose bash benchmarks/hippocampus_study.sh   # a subset
#   bash benchmarks/hippocampus_study.sh keep                  # only copy the finished cells into $KEEP
set -euo pipefail
DATA=${HIPPOCAMPUS:-../shared/data/Task04_Hippocampus}
PY=${PY:-.venv/bin/python}
R=${RUNS:-runs/hippocampus}
D=${DOCS:-docs/results/hippocampus/converged}
KEEP=${KEEP:-$D/cells}
SEEDS=${SEEDS:-10}
FEW_STEPS=${FEW_STEPS:-1000}
FULL_STEPS=${FULL_STEPS:-3000}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-2000}
PARTS=${PARTS:-main,ablation,all-labels}
METHODS=${METHODS:-scratch,genesis,mae,vectorpose,vp,bfr}
[ -f "$DATA/dataset.json" ] || { echo "no Task04_Hippocampus at $DATA (set HIPPOCAMPUS=...)" >&2; exit 1; }
source "$(dirname "$0")/lanes.sh"
if [ "${1:-}" = keep ]; then
  keep_cells $R $KEEP
  keep_digests $R/pretrain $PRETRAIN_STEPS $KEEP/pretraining.sha256
  exit 0
fi
restore_cells $KEEP $R
export OMP_NUM_THREADS=1
VP="$PY -m vectorpose"
COMMON=(--val-every 100 --workers ${WORKERS:-0} --quiet)  # DataLoader workers per cell: placement, not recipe
wanted() { [[ ",$2," == *,$1,* ]]; }

# part name, methods, fractions, seeds, steps
declare -A P_METHODS=([main]=scratch,genesis,mae,vectorpose [ablation]=vp,bfr [all-labels]=scratch,genesis,mae,vectorpose)
declare -A P_FRACTIONS=([main]=0.05,0.1 [ablation]=0.05 [all-labels]=1.0)
declare -A P_SEEDS=([main]=$SEEDS [ablation]=$SEEDS [all-labels]=3)
declare -A P_STEPS=([main]=$FEW_STEPS [ablation]=$FEW_STEPS [all-labels]=$FULL_STEPS)

study() {  # the benchmark arguments of a part
  echo --fractions ${P_FRACTIONS[$1]} --seeds ${P_SEEDS[$1]} --pretrain-steps $PRETRAIN_STEPS --finetune-steps ${P_STEPS[$1]} \
    --config "$(dirname "$0")/configs/hippocampus-study.json" "${COMMON[@]}"
}
part_cells() { cell_count ${P_FRACTIONS[$1]} ${P_SEEDS[$1]}; }  # cells per method of a part
pretrained() { [ $1 = scratch ] || echo --pretrained $1=$R/pretrain/$1; }
cells() { $VP benchmark "$DATA" --out $R/$1/$2 --methods $2 $(pretrained $2) $(study $1) --shard $3/$(part_cells $1); }

# the jobs, in order: every pretraining run first, then every cell of every (part, method)
JOBS=(); PRE=()
for part in main ablation all-labels; do
  wanted $part "$PARTS" || continue
  for m in ${P_METHODS[$part]//,/ }; do
    wanted $m "$METHODS" || continue
    for ((k = 0; k < $(part_cells $part); k++)); do JOBS+=("$part:$m:$k"); done
    [ $m = scratch ] || [[ " ${PRE[*]} " == *" $m "* ]] || PRE+=($m)
  done
done
pretrain_job() { pretrain_once $R/pretrain/$2 $PRETRAIN_STEPS "$DATA" --method $2; }
run_lanes $R/claims $R/logs pretrain_job "${PRE[@]/#/pretrain:}"
run_lanes $R/claims $R/logs cells "${JOBS[@]}"

# the reports: finished cells are copied into one folder per report and reused as they are
report() {  # report PART_FOLDER DOCS_FOLDER PART_OF_SETTINGS NOTES METHOD=SOURCE_PART...
  local out=$R/$1 docs=$2 settings=$3 notes=$4 methods=() pre=(); shift 4
  for pair in "$@"; do
    local m=${pair%%=*} src=${pair#*=}
    [ -f $R/$src/$m/results.json ] || { echo "not writing $docs: $src/$m is not finished" >&2; return 0; }
    mkdir -p $out/cells/$m
    for f in ${P_FRACTIONS[$settings]//,/ }; do cp -rn $R/$src/$m/cells/$m/f$(printf %g $f)-s* $out/cells/$m/; done
    methods+=($m); pre+=($(pretrained $m))
  done
  local NOTES=(); [ -f $notes ] && NOTES=(--notes $notes)
  $VP benchmark "$DATA" --out $out --methods $(IFS=,; echo "${methods[*]}") "${pre[@]}" $(study $settings) "${NOTES[@]}"
  mkdir -p $docs; cp $out/report.md $out/results.json $out/*.png $docs/
}
if wanted main "$PARTS"; then report report-main $D main $D/notes.md scratch=main genesis=main mae=main vectorpose=main; fi
if wanted ablation "$PARTS"; then
  report report-ablation $D/ablation-5pct ablation $D/ablation-5pct/notes.md scratch=main vp=ablation bfr=ablation vectorpose=main
fi
# a method's all-labels seeds as one model (mean softmax, `vectorpose evaluate MODEL... DATA`), which needs
# their weights: it is scored on the machine that trained them (records kept elsewhere carry none)
ensemble() {
  local m=$1 out=$D/all-labels/ensemble-$1.json cells=() c
  [ -f $out ] && return 0
  for c in $R/all-labels/$m/cells/$m/f1-s{0,1,2}; do
    [ -f $c/model.safetensors ] || { echo "not scoring the $m ensemble: no weights in $c on this machine" >&2; return 0; }
    cells+=($c)
  done
  mkdir -p $D/all-labels
  $VP evaluate "${cells[@]}" "$DATA" --out $out
}
if wanted all-labels "$PARTS"; then
  report report-all-labels $D/all-labels all-labels $D/all-labels/notes.md \
    scratch=all-labels genesis=all-labels mae=all-labels vectorpose=all-labels
  for m in ${P_METHODS[all-labels]//,/ }; do if wanted $m "$METHODS"; then ensemble $m; fi; done
fi
