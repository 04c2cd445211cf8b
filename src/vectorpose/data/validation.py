"""Checks that a dataset suits a task, run before any training starts.

A long run must not die hours in on something that could be seen at the start: label values that
``dataset.json`` does not declare, or a patch that no volume can fill. Each check looks at every
volume and reports every offender at once (:class:`~vectorpose.errors.DatasetError`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import DataError, DatasetError
from .preprocessing import PreprocessedVolume


def _shape_text(shape) -> str:
    return "×".join(str(int(s)) for s in shape)


def check_label_values(volumes: list[PreprocessedVolume], labels: dict[int, str]) -> None:
    """Every value of every label map must be a key of ``labels`` (``dataset.json``'s ``labels``).

    Uses the values recorded when each map was cached (``PreprocessedVolume.label_values``).
    """
    declared = set(labels)
    problems = []
    for v in volumes:
        extra = sorted(set(v.label_values) - declared)
        if extra:
            problems.append(DataError(v.source_label or v.source,
                                      f"label values {extra} are not declared in dataset.json (declared: {sorted(declared)})"))
    if problems:
        raise DatasetError(problems)


def largest_useful_patch(shapes: list[tuple[int, int, int]], divisor: int) -> tuple[int, int, int]:
    """Per axis, the largest volume side rounded up to ``divisor``.

    Any larger patch holds a slab of nothing but padding in every volume: compute spent on nothing.
    """
    largest = np.max(np.asarray(shapes), axis=0)
    return tuple(int(math.ceil(s / divisor) * divisor) for s in largest)  # type: ignore[return-value]


def check_patch_fits(patch: tuple[int, int, int], shapes: list[tuple[int, int, int]], divisor: int, source: Path) -> None:
    """Refuse a segmentation patch larger than :func:`largest_useful_patch` on some axis."""
    limit = largest_useful_patch(shapes, divisor)
    if any(p > m for p, m in zip(patch, limit)):
        largest = np.max(np.asarray(shapes), axis=0)
        raise DataError(source, f"patch {_shape_text(patch)} is larger than every volume (largest sides {_shape_text(largest)}); "
                                f"use a patch of at most {_shape_text(limit)}, or --patch auto")


def check_crop_fits(patch_size: int, min_scale: float, shapes: list[tuple[int, int, int]], source: Path) -> None:
    """Refuse pretraining crops that cannot fit in any volume even at the smallest scale.

    A crop of side ``round(s * P)`` larger than a volume is padded (see
    :mod:`vectorpose.pretext.crop_geometry`); when even the smallest crop fits in no volume, every
    sample would be part padding, so the settings are wrong for this data.
    """
    smallest = max(1, int(round(min_scale * patch_size)))
    if not any(all(smallest <= s for s in shape) for shape in shapes):
        largest = np.max(np.asarray(shapes), axis=0)
        raise DataError(source, f"the smallest crop ({smallest} voxels = {min_scale:g} × patch {patch_size}) is larger than every volume "
                                f"(largest sides {_shape_text(largest)}); lower --patch or the --scale-range minimum")
