#!/usr/bin/env bash
# BTCV at the default plan on this machine (issue 15): the seconds of a fine-tuning step (median over
# the 10-step windows from step 20 of a 60-step run, from metrics.jsonl, leaving out those holding a validation round), the seconds a
# validation round adds, and the wall time of `vectorpose predict` on the largest scan (257 x 257 x 199
# voxels; native grid in and out, test-time mirroring on, process start-up included) with farm-bench.
# Torch uses every core (the default). Run from the repository root on a quiet machine; BTCV as in
# benchmarks/btcv_study.sh.
set -euo pipefail
B=${BTCV:-$HOME/.cache/vectorpose-data/BTCV}
PY=${PY:-.venv/bin/python}
R=${RUNS:-runs/btcv-speed}
$PY -m vectorpose finetune "$B" --out $R/ft --split paper_split --labeled 2 --steps 60 --val-every 30 --log-every 10 --overwrite --quiet
$PY - "$R/ft" <<'PYEOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
plan = json.loads((run / "plan.json").read_text())
# a validation round runs after its step's row is written: it lands in the next window, which is left out
per_step = sorted((b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"]) for a, b in zip(rows, rows[1:])
                  if a["step"] >= 20 and "val/dice" not in a)
step = per_step[len(per_step) // 2]
after_val = [(b["elapsed_s"] - a["elapsed_s"]) - 10 * step for a, b in zip(rows, rows[1:]) if "val/dice" in a and b["step"] == a["step"] + 10]
print(f"plan: spacing {plan['spacing']}, patch {plan['patch_size']}, batch {plan['batch_size']}")
print(f"fine-tuning step: {step:.2f} s (median of {len(per_step)} windows of 10 steps)")
print(f"validation round (3 scans): {after_val[0]:.1f} s")
PYEOF
farm-bench -n 3 --warmup 1 --timeout 900 -- $PY -m vectorpose predict $R/ft "$B/imagesTr/btcv_sabs02.nii.gz" $R/pred.nii.gz --overwrite
