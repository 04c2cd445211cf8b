"""Probe crops and labels, checked against NumPy: the 48 orientations, "up" by hand, labels on ramps."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vectorpose.pretext.orientation import IDENTITY, flip_orientation, rot90_orientation
from vectorpose.probe.crops import ORIENTATIONS, UP_NAMES, draw_case_crops, orientation_index, up_label


def signed_permutation_matrices() -> list[np.ndarray]:
    """Every 3×3 matrix with entries in {-1, 0, 1} and one non-zero per row and column (brute force)."""
    out = []
    for entries in itertools.product((-1, 0, 1), repeat=9):
        m = np.array(entries, dtype=float).reshape(3, 3)
        if (np.abs(m).sum(axis=0) == 1).all() and (np.abs(m).sum(axis=1) == 1).all():
            out.append(m)
    return out


def test_the_48_orientations_are_distinct_and_cover_every_signed_permutation():
    reference = signed_permutation_matrices()
    assert len(reference) == 48 == len(ORIENTATIONS)
    ours = {o.matrix.astype(int).tobytes() for o in ORIENTATIONS}
    assert ours == {m.astype(int).tobytes() for m in reference}
    # the index is a bijection onto 0..47
    assert [orientation_index(o) for o in ORIENTATIONS] == list(range(48))
    # and distinct indices act differently on an asymmetric cube
    cube = np.random.default_rng(0).random((4, 4, 4))
    images = {np.ascontiguousarray(o.apply_to_patch(cube)).tobytes() for o in ORIENTATIONS}
    assert len(images) == 48


def _up_by_gradient(volume: np.ndarray) -> int:
    """Which signed axis the values of a z-ramp increase along, read off the array itself."""
    for d in range(3):
        steps = np.diff(volume, axis=d)
        if np.all(steps > 0):
            return 2 * d
        if np.all(steps < 0):
            return 2 * d + 1
    raise AssertionError("no axis along which the ramp is monotone")


# (what NumPy does to the volume, the same as an Orientation, the "up" class worked out by hand)
CASES = [
    (lambda a: a, IDENTITY, "+z"),
    (lambda a: np.flip(a, 2), flip_orientation(2), "-z"),
    (lambda a: np.flip(a, 0), flip_orientation(0), "+z"),
    # np.rot90(k=1, axes=(0, 2)) reverses axis 2, then swaps axes 0 and 2: +z becomes -x
    (lambda a: np.rot90(a, 1, (0, 2)), rot90_orientation(1, (0, 2)), "-x"),
    (lambda a: np.rot90(a, 3, (0, 2)), rot90_orientation(3, (0, 2)), "+x"),
    # rot90 in the (1, 2) plane: k = 1 reverses z then swaps y and z: +z becomes -y
    (lambda a: np.rot90(a, 1, (1, 2)), rot90_orientation(1, (1, 2)), "-y"),
    (lambda a: np.rot90(a, 2, (1, 2)), rot90_orientation(2, (1, 2)), "-z"),
    # a rotation in the (0, 1) plane leaves z alone, a flip of z after it reverses it
    (lambda a: np.flip(np.rot90(a, 1, (0, 1)), 2), rot90_orientation(1, (0, 1)).then(flip_orientation(2)), "-z"),
    (lambda a: np.flip(np.rot90(a, 1, (2, 1)), 1), rot90_orientation(1, (2, 1)).then(flip_orientation(1)), "-y"),
]


@pytest.mark.parametrize("numpy_op, orientation, expected", CASES)
def test_up_label_by_hand(numpy_op, orientation, expected):
    ramp = np.broadcast_to(np.arange(5.0), (3, 4, 5)).copy()  # values grow along array axis 2 only
    moved = numpy_op(ramp)
    np.testing.assert_array_equal(orientation.apply_to_patch(ramp), moved)  # the Orientation is that NumPy op
    assert UP_NAMES[up_label(orientation)] == expected
    assert up_label(orientation) == _up_by_gradient(moved)


def test_up_label_agrees_with_the_gradient_for_all_48():
    ramp = np.broadcast_to(np.arange(4.0), (4, 4, 4)).copy()
    for o in ORIENTATIONS:
        assert up_label(o) == _up_by_gradient(np.asarray(o.apply_to_patch(ramp)))


def test_crop_labels_match_what_the_crops_show():
    """Canonical crops of an x-ramp have the mean x of their centre; re-oriented crops of a z-ramp grow along "up"."""
    shape, n, patch = (40, 36, 32), 12, 8
    x_ramp = np.broadcast_to(np.arange(shape[0], dtype=np.float32)[:, None, None], shape).copy()
    crops = draw_case_crops(x_ramp, (0.0, float(shape[0] - 1)), "a", n, patch, (1.0, 1.5), np.random.default_rng(0))
    assert crops.canonical.shape == crops.oriented.shape == (n, 1, patch, patch, patch)
    assert crops.position.shape == (n, 3) and crops.scale.shape == (n,) and list(crops.case) == ["a"] * n
    assert ((crops.position > 0) & (crops.position < 1)).all()
    assert ((crops.scale >= 1.0) & (crops.scale <= 1.5)).all()
    # voxel i holds value i and covers [i, i + 1): the mean value of a crop is its centre minus 0.5
    centre_x = crops.position[:, 0] * shape[0]
    np.testing.assert_allclose(crops.canonical.mean(dim=(1, 2, 3, 4)).numpy() + 0.5, centre_x, atol=0.05)

    z_ramp = np.broadcast_to(np.arange(shape[2], dtype=np.float32), shape).copy()
    crops = draw_case_crops(z_ramp, (0.0, float(shape[2] - 1)), "b", 40, patch, (1.0, 1.5), np.random.default_rng(1))
    for patch_values, up, index in zip(crops.oriented[:, 0].numpy(), crops.up, crops.orientation):
        assert up == _up_by_gradient(patch_values)
        assert up_label(ORIENTATIONS[index]) == up
    assert len(set(crops.orientation.tolist())) > 10  # the pretext sampler reaches many of the 48


def test_crops_are_reproducible_from_the_generator():
    vol = np.random.default_rng(0).random((20, 20, 20)).astype(np.float32)
    a = draw_case_crops(vol, (0.0, 1.0), "c", 3, 8, (0.5, 1.5), np.random.default_rng(7))
    b = draw_case_crops(vol, (0.0, 1.0), "c", 3, 8, (0.5, 1.5), np.random.default_rng(7))
    assert (a.canonical == b.canonical).all() and (a.oriented == b.oriented).all()
    np.testing.assert_array_equal(a.position, b.position)
    np.testing.assert_array_equal(a.orientation, b.orientation)
    with pytest.raises(ValueError, match="positive"):
        draw_case_crops(vol, (0.0, 1.0), "c", 0, 8, (0.5, 1.5), np.random.default_rng(7))
