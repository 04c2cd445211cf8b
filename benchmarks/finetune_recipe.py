"""The fine-tuning recipe, change by change, judged on the validation split (issue 14, item 1).

Each variant is the default recipe with some settings changed through the CLI; ``legacy`` is the
recipe before class-balanced sampling, foreground Dice, warm-up, nnU-Net augmentation and deep
supervision. Every run is ``vectorpose finetune DATA --label-fraction F --seed S --split-seed 0
--steps N`` plus the variant's flags, from scratch or, with ``--init RUN``, from a pretraining run (the
transfer variants need one: issue 14, item 2); the score is the run's best validation round (the
validation split, never the test split). ``--test VARIANT`` also evaluates that variant's runs on the
test split, for the final recipe only; a run keeps its final weights, and those are what the test scores.

    python benchmarks/finetune_recipe.py ../shared/data/Task04_Hippocampus --out runs/recipe \
        --fraction 0.05 --steps 300 --seeds 0,1,2 --variants legacy,default --report docs/results/hippocampus/recipe/fraction-0.05.md

Finished runs (with ``convergence.json``) are reused when the script is rerun; an interrupted one
continues from its last checkpoint, and its time adds up its sittings. A run whose folder is gone (a
fresh machine) but whose row, with the same command, is in the report's committed JSON is reused from
that row, so a study spread over sittings on fresh machines trains only what is missing. Runs one at a
time with the torch threads of ``--threads``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from vectorpose.benchmark.runner import earlier_sittings_s
from vectorpose.benchmark.stats import paired_difference

VARIANTS = {
    "default": [],
    "legacy": ["--foreground-sampling", "voxel", "--dice-background", "--warmup", "0", "--augmentation", "light",
               "--no-deep-supervision"],
    "no-deep-supervision": ["--no-deep-supervision"],
    "light-augmentation": ["--augmentation", "light"],
    "voxel-sampling": ["--foreground-sampling", "voxel"],
    "background-dice": ["--dice-background"],
    "no-warmup": ["--warmup", "0"],
    # nnU-Net's layout (two convolutions per level from full resolution on), thin at full resolution for the CPU
    "full-resolution": ["--backbone", "dynunet", "--channels", "8,16,32,64,128"],
    # nnU-Net's optimiser: SGD with Nesterov momentum 0.99 and a polynomial decay, at its learning rate and weight decay
    "nnunet-sgd": ["--optimizer", "sgd", "--schedule", "poly", "--lr", "0.01", "--weight-decay", "3e-5"],
    # the training step's forward pass in bfloat16 (autocast; AMX on recent Xeons)
    "bf16": ["--precision", "bf16"],
    # how a pretrained run (--init) is transferred: the decoder too, as the paper does; the transferred layers frozen
    # for the first tenth of a 1000-step run; or trained at a tenth of the learning rate
    "transfer-all": ["--transfer", "all"],
    "freeze-100": ["--freeze-steps", "100"],
    "pretrained-lr-0.1": ["--pretrained-lr-scale", "0.1"],
}
# both: nnU-Net's layout at the bf16 step's cost, for long all-labels runs
VARIANTS["full-resolution-bf16"] = VARIANTS["full-resolution"] + VARIANTS["bf16"]
TRANSFER_VARIANTS = ("transfer-all", "freeze-100", "pretrained-lr-0.1")


def vectorpose(args: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vectorpose", *args], check=True, env=env)
    return time.perf_counter() - t0


def run(data: str, out: Path, variant: str, fraction: float, seed: int, steps: int, val_every: int, threads: int,
        test: bool, init: str | None, kept: dict[str, dict]) -> dict:
    folder = out / f"{variant}-f{fraction:g}-s{seed}"
    command = ["finetune", data, "--out", str(folder), "--label-fraction", f"{fraction:g}", "--seed", str(seed), "--split-seed", "0",
               "--steps", str(steps), "--val-every", str(val_every), "--quiet", *(["--init", init] if init else []), *VARIANTS[variant]]
    row = kept.get("vectorpose " + shlex.join(command))
    if not folder.exists() and row is not None and (not test or "test_dice" in row):
        return row
    if not (folder / "convergence.json").is_file():
        again = ["--resume"] if (folder / "resume.pt").is_file() else ["--overwrite"] if folder.exists() else []
        wall = vectorpose(command + again, threads) + earlier_sittings_s(folder / "metrics.jsonl")
        (folder / "wall_time.json").write_text(json.dumps({"finetune_s": wall}), encoding="utf-8")
    verdict = json.loads((folder / "convergence.json").read_text(encoding="utf-8"))
    row = {"variant": variant, "fraction": fraction, "seed": seed, "steps": steps, "val_dice": verdict["best_dice"],
           "best_step": verdict["best_step"], "converged": verdict["converged"], "late_gain": verdict["late_gain"],
           "collapsed": verdict.get("collapsed", []),
           "finetune_s": json.loads((folder / "wall_time.json").read_text(encoding="utf-8"))["finetune_s"],
           "command": "vectorpose " + shlex.join(command)}
    if test:
        metrics = folder / "test_metrics.json"
        if not metrics.is_file():
            vectorpose(["evaluate", str(folder), data, "--out", str(metrics)], threads)
        summary = json.loads(metrics.read_text(encoding="utf-8"))
        row["test_dice"] = summary["mean_dice"]
        row["test_per_class"] = {k: v["dice"] for k, v in summary["per_class"].items()}
    return row


def report(rows: list[dict], args: argparse.Namespace) -> str:
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    lines = [f"# Fine-tuning recipe on the validation split: {args.fraction:.0%} of the training pool labelled", "",
             "Produced by", "", "```", "python benchmarks/finetune_recipe.py " + shlex.join(sys.argv[1:]), "```", "",
             f"on {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, Python {platform.python_version()}; this script runs one "
             f"run at a time with {args.threads} torch thread(s), but other jobs may share the machine, so times are upper bounds. "
             "Split seed 0; the score is each run's best validation round "
             "(mean Dice over the foreground classes and the validation cases); nothing here looked at the test split except the "
             "`test Dice` column, filled for the variants named by `--test` only, which scores the run's final weights. "
             + ("Every run starts from scratch." if args.init is None else f"Every run starts from the pretraining run `{args.init}`."), "",
             "| variant | flags | seeds | validation Dice (mean ± std) | paired difference to `default` (95 % interval) | converged | time per run |",
             "|---|---|---|---|---|---|---|"]
    by = {(r["variant"], r["seed"]): r for r in rows}
    for v in variants:
        mine = [r for r in rows if r["variant"] == v]
        dice = np.array([r["val_dice"] for r in mine])
        paired = paired_difference({r["seed"]: r["val_dice"] for r in mine},
                                   {s: r["val_dice"] for (u, s), r in by.items() if u == "default"})
        diff = ""
        if v != "default" and paired is not None:
            d = paired.summary
            interval = "" if d.ci_low is None else f" [{d.ci_low:+.3f}, {d.ci_high:+.3f}]"
            diff = f"{d.mean:+.3f}{interval} ({paired.positive} of {d.n} above)"
        std = f" ± {dice.std(ddof=1):.3f}" if len(dice) > 1 else ""
        converged = f"{sum(r['converged'] is True for r in mine)} of {len(mine)}"
        minutes = np.mean([r["finetune_s"] for r in mine]) / 60
        lines.append(f"| {v} | `{' '.join(VARIANTS[v]) or '(defaults)'}` | {len(mine)} | {dice.mean():.3f}{std} | {diff} | {converged} | "
                     f"{minutes:.1f} min |")
    lines += ["", "Every run:", "", "| variant | seed | steps | validation Dice | best step | converged | collapsed classes | test Dice |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gain = "n/a" if r["converged"] is None else ("yes" if r["converged"] else f"no (+{r['late_gain']:.3f})")
        test = f"{r['test_dice']:.3f}" if "test_dice" in r else ""
        lines.append(f"| {r['variant']} | {r['seed']} | {r['steps']} | {r['val_dice']:.3f} | {r['best_step']} | {gain} | "
                     f"{', '.join(r['collapsed']) or 'none'} | {test} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fraction", type=float, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--val-every", type=int, default=100)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--variants", default="legacy,default")
    parser.add_argument("--test", default="", help="comma-separated variants whose runs are also scored on the test split")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--init", help="a pretraining run every variant starts from (finetune --init)")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    if args.init is None and (needs := [v for v in variants if v in TRANSFER_VARIANTS]):
        parser.error(f"variants {needs} change how pretrained weights are transferred: give --init")
    try:  # the rows of an earlier sitting, by command
        kept = {r["command"]: r for r in json.loads(args.report.with_suffix(".json").read_text(encoding="utf-8"))}
    except FileNotFoundError:
        kept = {}
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for v in variants:
            rows.append(run(args.data, args.out, v, args.fraction, seed, args.steps, args.val_every, args.threads, v in args.test.split(","),
                            args.init, kept))
            args.report.parent.mkdir(parents=True, exist_ok=True)
            args.report.write_text(report(rows, args), encoding="utf-8")
            args.report.with_suffix(".json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print(args.report.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
