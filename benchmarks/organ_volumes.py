"""The labelled volume (mL) of every class in every label map of an MSD-style dataset, as a markdown
table: a scan whose organ is missing or cut short shows here before it shows as a seed that never
learned that organ. Reads ``labelsTr`` through the dataset's own listing (``dataset.json``).

    python benchmarks/organ_volumes.py ~/.cache/vectorpose-data/BTCV [--split paper_split] > volumes.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

from vectorpose.data.datasets import load_dataset
from vectorpose.data.splits import read_test_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--split", help="Only the training cases of this split (a key of dataset.json or a JSON file).")
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    cases = dataset.labelled
    if args.split:
        test, train = read_test_split(dataset.root, args.split)
        cases = [c for c in cases if c.case_id not in test and (train is None or c.case_id in train)]
    names = {k: v for k, v in sorted(dataset.labels.items()) if k != 0}
    print("| case | " + " | ".join(names.values()) + " |")
    print("|---" + "|---:" * len(names) + "|")
    for case in cases:
        image = nib.load(str(case.label))
        label = np.asarray(image.dataobj)
        voxel_ml = float(np.prod(image.header.get_zooms()[:3])) / 1000.0
        counts = np.bincount(label.astype(np.int64).ravel(), minlength=max(names) + 1)
        print(f"| {case.case_id} | " + " | ".join(f"{counts[k] * voxel_ml:.1f}" for k in names) + " |")


if __name__ == "__main__":
    main()
