"""Geometry oracle: a volume whose voxels hold their own coordinates goes through the real crop,
resize and re-orientation code; all 27 targets are then recomputed from the augmented patch alone
and must equal the targets the library produced."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vectorpose.pretext.crop_geometry import extract_crop, sample_crop_geometry
from vectorpose.pretext.orientation import sample_orientation
from vectorpose.pretext.sample import PretextConfig, make_pretext_sample
from vectorpose.pretext.vectors import vector_targets


def coordinate_volume(shape):
    # corner convention: voxel i covers [i, i+1), its centre is i + 0.5
    return np.stack(np.meshgrid(*[np.arange(s) + 0.5 for s in shape], indexing="ij")).astype(np.float32)


def encode_reference(v, radius):
    x, y, z = (float(c) for c in v)
    r = math.sqrt(x * x + y * y + z * z)
    if r < 1e-6:
        return (0.0, 0.0, 0.0)
    theta = math.acos(max(-1.0, min(1.0, z / r)))
    phi = math.atan2(y, x)
    if phi == -math.pi:
        phi = math.pi
    return (min(r / radius, 1.0), theta / math.pi, phi / math.pi)


def targets_from_patch(patch: np.ndarray, volume_shape) -> np.ndarray:
    """Recover the 27 targets from a (3, P, P, P) coordinate patch and the volume's shape."""
    P = patch.shape[1]
    m = P // 2
    centre_voxel = patch[:, m, m, m].astype(np.float64)
    jac = np.zeros((3, 3))
    for a in range(3):
        idx = [m, m, m]
        idx[a] = m - 1
        jac[:, a] = centre_voxel - patch[(slice(None), *idx)]
    units = jac / np.linalg.norm(jac, axis=0, keepdims=True)

    def world(q):  # patch coordinate (corner convention) -> volume coordinate
        return centre_voxel + jac @ (np.asarray(q, dtype=np.float64) - (m + 0.5))

    points = [world([P / 2] * 3)] + [world([(k >> 2 & 1) * P, (k >> 1 & 1) * P, (k & 1) * P]) for k in range(8)]
    anchor = np.array([volume_shape[0] / 2, volume_shape[1] / 2, points[0][2]])
    radius = math.hypot(volume_shape[0] / 2, volume_shape[1] / 2)
    return np.array([encode_reference(units.T @ (anchor - p), radius) for p in points])


def circular_diff(a, b):
    d = np.abs(a - b)
    return np.minimum(d, 2 - d)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("volume_shape,patch", [((40, 44, 36), 16), ((60, 52, 70), 24)])
def test_targets_match_patch(seed, volume_shape, patch):
    coords = coordinate_volume(volume_shape)
    rng = np.random.default_rng(seed)
    orientations = set()
    for _ in range(40):
        geometry = sample_crop_geometry(volume_shape, patch, rng, (0.5, 1.5))
        assert not geometry.padded
        orientation = sample_orientation(rng)
        orientations.add(orientation)
        augmented = orientation.apply_to_patch(extract_crop(coords, geometry, pad_value=0.0)).numpy()
        produced = vector_targets(geometry, orientation)
        expected = targets_from_patch(augmented, volume_shape)
        np.testing.assert_allclose(produced[:, :2], expected[:, :2], atol=2e-4)
        # phi: compare on the circle; where r is ~0 or theta is 0 / 1 the azimuth is undefined
        defined = (expected[:, 0] > 1e-3) & (expected[:, 1] > 1e-4) & (expected[:, 1] < 1 - 1e-4)
        assert circular_diff(produced[defined, 2], expected[defined, 2]).max(initial=0) < 2e-4
    assert len(orientations) > 10  # many distinct flips and rotations were exercised


def test_pipeline_uses_the_same_targets():
    # make_pretext_sample draws geometry and orientation first: the same rng gives the same targets
    volume = np.random.default_rng(0).random((40, 44, 36)).astype(np.float32)
    for seed in range(10):
        sample = make_pretext_sample(volume, (0.0, 1.0), np.random.default_rng(seed), PretextConfig(patch_size=16))
        np.testing.assert_array_equal(sample.vectors.numpy(), vector_targets(sample.geometry, sample.orientation))
        rng = np.random.default_rng(seed)
        geometry = sample_crop_geometry(volume.shape, 16, rng, (0.5, 1.5))
        assert geometry == sample.geometry
        assert sample_orientation(rng) == sample.orientation
