"""Fine-tuning on Task04_Hippocampus: all training cases from scratch, then few labels from scratch
and from a VectorPOSE pretraining run, several seeds each. Every run goes through the CLI.

    python benchmarks/finetune_hippocampus.py ../shared/data/Task04_Hippocampus \
        --pretrained runs/h --out runs/ft --full-steps 2000 --few-steps 500 --fractions 0.05,0.1 --seeds 0,1,2

Writes ``docs/finetuning_hippocampus.md`` (every run's test-split Dice, HD95, validation Dice and
wall time, the means per setting, the commands and the machine) and ``results.json`` in ``--out``.
Hyperparameters were not tuned on the test split: the recipe is the fine-tuning command's default.
Finished runs (with ``metrics.json``) are reused when the script is rerun.
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


THREADS: dict[str, str] = {}


def sh(cmd: list[str]) -> float:
    exe = Path(sys.executable).with_name("vectorpose")
    t0 = time.perf_counter()
    subprocess.run([str(exe), *cmd], check=True, env={**os.environ, **THREADS})
    return time.perf_counter() - t0


def run_cell(data: str, out: Path, steps: int, fraction: float, seed: int, init: str | None, extra: list[str]) -> dict:
    metrics = out / "metrics.json"
    timing = out / "wall_time.json"
    train = ["finetune", data, "--out", str(out), "--label-fraction", str(fraction), "--seed", str(seed), "--split-seed", "0",
             "--steps", str(steps), "--quiet", *extra] + (["--init", init] if init else [])
    evaluate = ["evaluate", str(out), data, "--out", str(metrics)]
    if not metrics.is_file():
        if out.exists():
            train.append("--overwrite")
        wall = sh(train)
        timing.write_text(json.dumps({"finetune_s": wall}))
        sh(evaluate)
    result = json.loads(metrics.read_text(encoding="utf-8"))
    model_meta = json.loads((out / "model.json").read_text(encoding="utf-8"))
    split = json.loads((out / "split.json").read_text(encoding="utf-8"))
    transfer = extra[extra.index("--transfer") + 1] if "--transfer" in extra else "encoder"
    return {
        "init": ("vectorpose" if transfer == "encoder" else f"vectorpose ({transfer})") if init else "scratch", "fraction": fraction, "seed": seed, "labelled": len(split["labelled"]),
        "steps": steps, "test_dice": result["mean_dice"], "test_hd95": result["mean_hd95"],
        "per_class": {k: v["dice"] for k, v in result["per_class"].items()},
        "val_dice": model_meta.get("val_dice"), "best_step": model_meta["step"],
        "finetune_s": json.loads(timing.read_text(encoding="utf-8"))["finetune_s"],
        "command": "vectorpose " + " ".join(shlex.quote(c) for c in train if c not in ("--quiet", "--overwrite")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--pretrained", required=True, help="a VectorPOSE pretraining run folder")
    parser.add_argument("--out", default="runs/ft")
    parser.add_argument("--full-steps", type=int, default=2000)
    parser.add_argument("--few-steps", type=int, default=500)
    parser.add_argument("--fractions", default="0.05,0.1")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--docs", default="docs")
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time; with more than 1, each run uses one thread")
    parser.add_argument("--transfer-probe", action="store_true",
                        help="also fine-tune with --transfer all (seed 0 of each fraction) to compare on the validation split")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.jobs > 1:
        THREADS.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cells = [] if args.skip_full else [(out / "full-scratch-s0", args.full_steps, 1.0, 0, None, [])]
    fractions = [float(f) for f in args.fractions.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    for fraction in fractions:
        for seed in seeds:
            for init in (None, args.pretrained):
                name = f"f{fraction:g}-{'vectorpose' if init else 'scratch'}-s{seed}"
                cells.append((out / name, args.few_steps, fraction, seed, init, []))
        if args.transfer_probe:
            cells.append((out / f"f{fraction:g}-vectorpose-all-s{seeds[0]}", args.few_steps, fraction, seeds[0], args.pretrained, ["--transfer", "all"]))
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(lambda c: run_cell(args.data, *c), cells))
    (out / "results.json").write_text(json.dumps(rows, indent=2))

    pre_meta = json.loads((Path(args.pretrained) / "model.json").read_text(encoding="utf-8"))
    first = out / ("full-scratch-s0" if not args.skip_full else next(p.name for p in sorted(out.iterdir()) if (p / "split.json").is_file()))
    split = json.loads((first / "split.json").read_text(encoding="utf-8"))
    run_config = json.loads((first / "config.json").read_text(encoding="utf-8"))
    patch = "×".join(str(p) for p in run_config["patch_size"])
    recipe = run_config["finetune"]
    lines = [
        "| labelled | init | seed | steps | test Dice | anterior | posterior | test HD95 (mm) | val Dice | fine-tune time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pc = list(r["per_class"].values())
        lines.append(
            f"| {r['labelled']} ({r['fraction']:.0%}) | {r['init']} | {r['seed']} | {r['steps']} | **{r['test_dice']:.3f}** | {pc[0]:.3f} | "
            f"{pc[1]:.3f} | {r['test_hd95']:.2f} | {r['val_dice']:.3f} | {r['finetune_s'] / 60:.1f} min |"
        )
    summary = ["| labelled | scratch (mean ± std) | vectorpose (mean ± std) | paired difference (mean ± std) |", "|---|---|---|---|"]
    for fraction in sorted({r["fraction"] for r in rows if r["fraction"] < 1}):
        s = {r["seed"]: r["test_dice"] for r in rows if r["fraction"] == fraction and r["init"] == "scratch"}
        v = {r["seed"]: r["test_dice"] for r in rows if r["fraction"] == fraction and r["init"] == "vectorpose"}
        d = np.array([v[k] - s[k] for k in sorted(s) if k in v])
        n = next(r["labelled"] for r in rows if r["fraction"] == fraction)
        summary.append(f"| {n} ({fraction:.0%}) | {np.mean(list(s.values())):.3f} ± {np.std(list(s.values()), ddof=1):.3f} | "
                       f"{np.mean(list(v.values())):.3f} ± {np.std(list(v.values()), ddof=1):.3f} | {d.mean():+.3f} ± {d.std(ddof=1):.3f} |")
    full = [r for r in rows if r["fraction"] == 1.0]
    probe = ["| labelled | seed | transfer | val Dice | test Dice |", "|---|---|---|---|---|"]
    for r in rows:
        if r["init"].startswith("vectorpose") and r["seed"] == seeds[0] and r["fraction"] < 1:
            probe.append(f"| {r['labelled']} ({r['fraction']:.0%}) | {r['seed']} | {r['init']} | {r['val_dice']:.3f} | {r['test_dice']:.3f} |")
    text = f"""# Fine-tuning on Task04_Hippocampus

