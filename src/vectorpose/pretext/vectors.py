"""The nine VectorPOSE vectors and their normalised spherical encoding (Zhang et al., ISBI 2023).

For a crop with centre ``c`` and corners ``lo``/``hi`` in a volume of shape ``S``, the anchor is the
in-plane centre of the scan at the crop's own longitudinal level, ``a = (S_x/2, S_y/2, c_z)``, and
``v_k = a - p_k`` for the nine source points ``p_k``: the centre, then the eight corners.

Point order (fixed everywhere): index 0 is the centre; index ``1 + 4*bx + 2*by + bz`` is the corner
that takes ``hi`` on axis ``i`` where bit ``b_i`` is 1, else ``lo``. Corners are those *of the patch
the network sees*: after a flip or rotation, corner ``k`` is the patch's own corner ``k``, and its
vector is expressed in the patch's axes. The network can therefore name each corner from the image
alone, and a re-orientation acts on the targets exactly as on the image.

Encoding: polar axis = array axis 2 (the longitudinal axis in the unrotated frame).
``r = |v|``, ``theta = arccos(v_2 / r)`` in ``[0, pi]``, ``phi = atan2(v_1, v_0)`` in ``(-pi, pi]``;
``theta = phi = 0`` when ``r < eps``. Normalised ``(min(r / R, 1), theta / pi, phi / pi)`` with
``R = sqrt((S_x/2)^2 + (S_y/2)^2)``, the in-plane half diagonal. All lengths are in voxels.
"""

from __future__ import annotations

import numpy as np

from .crop_geometry import CropGeometry
from .orientation import Orientation

NUM_POINTS = 9
RADIUS_EPS = 1e-6


def source_points(geometry: CropGeometry) -> np.ndarray:
    """The crop's centre and 8 corners in volume coordinates, shape ``(9, 3)``."""
    lo = np.asarray(geometry.lo, dtype=np.float64)
    hi = np.asarray(geometry.hi, dtype=np.float64)
    bits = np.array([[(k >> 2) & 1, (k >> 1) & 1, k & 1] for k in range(8)], dtype=bool)
    corners = np.where(bits, hi, lo)
    return np.concatenate([geometry.centre[None], corners], axis=0)


def anchor_point(geometry: CropGeometry) -> np.ndarray:
    """``(S_x/2, S_y/2, c_z)``: on the body's central axis, level with the crop; shape ``(3,)``."""
    sx, sy, _ = geometry.volume_shape
    return np.array([sx / 2.0, sy / 2.0, geometry.centre[2]])


def crop_vectors(geometry: CropGeometry) -> np.ndarray:
    """``a - p_k`` for the nine source points, in the volume's axes; shape ``(9, 3)``."""
    return anchor_point(geometry)[None] - source_points(geometry)


def orient_vectors(vectors: np.ndarray, orientation: Orientation) -> np.ndarray:
    """Re-express the nine vectors for the re-oriented patch: shape ``(9, 3)`` in and out.

    The 8 corner vectors form a 2×2×2 grid indexed by ``(bx, by, bz)``; that grid is re-oriented
    exactly like the image (so corner ``k`` becomes the patch's own corner ``k``) and every vector's
    components are re-expressed in the patch's axes.
    """
    if vectors.shape != (NUM_POINTS, 3):
        raise ValueError(f"expected vectors of shape (9, 3), got {vectors.shape}")
    corner_grid = vectors[1:].reshape(2, 2, 2, 3)
    grid = orientation.apply_to_patch(np.moveaxis(corner_grid, -1, 0))
    corners = np.moveaxis(np.asarray(grid), 0, -1).reshape(8, 3)
    return orientation.apply_to_vectors(np.concatenate([vectors[:1], corners], axis=0))


def normalising_radius(volume_shape: tuple[int, int, int]) -> float:
    """``R = sqrt((S_x/2)^2 + (S_y/2)^2)``: the in-plane half diagonal of the volume."""
    return float(np.hypot(volume_shape[0] / 2.0, volume_shape[1] / 2.0))


def spherical_encoding(vectors: np.ndarray, radius: float) -> np.ndarray:
    """Normalised ``(r, theta, phi)`` of vectors of shape ``(..., 3)``; returns shape ``(..., 3)``.

    ``r`` in ``[0, 1]`` (clipped), ``theta`` in ``[0, 1]``, ``phi`` in ``(-1, 1]``.
    """
    if radius <= 0:
        raise ValueError(f"radius must be positive, got {radius}")
    v = np.asarray(vectors, dtype=np.float64)
    r = np.linalg.norm(v, axis=-1)
    small = r < RADIUS_EPS
    safe_r = np.where(small, 1.0, r)
    theta = np.where(small, 0.0, np.arccos(np.clip(v[..., 2] / safe_r, -1.0, 1.0)))
    # + 0.0 turns a negative zero into +0.0, so that atan2 gives +pi, not -pi, on the negative x axis
    phi = np.where(small, 0.0, np.arctan2(v[..., 1] + 0.0, v[..., 0]))
    return np.stack([np.minimum(r / radius, 1.0), theta / np.pi, phi / np.pi], axis=-1)


def vector_targets(geometry: CropGeometry, orientation: Orientation) -> np.ndarray:
    """The 27 regression targets of one crop: shape ``(9, 3)`` of ``(r̂, θ̂, φ̂)``, float32."""
    oriented = orient_vectors(crop_vectors(geometry), orientation)
    return spherical_encoding(oriented, normalising_radius(geometry.volume_shape)).astype(np.float32)
