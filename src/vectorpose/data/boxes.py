"""Boxes of voxel arrays: cutting an axis-aligned box that may stick out of the volume.

Shared by the pretext crops and the segmentation patches. A box is its lower corner ``lo`` (may be
negative) and its ``size`` per spatial axis; the spatial axes are the last three of the array.
"""

from __future__ import annotations

import numpy as np


def origin_range(size: int, side: int) -> tuple[int, int]:
    """The lower corners ``[a, b]`` (inclusive) a box of ``side`` may take along an axis of ``size``.

    ``[0, size - side]`` when the box fits, so it lies inside; ``[size - side, 0]`` when it does not,
    so it covers the whole axis and sticks out on one or both sides.
    """
    a, b = sorted((0, int(size) - int(side)))
    return a, b


def crop_box(volume: np.ndarray, lo, size, pad_value: float, dtype=None) -> np.ndarray:
    """The box ``[lo, lo + size)`` of the last three axes of ``volume``; outside parts hold ``pad_value``.

    ``lo`` may be negative and the box may extend past the volume. Only the overlapping part is read,
    so a memory-mapped volume loads just that region. Returns an array of shape
    ``(*volume.shape[:-3], *size)`` and dtype ``dtype`` (default: the volume's).
    """
    spatial = volume.shape[-3:]
    out = np.full((*volume.shape[:-3], *size), pad_value, dtype=dtype or volume.dtype)
    src, dst = [], []
    for l, n, s in zip(lo, size, spatial):
        a, b = max(int(l), 0), min(int(l) + int(n), s)
        if b <= a:
            return out  # no overlap at all
        src.append(slice(a, b))
        dst.append(slice(a - int(l), b - int(l)))
    out[(..., *dst)] = volume[(..., *src)]
    return out
