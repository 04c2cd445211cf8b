"""Signed axis permutations against NumPy's own flip and rot90."""

from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest
import torch

from vectorpose.pretext.orientation import (
    FACE_TURNS, IDENTITY, Orientation, flip_orientation, rot90_orientation, sample_orientation,
)

ARRAY = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # a channel axis, then X, Y, Z of distinct sizes


@pytest.mark.parametrize("k", range(-1, 5))
@pytest.mark.parametrize("axes", list(itertools.permutations(range(3), 2)))
def test_rot90_matches_numpy(k, axes):
    expected = np.rot90(ARRAY, k, axes=(1 + axes[0], 1 + axes[1]))
    np.testing.assert_array_equal(rot90_orientation(k, axes).apply_to_patch(ARRAY), expected)


@pytest.mark.parametrize("axis", range(3))
def test_flip_matches_numpy(axis):
    np.testing.assert_array_equal(flip_orientation(axis).apply_to_patch(ARRAY), np.flip(ARRAY, 1 + axis))


def all_orientations():
    return [Orientation(p, f) for p in itertools.permutations(range(3)) for f in itertools.product([False, True], repeat=3)]


@pytest.mark.parametrize("o", all_orientations())
def test_composition_inverse_and_torch(o):
    other = Orientation((1, 2, 0), (True, False, False))
    composed = o.then(other).apply_to_patch(ARRAY)
    np.testing.assert_array_equal(composed, other.apply_to_patch(o.apply_to_patch(ARRAY)))
    np.testing.assert_array_equal(o.inverse().apply_to_patch(o.apply_to_patch(ARRAY)), ARRAY)
    assert o.then(o.inverse()) == IDENTITY
    np.testing.assert_array_equal(o.apply_to_patch(torch.from_numpy(ARRAY)).numpy(), o.apply_to_patch(ARRAY))
    v = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(o.apply_to_vectors(v), o.matrix @ v)


@pytest.mark.parametrize("o", all_orientations())
def test_vectors_move_like_the_image(o):
    # a displacement between two voxels of the patch transforms exactly as the voxels do
    P = 6
    grid = np.zeros((P, P, P))
    a, b = np.array([1, 4, 2]), np.array([5, 0, 3])
    grid[tuple(a)], grid[tuple(b)] = 1, 2
    out = o.apply_to_patch(grid)
    a2, b2 = np.argwhere(out == 1)[0], np.argwhere(out == 2)[0]
    np.testing.assert_array_equal(o.apply_to_vectors((b - a).astype(float)), b2 - a2)


def _is_rotation(o: Orientation) -> bool:
    return np.linalg.det(o.matrix) > 0


def test_spin_then_face_names_each_rotation_once():
    # every rotation of the cube, found independently as the signed permutation matrices of det +1
    all_rotations = {
        Orientation(perm, flip)
        for perm in itertools.permutations(range(3))
        for flip in itertools.product((False, True), repeat=3)
        if _is_rotation(Orientation(perm, flip))
    }
    assert len(all_rotations) == 24
    drawn = [rot90_orientation(spin, (1, 2)).then(rot90_orientation(turns, plane))
             for spin in range(4) for turns, plane in FACE_TURNS]
    assert len(drawn) == 24 and set(drawn) == all_rotations


def test_sampling_is_uniform_over_the_48_symmetries():
    rng = np.random.default_rng(0)
    n = 48_000
    counts = collections.Counter(sample_orientation(rng) for _ in range(n))
    assert len(counts) == 48
    # each count is Binomial(n, 1/48): mean 1000, sd 31; 5 sd either side
    assert all(845 < c < 1155 for c in counts.values()), sorted(counts.values())
    assert sample_orientation(rng, flip_prob=0.0, rotate=False) == IDENTITY
    assert all(_is_rotation(sample_orientation(rng, flip_prob=0.0)) for _ in range(200))


@pytest.mark.parametrize("bad", [dict(perm=(0, 0, 1)), dict(perm=(0, 1, 3)), dict(flip=(True,))])
def test_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        Orientation(**bad)
