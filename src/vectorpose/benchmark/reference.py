"""A straightforward per-crop SciPy pipeline: the baseline that ``vectorpose bench`` times the fast
pipeline against, and the oracle its tests compare it with.

It does what the method's original code does for every crop, one at a time on the CPU: resize the
crop with ``scipy.ndimage.zoom``, rotate it with interpolating ``scipy.ndimage.rotate`` calls, and
compute the boundary target with ``scipy.ndimage.median_filter`` and Sobel filters. It draws its
random numbers in the same order as :func:`~vectorpose.pretext.sample.make_pretext_sample`, so for
the same generator state both must give the same patch, targets and corruption (within float
tolerance); ``tests/benchmark/test_reference.py`` checks that, and ``vectorpose bench`` times both.
With ``masking`` (the ``mae`` method) it hides the drawn blocks one at a time instead of corrupting.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..data.boxes import crop_box
from ..pretext.boundary import EDGE_GAIN, EDGE_THRESHOLD, MEDIAN_SIZE
from ..pretext.corruption import corrupt
from ..pretext.crop_geometry import sample_crop_geometry
from ..pretext.masking import MaskingConfig
from ..pretext.orientation import FACE_TURNS, IDENTITY, flip_orientation, rot90_orientation
from ..pretext.sample import PretextConfig
from ..pretext.vectors import vector_targets


def reference_boundary_target(clean: np.ndarray) -> np.ndarray:
    """``clip(30 (|sobel(median_5(y))| - 0.01), 0, 1)`` of one ``(P, P, P)`` patch, with SciPy filters.

    ``ndimage.sobel`` smooths with ``[1, 2, 1]`` on the two other axes; dividing by 4 per axis (16)
    gives the normalised kernel of :func:`~vectorpose.pretext.boundary.sobel_magnitude`.
    """
    smooth = ndimage.median_filter(clean, size=MEDIAN_SIZE, mode="nearest")
    squares = sum((ndimage.sobel(smooth, axis=a, mode="nearest") / 16.0) ** 2 for a in range(3))
    return np.clip(EDGE_GAIN * (np.sqrt(squares / 3.0) - EDGE_THRESHOLD), 0.0, 1.0).astype(np.float32)


def reference_block_masking(clean: np.ndarray, rng: np.random.Generator, masking: MaskingConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(masked patch, mask)`` of one ``(P, P, P)`` patch, block by block, with the draws of
    :func:`~vectorpose.pretext.masking.block_mask` (a permutation of the blocks in C order)."""
    p, b = clean.shape[0], masking.block_size
    grid = masking.grid(p)
    mask = np.zeros(clean.shape, dtype=bool)
    for flat in rng.permutation(grid**3)[: masking.hidden_blocks(grid)]:
        i, j, k = np.unravel_index(flat, (grid, grid, grid))
        mask[i * b:(i + 1) * b, j * b:(j + 1) * b, k * b:(k + 1) * b] = True
    masked = clean.copy()
    masked[mask] = clean[~mask].mean()
    return masked, mask


def reference_sample(volume: np.ndarray, intensity_range: tuple[float, float], rng: np.random.Generator,
                     config: PretextConfig = PretextConfig(), masking: MaskingConfig | None = None) -> dict[str, np.ndarray]:
    """One sample, the slow way: ``{"input", "clean", "boundary"}`` of shape ``(P, P, P)`` and ``"vectors"`` ``(9, 3)``;
    with ``masking`` also ``"mask"`` ``(P, P, P)``."""
    vmin, vmax = intensity_range
    geometry = sample_crop_geometry(volume.shape, config.patch_size, rng, config.scale_range)
    # the draws of sample_orientation, kept as operations to apply one by one
    flips = [axis for axis in range(3) if rng.random() < config.flip_prob]
    turns = [(int(rng.integers(4)), (1, 2)), FACE_TURNS[int(rng.integers(len(FACE_TURNS)))]] if config.rotate else []
    crop = crop_box(volume, geometry.lo, (geometry.side,) * 3, vmin, np.float32)
    if geometry.side != geometry.patch_size:
        crop = ndimage.zoom(crop, geometry.patch_size / geometry.side, order=1, mode="nearest", grid_mode=True)
    clean = np.clip((crop - vmin) / (vmax - vmin), 0.0, 1.0)
    orientation = IDENTITY
    for axis in flips:
        clean = np.flip(clean, axis)
        orientation = orientation.then(flip_orientation(axis))
    for k, plane in turns:
        if k:
            clean = ndimage.rotate(clean, 90.0 * k, axes=plane, order=1, reshape=False, mode="nearest")
        orientation = orientation.then(rot90_orientation(k, plane))
    clean = np.ascontiguousarray(clean, dtype=np.float32)
    extra = {}
    if masking is None:
        changed = corrupt(clean, rng, config.corruption)
    else:
        changed, extra["mask"] = reference_block_masking(clean, rng, masking)
    return {
        "input": (changed * (vmax - vmin) + vmin).astype(np.float32),
        "clean": clean,
        "vectors": vector_targets(geometry, orientation),
        "boundary": reference_boundary_target(clean),
        **extra,
    }
