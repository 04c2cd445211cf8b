#!/usr/bin/env bash
# The spatial-awareness probe of issue 12 (docs/results/probe/):
#  1. synthetic bodies: 24 cases (seed 0), vectorpose and genesis pretrained 800 steps each (seed 0,
#     default settings, one torch thread), probed with 32 crops per case and crop set;
#  2. Task04_Hippocampus: the pretraining runs of the 5 % ablation
#     (the first command of benchmarks/label_efficiency_hippocampus.sh; runs/bench-h/pretrain), probed
#     with the defaults;
#  3.-4. longer and wider probes of the synthetic bodies; 5. BTCV, when it is built (see below).
# Resumable: finished pretraining runs are kept. Run from the repository root.
set -euo pipefail
VP=${VP:-.venv/bin/vectorpose}
source "$(dirname "$0")/lanes.sh"
R=runs/synth
[ -d $R/data ] || $VP synth $R/data --cases 24 --seed 0
for m in vectorpose genesis; do pretrain_once $R/$m 800 $R/data --method $m --threads 1; done
$VP probe $R/vectorpose $R/data --out docs/results/probe/synthetic.json --compare $R/genesis --crops 32 --overwrite --quiet

H=runs/bench-h/pretrain
$VP probe $H/vectorpose ../shared/data/Task04_Hippocampus --out docs/results/probe/hippocampus.json \
  --compare $H/genesis --compare $H/vp --compare $H/bfr --overwrite --quiet

# 3. synthetic bodies, a longer vectorpose run (4000 steps), probed beside the two above
pretrain_once $R/vectorpose-4000 4000 $R/data
$VP probe $R/vectorpose-4000 $R/data --out docs/results/probe/synthetic-4000.json --compare $R/vectorpose --compare $R/genesis \
  --crops 32 --overwrite --quiet

# 4. the same three encoders with 128 crops per case (1536 crops per probe, 32 per orientation class instead of 8)
$VP probe $R/vectorpose-4000 $R/data --out docs/results/probe/synthetic-4000-128.json --compare $R/vectorpose --compare $R/genesis \
  --crops 128 --overwrite --quiet

# 5. BTCV (issue 15), when built: the vectorpose pretraining of benchmarks/btcv_study.sh (runs/btcv/pretrain/vectorpose,
#    run that script first) beside genesis, vp and bfr pretrained with the same settings (2000 steps on the images of
#    the paper's 21 training scans), probed with 64 crops per case; then with seeds 1-4 (other case splits, crops and
#    random baselines) and summarised over the five seeds.
B=${BTCV:-$HOME/.cache/vectorpose-data/BTCV}
if [ -f "$B/dataset.json" ]; then
  P=runs/btcv/pretrain
  for m in genesis vp bfr; do pretrain_once $P/$m 2000 "$B" --method $m --split paper_split --threads 1; done
  COMPARE=(--compare $P/genesis --compare $P/vp --compare $P/bfr)
  $VP probe $P/vectorpose "$B" --out docs/results/probe/btcv.json "${COMPARE[@]}" --crops 64 --overwrite --quiet
  S=docs/results/probe/btcv-seeds
  mkdir -p $S
  for seed in 1 2 3 4; do
    $VP probe $P/vectorpose "$B" --out $S/seed$seed.json "${COMPARE[@]}" --crops 64 --seed $seed --overwrite --quiet
  done
  ${PY:-.venv/bin/python} benchmarks/probe_seeds.py docs/results/probe/btcv.json $S/seed{1,2,3,4}.json > $S/README.md
fi
