"""Which weights should a few-label run keep: those of its best validation round, or its final ones?

Scores two models of each fine-tuning run on the cases of its training pool whose labels the run did
not use (neither its test nor its validation split, so nothing here is tuned on a test split):
`model.*` (the best validation round, for runs made with `--keep best` or before that option existed)
and `last.*` (the final step). Dice per class as `vectorpose evaluate` scores it, with test-time mirroring,
without HD95. Prints one Markdown row per run and model, then the mean paired difference (final − best).

    python benchmarks/checkpoint_choice.py DATA RUN... [--json FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from vectorpose.data.datasets import Dataset, load_dataset
from vectorpose.inference.evaluate import recorded_split, score_volumes, scoring_volumes
from vectorpose.inference.metrics import summarise
from vectorpose.inference.predictor import load_segmenter

MODELS = {"best validation": "model.safetensors", "final": "last.safetensors"}


def unused_cases(run: Path) -> list[str]:
    """The training pool's cases whose labels ``run`` did not train on."""
    split = recorded_split(run)
    return [c for c in split.pool if c not in set(split.labelled)]


def score_run(run: Path, dataset: Dataset, ids: list[str]) -> dict:
    """Step and Dice (mean and per class) of each of the run's two models on the cases ``ids``; both models
    normalise scans alike (one run), so the cases are read and normalised once."""
    models = {kind: load_segmenter(run / file) for kind, file in MODELS.items()}
    volumes = scoring_volumes(dataset, ids, models["final"].preprocessing)
    scores = {}
    for kind, model in models.items():
        summary = summarise(score_volumes(model, volumes, hd95=False), model.class_names)
        scores[kind] = {"step": model.metadata["step"], "mean_dice": summary["mean_dice"],
                        "per_class": {n: c["dice"] for n, c in summary["per_class"].items()}}
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the MSD folder the runs were trained on")
    parser.add_argument("runs", nargs="+", type=Path, help="fine-tuning run folders that hold model.* and last.*")
    parser.add_argument("--json", type=Path, help="also write every score here")
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    results, names = [], None
    for run in args.runs:
        ids = unused_cases(run)
        if not ids:
            raise SystemExit(f"{run}: every case of its training pool is labelled; no unused case to score on")
        entry = {"run": str(run), "cases": len(ids), "models": score_run(run, dataset, ids)}
        names = list(entry["models"]["final"]["per_class"])
        results.append(entry)
        print(json.dumps(entry), flush=True)
    print(f"\n| run | cases | model | step | mean Dice | {' | '.join(names)} |")
    print("|---|---:|---|---:|---:|" + "---:|" * len(names))
    for e in results:
        for kind, m in e["models"].items():
            per = " | ".join(f"{m['per_class'][n]:.3f}" for n in names)
            print(f"| {e['run']} | {e['cases']} | {kind} | {m['step']} | {m['mean_dice']:.4f} | {per} |")
    diffs = [e["models"]["final"]["mean_dice"] - e["models"]["best validation"]["mean_dice"] for e in results]
    print(f"\nfinal − best validation, mean over {len(diffs)} runs: {np.mean(diffs):+.4f} "
          f"(range {min(diffs):+.4f} to {max(diffs):+.4f}; final higher in {sum(d > 0 for d in diffs)}, equal in "
          f"{sum(d == 0 for d in diffs)})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
