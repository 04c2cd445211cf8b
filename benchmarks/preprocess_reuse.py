"""Time to find every case of a dataset in a filled preprocessing cache (the start of every run).

    python benchmarks/preprocess_reuse.py ../shared/data/Task04_Hippocampus --repeats 3
    python benchmarks/preprocess_reuse.py --synthetic 16 --side 256 --repeats 3   # 16 uncompressed 256³ float32 scans, 1 GiB

The first pass fills a fresh cache (not timed); each timed pass then finds all entries again.
``--synthetic N`` writes N noise volumes (seed 0) into a temporary folder and uses them instead.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from vectorpose.data.datasets import load_dataset
from vectorpose.data.preprocessing import PreprocessingConfig, preprocess_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?")
    parser.add_argument("--synthetic", type=int, default=0)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    scratch = tempfile.TemporaryDirectory()
    data = args.data
    if args.synthetic:
        rng = np.random.default_rng(0)
        data = Path(scratch.name) / "scans"
        data.mkdir()
        for i in range(args.synthetic):
            nib.save(nib.Nifti1Image(rng.random((args.side,) * 3, dtype=np.float32), np.eye(4)), str(data / f"scan_{i:03d}.nii"))
    dataset = load_dataset(data, modality=None if args.data else "MRI")
    config = PreprocessingConfig(modality=dataset.modality or "MRI")
    with tempfile.TemporaryDirectory() as cache:
        preprocess_dataset(dataset, config, cache)
        times = []
        for _ in range(args.repeats):
            tic = time.perf_counter()
            preprocess_dataset(dataset, config, cache)
            times.append(time.perf_counter() - tic)
    size = sum(c.image.stat().st_size + (c.label.stat().st_size if c.label else 0) for c in dataset.cases)
    scratch.cleanup()
    print(f"{len(dataset.cases)} cases, {size / 2**20:.1f} MiB of source files: cache pass {statistics.median(times):.3f} s "
          f"(median of {args.repeats})")


if __name__ == "__main__":
    main()
