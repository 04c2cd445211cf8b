"""Does keeping only the largest connected component help? nnU-Net's post-processing, measured on a
fine-tuned model (or an ensemble) over one part of its recorded split, validation by default.

Three label maps per case: the prediction as it is; per class, only the largest 26-connected component
of that class; the largest component of all foreground together (other foreground voxels become
background). Scored as `vectorpose evaluate` scores (Dice per class, nnU-Net's conventions), without
HD95.

    python benchmarks/largest_component.py runs/recipe/default-f1-s0 ../shared/data/Task04_Hippocampus [--part validation]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from vectorpose.data.datasets import Dataset, load_dataset
from vectorpose.data.preprocessing import preprocess_dataset
from vectorpose.inference.evaluate import recorded_split
from vectorpose.inference.metrics import case_metrics, summarise
from vectorpose.inference.predictor import load_predictor

CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)  # 26-neighbourhood


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean mask (the mask itself when it has at most one)."""
    components, n = ndimage.label(mask, structure=CONNECTIVITY)
    if n <= 1:
        return mask
    sizes = np.bincount(components.ravel())[1:]
    return components == 1 + int(np.argmax(sizes))


def variants(labels: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    per_class = np.zeros_like(labels)
    for c in range(1, num_classes):
        per_class[largest_component(labels == c)] = c
    return {"as predicted": labels, "largest per class": per_class,
            "largest foreground": np.where(largest_component(labels > 0), labels, 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="fine-tuned run folders (several: one ensemble); the first's split is used")
    parser.add_argument("data", type=Path, help="the MSD folder the runs were trained on")
    parser.add_argument("--part", choices=["validation", "test"], default="validation", help="part of the recorded split")
    args = parser.parse_args()
    predictor = load_predictor(args.models)
    dataset = load_dataset(args.data)
    ids = getattr(recorded_split(args.models[0]), args.part)
    labelled = {c.case_id: c for c in dataset.labelled}
    subset = Dataset(dataset.root, tuple(labelled[i] for i in ids), dataset.modality, dataset.labels)
    volumes, _ = preprocess_dataset(subset, replace(predictor.preprocessing, spacing=None))
    names = predictor.class_names
    rows: dict[str, list[dict]] = {}
    for v in volumes:
        predicted = predictor.predict_array(np.asarray(v.image()), v.geometry.spacing)
        reference = np.asarray(v.label())
        for name, labels in variants(predicted, predictor.num_classes).items():
            dice = case_metrics(labels, reference, predictor.num_classes, hd95=False)["dice"]
            rows.setdefault(name, []).append({"dice": dict(zip(names, dice)), "hd95": dict.fromkeys(names)})
    print(f"{', '.join(map(str, args.models))} on the {args.part} split ({len(volumes)} cases)\n")
    print("| label map | mean Dice | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for name, r in rows.items():
        s = summarise(r, names)
        print(f"| {name} | {s['mean_dice']:.4f} | " + " | ".join(f"{s['per_class'][n]['dice']:.4f}" for n in names) + " |")


if __name__ == "__main__":
    main()