Produced by

```
python benchmarks/finetune_hippocampus.py {' '.join(shlex.quote(a) for a in sys.argv[1:])}
```

on {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, Python {platform.python_version()}, {args.jobs} run(s) at a time
({"one thread each" if args.jobs > 1 else "all cores"}: the times below are for that setting). Every run uses the fine-tuning
command's default recipe (Dice + CE, AdamW lr {recipe['lr']} with cosine decay, batch {recipe['batch_size']} of the automatic
patch {patch}, foreground oversampling {recipe['foreground_prob']}, MONAI affine / flip (axes {recipe['flip_axes']}) / intensity
augmentation, validation every {recipe['val_every']} steps, best validation model kept, `{recipe['transfer']}` transfer). The split
(`--split-seed 0`) is fixed: {len(split['test'])} test cases, {len(split['validation'])} validation cases, and a training pool of
{len(split['pool'])} from which each seed draws its labelled subset (nested across fractions). Test Dice is the mean over the
foreground classes and the {len(split['test'])} test cases (`vectorpose evaluate`); nothing was tuned on the test split.

The pretrained model is `{args.pretrained}`: method `{pre_meta['method']}`, {pre_meta['step']} steps, patch
{pre_meta['patch_size']}³, backbone channels {pre_meta['backbone']['channels']} (see `docs/pretraining_losses.md`).

## All training cases, from scratch

{"nnU-Net's published results on this dataset are about 0.89-0.90 mean Dice." if full else ""}

| labelled | steps | test Dice | command |
|---|---|---|---|
""" + "\n".join(f"| {r['labelled']} | {r['steps']} | **{r['test_dice']:.3f}** | `{r['command']}` |" for r in full) + f"""

## Few labels: scratch against VectorPOSE pretraining

{chr(10).join(summary)}

## Which part to transfer (decided on the validation split)

{chr(10).join(probe) if args.transfer_probe else "Not probed in this run (pass --transfer-probe)."}

## Every run

{chr(10).join(lines)}
"""
    Path(args.docs).mkdir(parents=True, exist_ok=True)
    (Path(args.docs) / "finetuning_hippocampus.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
