"""Models-Genesis-style image corruptions for Boundary-Focused Reconstruction.

VectorPOSE (Zhang et al., "A Point in the Right Direction: Vector Prediction for
Spatially-aware Self-supervised Volumetric Representation Learning", ISBI 2023,
arXiv:2211.08533) trains its encoder-decoder to restore patches that were corrupted
with the transformations of Models Genesis (Zhou et al., "Models Genesis",
Medical Image Analysis 2021): local voxel shuffling, a monotone non-linear intensity
curve, and in-/out-painting.  This module is our own implementation of those
corruptions, written from their published description.

All functions are pure: they take a float32 patch of shape (D, H, W) with values in
[0, 1] and a ``numpy.random.Generator`` (the only source of randomness), and return a
new float32 array of shape (D, H, W) with values in [0, 1].  The input is never
modified.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

__all__ = [
    "CorruptionConfig",
    "bezier_curve",
    "bezier_intensity",
    "corrupt",
    "inpaint",
    "local_shuffle",
    "outpaint",
]

# Values this far outside [0, 1] are accepted (and clipped) to absorb float rounding
# from upstream normalisation.
_RANGE_TOLERANCE = 1e-6

# Models Genesis keeps adding another painting block with this probability.
_BLOCK_CONTINUE_PROB = 0.95


@dataclass(frozen=True)
class CorruptionConfig:
    """Probabilities with which :func:`corrupt` applies each corruption.

    Attributes:
        shuffle_prob: probability of :func:`local_shuffle`.
        intensity_prob: probability of :func:`bezier_intensity`.
        paint_prob: probability of painting (either :func:`inpaint` or :func:`outpaint`).
        inpaint_fraction: given that painting happens, probability that it is
            in-painting rather than out-painting.
    """

    shuffle_prob: float = 0.25
    intensity_prob: float = 0.5
    paint_prob: float = 0.75
    inpaint_fraction: float = 0.5

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            # `not (0 <= v <= 1)` also rejects NaN.
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"CorruptionConfig.{field.name} must be in [0, 1], got {value!r}")


def _checked_patch(patch: np.ndarray) -> np.ndarray:
    """Validate a (D, H, W) patch with values in [0, 1]; return a fresh float32 copy.

    The copy is clipped to [0, 1] so that values inside the tolerance band cannot leak
    out of range, and it doubles as the output buffer, so callers never touch the input.
    """
    array = np.asarray(patch)
    if array.ndim != 3:
        raise ValueError(f"patch must be 3D (D, H, W), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"patch must not be empty, got shape {array.shape}")
    low, high = float(array.min()), float(array.max())
    # Written as a negated conjunction so that NaN fails the check.
    if not (low >= -_RANGE_TOLERANCE and high <= 1.0 + _RANGE_TOLERANCE):
        raise ValueError(f"patch values must lie in [0, 1], got range [{low}, {high}]")
    return np.clip(array, 0.0, 1.0).astype(np.float32, copy=False)


def _checked_rng(rng: np.random.Generator) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _check_max_blocks(max_blocks: int) -> None:
    if max_blocks < 1:
        raise ValueError(f"max_blocks must be >= 1, got {max_blocks}")


def local_shuffle(
    patch: np.ndarray,
    rng: np.random.Generator,
    num_windows: int | None = None,
    max_window: int | None = None,
) -> np.ndarray:
    """Permute voxels inside many small random windows (Models Genesis local shuffling).

    Each window has a per-axis size drawn uniformly from 1..max_window (capped at the
    patch size along that axis) and lies fully inside the patch.  Windows read from the
    original patch and write into the output; where windows overlap, one of them wins.
    Voxels outside all windows are unchanged.

    Args:
        patch: float32 array of shape (D, H, W) with values in [0, 1].
        rng: source of randomness.
        num_windows: number of windows; default ``patch.size // 13`` (about 10000 for a
            64x64x32 patch, as in Models Genesis).
        max_window: largest window size per axis; default ``max(1, min(patch.shape) // 10)``.

    Returns:
        New float32 array of shape (D, H, W) with values in [0, 1].
    """
    source = _checked_patch(patch)
    rng = _checked_rng(rng)
    shape = np.array(source.shape)
    if num_windows is None:
        num_windows = source.size // 13
    if max_window is None:
        max_window = max(1, int(shape.min()) // 10)
    if num_windows < 0:
        raise ValueError(f"num_windows must be >= 0, got {num_windows}")
    if max_window < 1:
        raise ValueError(f"max_window must be >= 1, got {max_window}")

    out = source.copy()
    if num_windows == 0:
        return out
    size_cap = np.minimum(max_window, shape)
    sizes = rng.integers(1, size_cap + 1, size=(num_windows, 3))
    origins = rng.integers(0, shape - sizes + 1)

    # Work on flat indices so one gather/scatter handles every window of a group.
    strides = np.array([shape[1] * shape[2], shape[2], 1])
    starts = origins @ strides
    source_flat, out_flat = source.ravel(), out.ravel()

    # Windows of equal size share one index template, so handle them as one group:
    # a (windows x voxels) index matrix, shuffled row-wise by argsort of random keys.
    base = int(size_cap.max()) + 1
    codes = (sizes[:, 0] * base + sizes[:, 1]) * base + sizes[:, 2]
    order = np.argsort(codes, kind="stable")
    group_bounds = np.flatnonzero(np.diff(codes[order])) + 1
    for members in np.split(order, group_bounds):
        wd, wh, ww = sizes[members[0]]
        template = (
            np.arange(wd)[:, None, None] * strides[0]
            + np.arange(wh)[None, :, None] * strides[1]
            + np.arange(ww)[None, None, :]
        ).ravel()
        index = starts[members, None] + template[None, :]
        permutation = np.argsort(rng.random(index.shape), axis=1)
        out_flat[index] = np.take_along_axis(source_flat[index], permutation, axis=1)
    return out


def bezier_curve(
    controls_x: np.ndarray, controls_y: np.ndarray, num: int = 1001
) -> tuple[np.ndarray, np.ndarray]:
    """Sample a cubic Bezier curve at ``num`` evenly spaced parameters t in [0, 1].

    Args:
        controls_x: the four x coordinates of control points P0..P3.
        controls_y: the four y coordinates of control points P0..P3.
        num: number of samples (>= 2).

    Returns:
        ``(x, y)``, two float64 arrays of shape (num,), ordered by increasing t.
    """
    controls_x = np.asarray(controls_x, dtype=np.float64)
    controls_y = np.asarray(controls_y, dtype=np.float64)
    if controls_x.shape != (4,) or controls_y.shape != (4,):
        raise ValueError(
            f"need 4 control coordinates per axis, got shapes {controls_x.shape} and {controls_y.shape}"
        )
    if num < 2:
        raise ValueError(f"num must be >= 2, got {num}")
    t = np.linspace(0.0, 1.0, num)
    s = 1.0 - t
    # Bernstein basis of degree 3, shape (num, 4).
    basis = np.stack([s**3, 3 * s**2 * t, 3 * s * t**2, t**3], axis=1)
    return basis @ controls_x, basis @ controls_y


def bezier_intensity(
    patch: np.ndarray, rng: np.random.Generator, invert: bool | None = None
) -> np.ndarray:
    """Map intensities through a random monotone cubic Bezier curve (Models Genesis).

    Control points are P0=(0,0), P1=(x1,y1), P2=(x2,y2), P3=(1,1).  Random draws, in
    this order: ``rng.random(2)`` sorted gives (x1, x2); ``rng.random(2)`` sorted gives
    (y1, y2); if ``invert`` is None, ``rng.random() < 0.5`` decides inversion.  The
    curve is sampled with :func:`bezier_curve` (1001 points) and applied with
    ``np.interp``; inversion maps y to 1 - y, giving a decreasing curve.

    Args:
        patch: float32 array of shape (D, H, W) with values in [0, 1].
        rng: source of randomness.
        invert: force (True) or forbid (False) inversion; None draws it with p = 0.5.

    Returns:
        New float32 array of shape (D, H, W) with values in [0, 1].
    """
    source = _checked_patch(patch)
    rng = _checked_rng(rng)
    inner_x = np.sort(rng.random(2))
    inner_y = np.sort(rng.random(2))
    if invert is None:
        invert = bool(rng.random() < 0.5)
    # Monotonicity: x'(t) = 3[(1-t)^2 (x1-0) + 2t(1-t) (x2-x1) + t^2 (1-x2)] is a sum of
    # non-negative terms because 0 <= x1 <= x2 <= 1, and likewise y'(t).  So x and y both
    # grow with t, and y as a function of x (what np.interp evaluates) never decreases.
    # The curve also starts exactly at (0,0) and ends exactly at (1,1).
    curve_x, curve_y = bezier_curve(
        np.array([0.0, inner_x[0], inner_x[1], 1.0]),
        np.array([0.0, inner_y[0], inner_y[1], 1.0]),
    )
    if invert:
        curve_y = 1.0 - curve_y
    mapped = np.interp(source.astype(np.float64), curve_x, curve_y)
    return np.clip(mapped, 0.0, 1.0).astype(np.float32)


def _num_blocks(rng: np.random.Generator, max_blocks: int) -> int:
    """One block, then another with probability 0.95 each time, up to ``max_blocks``."""
    count = 1
    while count < max_blocks and rng.random() < _BLOCK_CONTINUE_PROB:
        count += 1
    return count


def _random_box(
    rng: np.random.Generator, shape: tuple[int, ...], low: list[int], high: list[int]
) -> tuple[slice, ...]:
    """A box fully inside ``shape`` whose size on axis i is uniform in [low[i], high[i]]."""
    box = []
    for extent, lo, hi in zip(shape, low, high):
        # At least one voxel, and never larger than the axis, even for tiny patches.
        lo = min(max(1, lo), extent)
        hi = min(max(lo, hi), extent)
        size = int(rng.integers(lo, hi + 1))
        start = int(rng.integers(0, extent - size + 1))
        box.append(slice(start, start + size))
    return tuple(box)


def inpaint(patch: np.ndarray, rng: np.random.Generator, max_blocks: int = 5) -> np.ndarray:
    """Fill 1..max_blocks random boxes with uniform noise (Models Genesis in-painting).

    Box sizes per axis are uniform in [s // 6, s // 3] (at least 1) for an axis of size
    s; boxes lie fully inside the patch and may overlap.

    Args:
        patch: float32 array of shape (D, H, W) with values in [0, 1].
        rng: source of randomness.
        max_blocks: largest number of boxes (>= 1).

    Returns:
        New float32 array of shape (D, H, W) with values in [0, 1].
    """
    out = _checked_patch(patch)
    rng = _checked_rng(rng)
    _check_max_blocks(max_blocks)
    low = [s // 6 for s in out.shape]
    high = [s // 3 for s in out.shape]
    for _ in range(_num_blocks(rng, max_blocks)):
        box = _random_box(rng, out.shape, low, high)
        out[box] = rng.random(out[box].shape, dtype=np.float32)
    return out


def outpaint(patch: np.ndarray, rng: np.random.Generator, max_blocks: int = 5) -> np.ndarray:
    """Keep 1..max_blocks random boxes and replace the rest with noise (Models Genesis out-painting).

    The whole patch becomes uniform noise in [0, 1]; the original content is then
    copied back inside boxes whose size per axis is uniform in [3s // 7, 4s // 7]
    (at least 1) for an axis of size s.

    Args:
        patch: float32 array of shape (D, H, W) with values in [0, 1].
        rng: source of randomness.
        max_blocks: largest number of kept boxes (>= 1).

    Returns:
        New float32 array of shape (D, H, W) with values in [0, 1].
    """
    source = _checked_patch(patch)
    rng = _checked_rng(rng)
    _check_max_blocks(max_blocks)
    out = rng.random(source.shape, dtype=np.float32)
    low = [3 * s // 7 for s in source.shape]
    high = [4 * s // 7 for s in source.shape]
    for _ in range(_num_blocks(rng, max_blocks)):
        box = _random_box(rng, source.shape, low, high)
        out[box] = source[box]
    return out


def corrupt(
    patch: np.ndarray,
    rng: np.random.Generator,
    config: CorruptionConfig = CorruptionConfig(),
) -> np.ndarray:
    """Apply the Models Genesis corruption chain used by VectorPOSE's reconstruction task.

    In order, each independently with its probability from ``config``: local shuffling,
    the Bezier intensity curve, and painting (in-painting with probability
    ``config.inpaint_fraction``, otherwise out-painting).

    Args:
        patch: float32 array of shape (D, H, W) with values in [0, 1].
        rng: source of randomness.
        config: corruption probabilities.

    Returns:
        New float32 array of shape (D, H, W) with values in [0, 1].
    """
    out = _checked_patch(patch)
    rng = _checked_rng(rng)
    # rng.random() lies in [0, 1), so probability 0 never fires and probability 1 always does.
    if rng.random() < config.shuffle_prob:
        out = local_shuffle(out, rng)
    if rng.random() < config.intensity_prob:
        out = bezier_intensity(out, rng)
    if rng.random() < config.paint_prob:
        if rng.random() < config.inpaint_fraction:
            out = inpaint(out, rng)
        else:
            out = outpaint(out, rng)
    return out
