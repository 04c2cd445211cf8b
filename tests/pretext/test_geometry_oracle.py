"""Geometry oracle: a volume whose voxels hold their own coordinates goes through the real crop,
padding, resize and re-orientation code; all 27 targets are then recomputed from the augmented
patch alone (which original corner each slot names included) and must equal the library's."""

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
    x, y, z = (float(c) + 0.0 for c in v)
    r = math.sqrt(x * x + y * y + z * z)
    if r < 1e-6:
        return (0.0, 0.0, 0.0)
    theta = math.acos(max(-1.0, min(1.0, z / r)))
    phi = math.atan2(y, x)
    if phi == -math.pi:
        phi = math.pi
    return (min(r / radius, 1.0), theta / math.pi, phi / math.pi)


def patch_to_volume_map(patch: np.ndarray):
    """Least-squares affine map from patch coordinates to volume coordinates, from a (3, P, P, P)
    coordinate patch. Voxels touched by padding (NaN) and the outer layer (where the resize clamps
    at the crop's border) are left out; everywhere else the map is exactly linear."""
    P = patch.shape[1]
    inner = np.zeros(patch.shape[1:], dtype=bool)
    inner[1:-1, 1:-1, 1:-1] = True
    valid = inner & np.isfinite(patch).all(axis=0)
    q = np.argwhere(valid).astype(np.float64) + 0.5  # voxel centres, patch corner convention
    design = np.concatenate([q, np.ones((len(q), 1))], axis=1)
    solution, *_ = np.linalg.lstsq(design, patch[:, valid].T.astype(np.float64), rcond=None)
    jac, offset = solution[:3].T, solution[3]  # volume = jac @ q + offset
    return jac, offset, P


def targets_from_patch(patch: np.ndarray, volume_shape, max_side: int) -> np.ndarray:
    """Recover the 27 targets from a (3, P, P, P) coordinate patch, the volume's shape and the
    sampler's largest crop side."""
    jac, offset, P = patch_to_volume_map(patch)
    units = jac / np.linalg.norm(jac, axis=0, keepdims=True)  # volume direction of each patch axis
    centre = jac @ np.full(3, P / 2) + offset
    slots = {}
    for k in range(8):
        corner = jac @ (np.array([k >> 2 & 1, k >> 1 & 1, k & 1]) * P) + offset
        bits = corner > centre  # which source corner this is: hi on the volume axes where set
        slots[1 + 4 * bits[0] + 2 * bits[1] + bits[2]] = corner
    assert sorted(slots) == list(range(1, 9))
    points = [centre] + [slots[s] for s in range(1, 9)]
    anchor = np.array([volume_shape[0] / 2, volume_shape[1] / 2, centre[2]])
    extent = [max(s / 2, max_side - s / 2) for s in volume_shape[:2]]
    radius = math.sqrt(extent[0] ** 2 + extent[1] ** 2 + (max_side / 2) ** 2)
    return np.array([encode_reference(units.T @ (anchor - p), radius) for p in points])


def circular_diff(a, b):
    d = np.abs(a - b)
    return np.minimum(d, 2 - d)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("volume_shape,patch,expect_padded", [((40, 44, 36), 16, False), ((60, 52, 70), 24, False),
                                                              ((18, 44, 14), 16, True)])
def test_targets_match_patch(seed, volume_shape, patch, expect_padded):
    coords = coordinate_volume(volume_shape)
    rng = np.random.default_rng(seed)
    orientations, padded = set(), 0
    for _ in range(40):
        geometry = sample_crop_geometry(volume_shape, patch, rng, (0.5, 1.5))
        padded += geometry.padded
        orientation = sample_orientation(rng)
        orientations.add(orientation)
        augmented = orientation.apply_to_patch(extract_crop(coords, geometry, pad_value=np.nan)).numpy()
        produced = vector_targets(geometry, orientation)
        expected = targets_from_patch(augmented, volume_shape, geometry.max_side)
        np.testing.assert_allclose(produced[:, :2], expected[:, :2], atol=2e-4)
        # phi: compare on the circle, where the azimuth is defined (off the polar axis)
        defined = (expected[:, 0] > 1e-3) & (np.sin(np.pi * expected[:, 1]) > 1e-3)
        assert circular_diff(produced[defined, 2], expected[defined, 2]).max(initial=0) < 2e-4
    assert len(orientations) > 10  # many distinct flips and rotations were exercised
    assert (padded > 10) if expect_padded else padded == 0


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
