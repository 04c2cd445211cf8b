"""The nine VectorPOSE vectors and their normalised spherical encoding (Zhang et al., ISBI 2023).

For a crop with centre ``c`` and corners ``lo``/``hi`` in a volume of shape ``S``, the anchor is the
in-plane centre of the scan at the crop's own longitudinal level, ``a = (S_x/2, S_y/2, c_z)``, and
``v_k = a - p_k`` for the nine source points ``p_k``: the centre, then the eight corners.

Slot order (fixed everywhere): slot 0 is the centre; slot ``1 + 4*bx + 2*by + bz`` is the corner of
the *source crop*, before any flip or rotation, that takes ``hi`` on axis ``i`` where bit ``b_i`` is
1, else ``lo``. A flip or rotation never renames the slots: it only re-expresses every vector in the
re-oriented patch's axes. Wherever the network sees a given corner of the anatomy, it must name it
and point from it to the body axis, so it has to recognise the patch's orientation from its content
(the "O" of POSE). A flip of any axis, the longitudinal one included, changes the targets.

Encoding: polar axis = array axis 2 of the patch (the longitudinal axis when the patch is not
rotated). ``r = |v|``, ``theta = arccos(v_2 / r)`` in ``[0, pi]``, ``phi = atan2(v_1, v_0)`` in
``(-pi, pi]``; ``theta = phi = 0`` when ``r < eps``; a signed zero never decides ``phi``. Normalised
``(r / R, theta / pi, phi / pi)``, where ``R`` (:func:`normalising_radius`) is the largest vector
length the crop sampler can produce for this volume, so ``r / R`` lies in ``[0, 1]`` without
clipping. ``phi`` is meaningless where ``sin theta`` is near 0; the loss masks it there
(:func:`~vectorpose.losses.vector.vector_loss`). All lengths are in voxels of the volume.
"""

from __future__ import annotations

import numpy as np

from .crop_geometry import CropGeometry
from .orientation import Orientation

NUM_POINTS = 9
RADIUS_EPS = 1e-6


def source_points(geometry: CropGeometry) -> np.ndarray:
    """The crop's centre and 8 corners in volume coordinates, in slot order; shape ``(9, 3)``."""
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
    """Express the nine vectors in the re-oriented patch's axes, slots unchanged; shape ``(9, 3)``."""
    if vectors.shape != (NUM_POINTS, 3):
        raise ValueError(f"expected vectors of shape (9, 3), got {vectors.shape}")
    return orientation.apply_to_vectors(vectors)


def normalising_radius(volume_shape: tuple[int, int, int], max_side: int) -> float:
    """The largest length of any vector of any crop of side at most ``max_side``.

    Along an in-plane axis of size ``S``, a crop that fits puts its corners in ``[0, S]``, at most
    ``S/2`` from the anchor; a larger crop (side ``L > S``, covering the axis) puts them in
    ``[S - L, L]``, at most ``L - S/2`` away. Along the longitudinal axis the anchor is level with
    the crop's centre, so the offset is at most ``L/2``. Corners take these extremes together, so

    ``R = sqrt(m_x^2 + m_y^2 + (L_max/2)^2)`` with ``m_i = max(S_i/2, L_max - S_i/2)``

    is attained and never exceeded: ``r / R`` spans ``[0, 1]`` and no target is clipped.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be positive, got {max_side}")
    mx, my = (max(s / 2.0, max_side - s / 2.0) for s in volume_shape[:2])
    return float(np.sqrt(mx**2 + my**2 + (max_side / 2.0) ** 2))


def spherical_encoding(vectors: np.ndarray, radius: float) -> np.ndarray:
    """Normalised ``(r, theta, phi)`` of vectors of shape ``(..., 3)``; returns shape ``(..., 3)``.

    ``r`` in ``[0, 1]`` (clipped, for vectors longer than ``radius``), ``theta`` in ``[0, 1]``,
    ``phi`` in ``(-1, 1]``.
    """
    if radius <= 0:
        raise ValueError(f"radius must be positive, got {radius}")
    # + 0.0 turns a negative zero (a flipped zero component) into +0.0: the sign of zero must not
    # decide between phi = 0 and phi = pi on the polar axis, nor between +pi and -pi off it
    v = np.asarray(vectors, dtype=np.float64) + 0.0
    r = np.linalg.norm(v, axis=-1)
    small = r < RADIUS_EPS
    safe_r = np.where(small, 1.0, r)
    theta = np.where(small, 0.0, np.arccos(np.clip(v[..., 2] / safe_r, -1.0, 1.0)))
    phi = np.where(small, 0.0, np.arctan2(v[..., 1], v[..., 0]))
    return np.stack([np.minimum(r / radius, 1.0), theta / np.pi, phi / np.pi], axis=-1)


def vector_targets(geometry: CropGeometry, orientation: Orientation) -> np.ndarray:
    """The 27 regression targets of one crop: shape ``(9, 3)`` of ``(r̂, θ̂, φ̂)``, float32."""
    oriented = orient_vectors(crop_vectors(geometry), orientation)
    radius = normalising_radius(geometry.volume_shape, geometry.max_side)
    return spherical_encoding(oriented, radius).astype(np.float32)
