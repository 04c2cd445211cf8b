"""Crop sampling with exact, recorded geometry (VectorPOSE, Zhang et al., ISBI 2023, section 1).

Coordinates are continuous voxel coordinates of the canonical (RAS+) volume with the *corner*
convention: voxel ``i`` covers ``[i, i + 1)`` along its axis, so a volume of shape ``S`` spans
``[0, S)`` and its centre is ``S / 2``. A crop covers ``[lo, lo + L)`` on every axis.

A crop side ``L`` larger than a volume dimension is allowed: ``lo`` is then drawn so that the crop
covers the whole axis and sticks out on one or both sides, and the part outside the volume is
filled with the background value. The geometry stays exact because nothing is shrunk or moved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.boxes import crop_box, origin_range


@dataclass(frozen=True)
class CropGeometry:
    """Where a cubic crop was cut and how it was resized to the network's patch.

    Attributes:
        volume_shape: ``(S_x, S_y, S_z)`` of the canonical volume.
        lo: lower corner (may be negative when the crop sticks out of the volume).
        side: crop side ``L`` in voxels, ``round(scale * patch_size)``.
        patch_size: side ``P`` of the resized patch the network sees.
        scale: the drawn scale ``s``.
        max_side: the largest side the sampler can draw, ``round(s_max * P)``. With the volume shape
            it bounds the length of every crop vector, which sets the normalising radius of the
            Vector Prediction targets (:func:`~vectorpose.pretext.vectors.normalising_radius`).
    """

    volume_shape: tuple[int, int, int]
    lo: tuple[int, int, int]
    side: int
    patch_size: int
    scale: float
    max_side: int

    def __post_init__(self):
        if not 1 <= self.side <= self.max_side:
            raise ValueError(f"crop side must lie in [1, max_side = {self.max_side}], got {self.side}")

    @property
    def hi(self) -> tuple[int, int, int]:
        return tuple(v + self.side for v in self.lo)  # type: ignore[return-value]

    @property
    def centre(self) -> np.ndarray:
        return np.asarray(self.lo, dtype=np.float64) + self.side / 2.0

    @property
    def padded(self) -> bool:
        """True when part of the crop lies outside the volume and was filled with background."""
        return any(l < 0 or h > s for l, h, s in zip(self.lo, self.hi, self.volume_shape))


def sample_crop_geometry(
    volume_shape: tuple[int, int, int],
    patch_size: int,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = (0.5, 1.5),
) -> CropGeometry:
    """Draw ``s ~ U[scale_range]``, ``L = round(s * P)`` and ``lo_i ~ UniformInt`` per axis.

    ``lo_i`` is uniform over ``[0, S_i - L]`` when the crop fits, and over ``[S_i - L, 0]`` when it
    does not (the crop then covers the whole axis).
    """
    if len(volume_shape) != 3 or min(volume_shape) < 1:
        raise ValueError(f"volume_shape must be three positive sizes, got {volume_shape}")
    if patch_size < 1:
        raise ValueError(f"patch_size must be positive, got {patch_size}")
    smin, smax = scale_range
    if not 0 < smin <= smax:
        raise ValueError(f"scale_range must satisfy 0 < min <= max, got {scale_range}")
    scale = float(rng.uniform(smin, smax))
    side = max(1, int(round(scale * patch_size)))
    max_side = max(1, int(round(smax * patch_size)))
    lo = []
    for s in volume_shape:
        a, b = origin_range(s, side)
        lo.append(int(rng.integers(a, b + 1)))
    return CropGeometry(tuple(int(s) for s in volume_shape), tuple(lo), side, patch_size, scale, max_side)  # type: ignore[arg-type]


def extract_crop(volume: np.ndarray, geometry: CropGeometry, pad_value: float) -> torch.Tensor:
    """Cut the crop out of ``volume`` and resize it trilinearly to ``P^3``.

    Args:
        volume: array of shape ``(X, Y, Z)`` or ``(C, X, Y, Z)`` (a memory map is read only where
            the crop lies).
        geometry: from :func:`sample_crop_geometry` for this volume's shape.
        pad_value: fills the part of the crop outside the volume.

    Returns:
        float32 tensor of shape ``(C, P, P, P)`` (``C = 1`` for a 3D volume). With
        ``align_corners=False`` the patch's extent ``[0, P)`` maps linearly onto ``[lo, hi)``.
    """
    vol = volume[None] if volume.ndim == 3 else volume
    if tuple(vol.shape[1:]) != geometry.volume_shape:
        raise ValueError(f"volume shape {tuple(vol.shape[1:])} differs from the geometry's {geometry.volume_shape}")
    crop = crop_box(vol, geometry.lo, (geometry.side,) * 3, pad_value, np.float32)
    patch = torch.from_numpy(crop)
    if geometry.side != geometry.patch_size:
        patch = F.interpolate(patch[None], size=(geometry.patch_size,) * 3, mode="trilinear", align_corners=False)[0]
    return patch
