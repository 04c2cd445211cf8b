"""A common voxel spacing for scans of different resolutions: the target spacing rule, and images,
label maps and class probabilities moved between grids.

Grids: a volume of ``shape`` voxels at ``spacing`` mm per axis covers ``shape · spacing`` mm; at a
``target`` spacing it gets ``round(shape · spacing / target)`` voxels per axis (at least 1). Both grids
share their outer edges (voxel ``i`` of ``n`` has its centre at ``(i + ½) / n`` of the extent): this is
trilinear interpolation with ``align_corners=False``, for images and for class probabilities.

Label maps are resampled without mixing classes: each class's indicator is interpolated like an
image and every voxel takes the class with the largest value (nnU-Net resamples segmentations the
same way; a tie goes to the lower class value).

The automatic target (:func:`target_spacing`) is the median spacing per axis over the dataset, with
nnU-Net's rule for anisotropic data: when the coarsest median axis is more than 3 times the finest,
that axis takes the 10th percentile of its spacings instead (no coarser than the other axes'
targets), so that most scans are not thinned further along their slice axis.

Shapes: images and label maps ``(X, Y, Z)`` (NumPy), probabilities ``(C, X, Y, Z)`` (torch).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

ANISOTROPY_RATIO = 3.0
# spacings closer than this (relative) are the same grid: no resampling
SAME_SPACING_RTOL = 1e-4
SPACING_MODES = ("auto", "native")
SPACING_HELP = ("Voxel size the scans are resampled to: auto (the dataset's median per axis; for anisotropic data the coarse "
                "axis takes its 10th percentile), native (each scan's own grid) or X,Y,Z in mm.")


def parse_spacing(text: str) -> str | tuple[float, float, float]:
    """``"auto"``, ``"native"``, or three positive sizes in mm ``"X,Y,Z"`` (one number for all three)."""
    value = str(text).strip().lower()
    if value in SPACING_MODES:
        return value
    try:
        sizes = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise ValueError(f"spacing must be auto, native or X,Y,Z in mm, got {text!r}") from None
    if len(sizes) == 1:
        sizes = sizes * 3
    if len(sizes) != 3 or not all(np.isfinite(s) and s > 0 for s in sizes):
        raise ValueError(f"spacing needs three positive sizes in mm, got {text!r}")
    return sizes  # type: ignore[return-value]


def target_spacing(spacings: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """The automatic target spacing of a dataset whose scans have ``spacings`` (mm, canonical axes)."""
    s = np.asarray(spacings, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != 3 or len(s) == 0 or not (s > 0).all():
        raise ValueError(f"need one positive (x, y, z) spacing per scan, got {spacings!r}")
    target = np.median(s, axis=0)
    coarse = int(np.argmax(target))
    others = [a for a in range(3) if a != coarse]
    if target[coarse] > ANISOTROPY_RATIO * target.min():
        target[coarse] = max(np.percentile(s[:, coarse], 10), target[others].max())
    return tuple(float(v) for v in target)  # type: ignore[return-value]


def same_spacing(a, b) -> bool:
    return bool(np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=SAME_SPACING_RTOL, atol=0.0))


def resampled_shape(shape, spacing, target) -> tuple[int, int, int]:
    """Voxels per axis of ``shape`` at ``spacing`` once resampled to ``target``."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))  # type: ignore[return-value]


def _trilinear(x: torch.Tensor, shape) -> torch.Tensor:
    """``(C, X, Y, Z)`` float -> ``(C, *shape)``."""
    return F.interpolate(x[None], size=tuple(int(n) for n in shape), mode="trilinear", align_corners=False)[0]


def resample_image(image: np.ndarray, shape) -> np.ndarray:
    """An image ``(X, Y, Z)`` on a grid of ``shape`` voxels over the same extent (float32)."""
    x = torch.from_numpy(np.require(image, np.float32, ["C", "W"]))[None]  # a read-only memory map is copied
    return _trilinear(x, shape)[0].numpy()


def resample_labels(label: np.ndarray, shape) -> np.ndarray:
    """A label map ``(X, Y, Z)`` on a grid of ``shape`` voxels, classes unmixed (uint8)."""
    label = np.asarray(label)
    best = torch.full(tuple(int(n) for n in shape), -1.0)
    out = torch.zeros(best.shape, dtype=torch.uint8)
    for value in np.unique(label):  # one class at a time: memory of two volumes, not of one per class
        score = _trilinear(torch.from_numpy((label == value).astype(np.float32))[None], shape)[0]
        wins = score > best
        best = torch.where(wins, score, best)
        out[wins] = int(value)
    return out.numpy()


def resample_probabilities(probabilities: torch.Tensor, shape) -> torch.Tensor:
    """Class probabilities ``(C, X, Y, Z)`` on a grid of ``shape`` voxels (argmax them afterwards)."""
    return _trilinear(probabilities.float(), shape)


def choose_spacing(choice: str, spacings: list[tuple[float, float, float]]) -> tuple[float, float, float] | None:
    """The spacing a run resamples to: ``None`` for ``native``, :func:`target_spacing` of the scans'
    ``spacings`` for ``auto``, else the sizes ``choice`` gives (``"X,Y,Z"`` in mm)."""
    parsed = parse_spacing(choice)
    if parsed == "native":
        return None
    if parsed == "auto":
        return target_spacing(spacings)
    return parsed  # type: ignore[return-value]
