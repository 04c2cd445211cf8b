"""Time of the 5×5×5 median filter of the boundary target on one 32³ patch, three ways, one thread.

    python benchmarks/median_filter_speed.py --repeats 5

SciPy's ``ndimage.median_filter`` (the reference pipeline), ``torch.median`` over unfolded windows
(the GPU path) and ``np.partition`` over sliding windows (the CPU path). The patch is uniform noise
from seed 0; the median of 5 timed calls after one untimed call is printed.
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
    args = parser.parse_args()
    torch.set_num_threads(1)
    patch = np.random.default_rng(0).random((args.patch,) * 3, dtype=np.float32)
    x = torch.from_numpy(patch)[None, None]
    rows = {
        "scipy ndimage.median_filter": lambda: ndimage.median_filter(patch, size=5, mode="nearest"),
        "torch.median over unfolded windows": lambda: _median_torch(x, 5),
        "np.partition over sliding windows": lambda: _median_numpy(x, 5),
    }
    print(f"5x5x5 median of one {args.patch}^3 patch, 1 thread, median of {args.repeats}")
    for name, fn in rows.items():
        print(f"{name:<36} {timed(fn, args.repeats) * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
