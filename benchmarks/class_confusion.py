"""Where each class's voxels go: the voxel confusion matrix of fine-tuned models on labelled cases.

A class a run did not learn shows here as the class its voxels were given instead. Each scan is
normalised as the model's training normalised it and predicted on its own grid (as `vectorpose
evaluate` scores it, test-time mirroring included); counts are summed over the cases. Prints, per
model, one Markdown table: a row per true class, the share of its voxels given each class.

    python benchmarks/class_confusion.py DATA MODEL... --cases ID,ID [--json FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from vectorpose.data.datasets import Dataset, load_dataset
from vectorpose.inference.evaluate import scoring_volumes
from vectorpose.inference.metrics import confusion_counts
from vectorpose.inference.predictor import load_segmenter


def confusion(model: Path, dataset: Dataset, ids: list[str]) -> tuple[list[str], np.ndarray]:
    """``(class names with background first, counts[true, predicted])`` of ``model`` on the cases ``ids``."""
    segmenter = load_segmenter(model)
    missing = sorted(set(ids) - {c.case_id for c in dataset.labelled})
    if missing:
        raise SystemExit(f"{dataset.root}: no labelled case {', '.join(missing)}")
    volumes = scoring_volumes(dataset, ids, segmenter.preprocessing)
    counts = sum(confusion_counts(segmenter.predict_array(np.asarray(v.image()), v.geometry.spacing), np.asarray(v.label()),
                                  segmenter.num_classes) for v in volumes)
    return ["background", *segmenter.class_names], counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the MSD folder the models were trained on")
    parser.add_argument("models", nargs="+", type=Path, help="fine-tuning run folders or model.safetensors files")
    parser.add_argument("--cases", required=True, help="comma-separated ids of labelled cases to score")
    parser.add_argument("--json", type=Path, help="also write the counts here")
    args = parser.parse_args()
    dataset, ids = load_dataset(args.data), args.cases.split(",")
    results = []
    for model in args.models:
        names, counts = confusion(model, dataset, ids)
        results.append({"model": str(model), "cases": ids, "classes": names, "counts": counts.tolist()})
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        print(f"\n{model} on {', '.join(ids)}: share of each true class's voxels given each class\n")
        print(f"| true \\ predicted | voxels | {' | '.join(names)} |")
        print("|---|---:|" + "---:|" * len(names))
        for name, row, total in zip(names, shares, counts.sum(axis=1)):
            print(f"| {name} | {total} | {' | '.join(f'{s:.3f}' for s in row)} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
