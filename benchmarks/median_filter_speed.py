"""Time of the 5×5×5 median filter of the boundary target on a batch of 32³ patches, three ways, one thread.

    python benchmarks/median_filter_speed.py --repeats 5 --batch 4

SciPy's ``ndimage.median_filter`` (the reference pipeline, one patch at a time), ``torch.median``
over unfolded windows (the GPU path) and ``np.partition`` over sliding windows (the CPU path, a few
planes at a time). The patches are uniform noise from seed 0; the median of the timed calls after
one untimed call is printed, per patch.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from scipy import ndimage

from vectorpose.pretext.boundary import _median_numpy, _median_torch


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4, help="patches per call, as in a training batch")
    args = parser.parse_args()
    torch.set_num_threads(1)
    patches = np.random.default_rng(0).random((args.batch, 1) + (args.patch,) * 3, dtype=np.float32)
    x = torch.from_numpy(patches)
    rows = {
        "scipy ndimage.median_filter": lambda: [ndimage.median_filter(p[0], size=5, mode="nearest") for p in patches],
        "torch.median over unfolded windows": lambda: _median_torch(x, 5),
        "np.partition over sliding windows": lambda: _median_numpy(x, 5),
    }
    print(f"5x5x5 median of {args.batch} patches of {args.patch}^3, 1 thread, median of {args.repeats}, per patch")
    for name, fn in rows.items():
        print(f"{name:<36} {timed(fn, args.repeats) * 1e3 / args.batch:7.1f} ms")


if __name__ == "__main__":
    main()
