"""The nine vectors and their spherical encoding against hand-computed cases and a scalar reference."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
from conftest import SHARED_DATA

from vectorpose.pretext.crop_geometry import CropGeometry, sample_crop_geometry
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


GEOMETRY = CropGeometry(volume_shape=(40, 50, 30), lo=(4, 10, 6), side=10, patch_size=8, scale=1.25, max_side=12)
# Worked by hand for GEOMETRY: centre (9, 15, 11), anchor (20, 25, 11); a corner takes x in {4, 14},
# y in {10, 20}, z in {6, 16}, so its vector has x in {16, 6}, y in {15, 5}, z in {5, -5}.
HAND_VECTORS = [(11, 10, 0), (16, 15, 5), (16, 15, -5), (16, 5, 5), (16, 5, -5), (6, 15, 5), (6, 15, -5), (6, 5, 5), (6, 5, -5)]
# R: in-plane extents max(20, 12 - 20) = 20 and max(25, 12 - 25) = 25, longitudinal 12 / 2 = 6
HAND_RADIUS = math.sqrt(20**2 + 25**2 + 6**2)


def test_hand_computed_crop():
    points = source_points(GEOMETRY)
    np.testing.assert_array_equal(points[0], [9, 15, 11])
    np.testing.assert_array_equal(points[1], [4, 10, 6])  # corner 0: lo everywhere
    np.testing.assert_array_equal(points[1 + 4], [14, 10, 6])  # bit x set
    np.testing.assert_array_equal(points[1 + 2], [4, 20, 6])  # bit y set
    np.testing.assert_array_equal(points[1 + 1], [4, 10, 16])  # bit z set
    np.testing.assert_array_equal(points[8], [14, 20, 16])
    np.testing.assert_array_equal(crop_vectors(GEOMETRY), HAND_VECTORS)
    assert normalising_radius(GEOMETRY.volume_shape, GEOMETRY.max_side) == pytest.approx(HAND_RADIUS)


def hand_targets(vectors):
    out = []
    for x, y, z in vectors:
        r = math.sqrt(x * x + y * y + z * z)
        phi = math.atan2(y, x) if (x, y) != (0, 0) else 0.0
        out.append((r / HAND_RADIUS, math.acos(z / r) / math.pi, phi / math.pi))
    return np.array(out)


def test_hand_computed_targets_after_a_quarter_turn():
    # np.rot90(a, 1, axes=(0, 1)) is a[:, ::-1].swapaxes(0, 1): patch x runs against volume y and
    # patch y along volume x, so (x, y, z) becomes (-y, x, z); the slots keep their source corners
    turned = [(-y, x, z) for x, y, z in HAND_VECTORS]
    np.testing.assert_allclose(vector_targets(GEOMETRY, rot90_orientation(1, (0, 1))), hand_targets(turned), atol=1e-6)


def test_hand_computed_targets_after_a_longitudinal_flip():
    flipped = [(x, y, -z) for x, y, z in HAND_VECTORS]
    np.testing.assert_allclose(vector_targets(GEOMETRY, flip_orientation(2)), hand_targets(flipped), atol=1e-6)


@pytest.mark.parametrize("axis", range(3))
def test_a_flip_of_every_axis_changes_the_targets(axis):
    identity = vector_targets(GEOMETRY, IDENTITY)
    flipped = vector_targets(GEOMETRY, flip_orientation(axis))
    assert np.abs(flipped - identity).max() > 0.1
    # the slots still name the source corners: only the flipped component changes sign
    expected = orient_vectors(crop_vectors(GEOMETRY), IDENTITY) * np.where(np.arange(3) == axis, -1, 1)
    np.testing.assert_array_equal(orient_vectors(crop_vectors(GEOMETRY), flip_orientation(axis)), expected)


def test_every_symmetry_of_the_cube_gives_its_own_targets():
    orientations = {rot90_orientation(k, plane).then(flip_orientation(a)) for k in range(4) for plane in [(0, 1), (0, 2), (1, 2)]
                    for a in range(3)} | {rot90_orientation(k, plane) for k in range(4) for plane in [(0, 1), (0, 2), (1, 2)]}
    targets = {vector_targets(GEOMETRY, o).round(5).tobytes() for o in orientations}
    assert len(targets) == len(orientations)


def test_sign_of_zero_does_not_matter():
    vectors = np.array([[0.0, 0.0, 5.0], [-0.0, -0.0, 5.0], [-4.0, 0.0, 1.0], [-4.0, -0.0, 1.0], [0.0, -0.0, 0.0]])
    encoded = spherical_encoding(vectors, 10.0)
    np.testing.assert_array_equal(encoded[0], encoded[1])
    np.testing.assert_array_equal(encoded[2], encoded[3])
    np.testing.assert_array_equal(encoded[4], [0, 0, 0])


@pytest.mark.parametrize("k", range(4))
@pytest.mark.parametrize("axes", [(0, 1), (0, 2), (1, 2), (2, 0)])
def test_orientation_then_inverse_restores_vectors(k, axes):
    g = CropGeometry(volume_shape=(40, 50, 30), lo=(-3, 10, 6), side=12, patch_size=8, scale=1.5, max_side=12)
    v = crop_vectors(g)
    o = rot90_orientation(k, axes).then(flip_orientation(1))
    np.testing.assert_allclose(orient_vectors(orient_vectors(v, o), o.inverse()), v)


def test_targets_shape_and_range():
    t = vector_targets(GEOMETRY, Orientation((2, 0, 1), (True, False, True)))
    assert t.shape == (9, 3) and t.dtype == np.float32
    assert (t[:, :2] >= 0).all() and (t[:, :2] <= 1).all() and (np.abs(t[:, 2]) <= 1).all()


def brute_force_radius(volume_shape, max_side):
    """The longest vector over every crop side and every position the sampler allows."""
    best = 0.0
    for side in range(1, max_side + 1):
        extremes = [sorted((0, s - side)) for s in volume_shape]  # vectors are longest at the extreme positions
        for lx in extremes[0]:
            for ly in extremes[1]:
                g = CropGeometry(tuple(volume_shape), (lx, ly, extremes[2][0]), side, side, 1.0, max_side)
                best = max(best, float(np.linalg.norm(crop_vectors(g), axis=-1).max()))
    return best


@pytest.mark.parametrize("volume_shape,max_side", [((35, 50, 35), 48), ((122, 101, 30), 48), ((10, 60, 8), 24), ((300, 260, 200), 144)])
def test_radius_is_the_longest_vector_the_sampler_can_make(volume_shape, max_side):
    assert normalising_radius(volume_shape, max_side) == pytest.approx(brute_force_radius(volume_shape, max_side))


def clipped_share(volume_shapes, patch_size=32, scale_range=(0.5, 1.5), crops_per_volume=200):
    """Share of r̂ targets that reach the clip at 1, and their 99th percentile, over sampled crops."""
    rng = np.random.default_rng(0)
    r_hat = []
    for shape in volume_shapes:
        for _ in range(crops_per_volume):
            g = sample_crop_geometry(shape, patch_size, rng, scale_range)
            r_hat.append(np.linalg.norm(crop_vectors(g), axis=-1) / normalising_radius(shape, g.max_side))
    r_hat = np.concatenate(r_hat)
    return float((r_hat >= 1.0).mean()), float(np.quantile(r_hat, 0.99))


def test_few_targets_clipped_on_real_and_body_sized_volumes(hippocampus):
    hippocampus_shapes = [nib.load(p).shape for p in sorted((hippocampus / "imagesTr").glob("*.nii.gz"))[:60]]
    ct_shape = nib.load(SHARED_DATA / "ct_example" / "example_ct_sm.nii.gz").shape
    # default settings: patch 32, scales 0.5-1.5; a BTCV-sized body as the third case
    for shapes in (hippocampus_shapes, [ct_shape], [(257, 257, 150)]):
        share, q99 = clipped_share(shapes)
        assert share <= 0.01
        assert q99 > 0.5  # and the radius is not so large that the targets bunch up near 0
