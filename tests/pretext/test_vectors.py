"""The nine vectors and their spherical encoding against hand-computed cases and a scalar reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vectorpose.pretext.crop_geometry import CropGeometry
from vectorpose.pretext.orientation import IDENTITY, Orientation, flip_orientation, rot90_orientation
from vectorpose.pretext.vectors import (
    crop_vectors,
    normalising_radius,
    orient_vectors,
    source_points,
    spherical_encoding,
    vector_targets,
)


def reference_encoding(v, radius):
    x, y, z = (float(c) for c in v)
    r = math.sqrt(x * x + y * y + z * z)
    if r < 1e-6:
        return [0.0, 0.0, 0.0]
    phi = math.atan2(y, x)
    return [min(r / radius, 1.0), math.acos(z / r) / math.pi, (math.pi if phi == -math.pi else phi) / math.pi]


@pytest.mark.parametrize("seed", range(5))
def test_spherical_encoding_matches_scalar_reference(seed):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(scale=20, size=(50, 3))
    radius = float(rng.uniform(10, 40))
    expected = np.array([reference_encoding(v, radius) for v in vectors])
    np.testing.assert_allclose(spherical_encoding(vectors, radius), expected, atol=1e-12)


@pytest.mark.parametrize(
    "vector,expected",
    [
        ((0, 0, 0), (0, 0, 0)),
        ((0, 0, 5), (0.5, 0, 0)),  # along the polar axis: theta = 0
        ((0, 0, -5), (0.5, 1, 0)),  # against it: theta = pi
        ((5, 0, 0), (0.5, 0.5, 0)),
        ((0, 5, 0), (0.5, 0.5, 0.5)),
        ((-5, 0, 0), (0.5, 0.5, 1.0)),  # phi = +pi, never -pi
        ((-5, -0.0, 0), (0.5, 0.5, 1.0)),  # negative zero too
        ((0, -5, 0), (0.5, 0.5, -0.5)),
        ((30, 40, 0), (1.0, 0.5, math.atan2(40, 30) / math.pi)),  # r clipped at R
    ],
)
def test_spherical_encoding_hand_cases(vector, expected):
    np.testing.assert_allclose(spherical_encoding(np.array(vector, dtype=float), 10.0), expected, atol=1e-12)


def test_hand_computed_crop():
    g = CropGeometry(volume_shape=(40, 50, 30), lo=(4, 10, 6), side=10, patch_size=8, scale=1.25)
    points = source_points(g)
    np.testing.assert_array_equal(points[0], [9, 15, 11])
    np.testing.assert_array_equal(points[1], [4, 10, 6])  # corner 0: lo everywhere
    np.testing.assert_array_equal(points[1 + 4], [14, 10, 6])  # bit x set
    np.testing.assert_array_equal(points[1 + 2], [4, 20, 6])  # bit y set
    np.testing.assert_array_equal(points[1 + 1], [4, 10, 16])  # bit z set
    np.testing.assert_array_equal(points[8], [14, 20, 16])
    v = crop_vectors(g)
    np.testing.assert_array_equal(v[0], [20 - 9, 25 - 15, 0])  # anchor (20, 25, c_z)
    np.testing.assert_array_equal(v[8], [20 - 14, 25 - 20, 11 - 16])
    assert normalising_radius(g.volume_shape) == pytest.approx(math.hypot(20, 25))


def test_flip_negates_component_and_swaps_corners():
    g = CropGeometry(volume_shape=(40, 50, 30), lo=(4, 10, 6), side=10, patch_size=8, scale=1.25)
    v = crop_vectors(g)
    flipped = orient_vectors(v, flip_orientation(0))
    # patch corner 0 (low x) after an x flip was corner 4 (high x) before
    np.testing.assert_array_equal(flipped[1], v[1 + 4] * [-1, 1, 1])
    np.testing.assert_array_equal(flipped[0], v[0] * [-1, 1, 1])
    np.testing.assert_array_equal(orient_vectors(v, IDENTITY), v)


@pytest.mark.parametrize("k", range(4))
@pytest.mark.parametrize("axes", [(0, 1), (0, 2), (1, 2), (2, 0)])
def test_orientation_then_inverse_restores_vectors(k, axes):
    g = CropGeometry(volume_shape=(40, 50, 30), lo=(-3, 10, 6), side=12, patch_size=8, scale=1.5)
    v = crop_vectors(g)
    o = rot90_orientation(k, axes).then(flip_orientation(1))
    np.testing.assert_allclose(orient_vectors(orient_vectors(v, o), o.inverse()), v)


def test_targets_shape_and_range():
    g = CropGeometry(volume_shape=(40, 50, 30), lo=(4, 10, 6), side=10, patch_size=8, scale=1.25)
    t = vector_targets(g, Orientation((2, 0, 1), (True, False, True)))
    assert t.shape == (9, 3) and t.dtype == np.float32
    assert (t[:, :2] >= 0).all() and (t[:, :2] <= 1).all() and (np.abs(t[:, 2]) <= 1).all()
