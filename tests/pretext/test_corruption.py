"""Tests for the Models-Genesis-style corruptions in vectorpose.pretext.corruption."""

from bisect import bisect_right

import numpy as np
import pytest
from scipy import ndimage

from vectorpose.pretext.corruption import (
    CorruptionConfig,
    bezier_curve,
    bezier_intensity,
    corrupt,
    inpaint,
    local_shuffle,
    outpaint,
)

SHAPES = [(16, 16, 16), (12, 20, 8), (4, 5, 6), (32, 24, 40)]
ALL_ON = CorruptionConfig(shuffle_prob=1.0, intensity_prob=1.0, paint_prob=1.0, inpaint_fraction=0.5)
ALL_OFF = CorruptionConfig(shuffle_prob=0.0, intensity_prob=0.0, paint_prob=0.0, inpaint_fraction=0.0)

FUNCTIONS = {
    "local_shuffle": lambda p, rng: local_shuffle(p, rng, max_window=3),
    "bezier_intensity": bezier_intensity,
    "inpaint": inpaint,
    "outpaint": outpaint,
    "corrupt": lambda p, rng: corrupt(p, rng, ALL_ON),
}


def make_patch(shape, seed=123):
    """Random patch with (almost surely) distinct values, hitting both ends of [0, 1]."""
    patch = np.random.default_rng(seed).random(shape, dtype=np.float32)
    patch.flat[0], patch.flat[-1] = 0.0, 1.0
    return patch


def bounding_box(mask):
    coords = np.argwhere(mask)
    return tuple(slice(lo, hi + 1) for lo, hi in zip(coords.min(axis=0), coords.max(axis=0)))


# ---------------------------------------------------------------- generic properties


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", FUNCTIONS)
def test_shape_dtype_range_and_input_untouched(name, shape):
    patch = make_patch(shape)
    original = patch.copy()
    out = FUNCTIONS[name](patch, np.random.default_rng(0))
    assert out.shape == shape
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out is not patch and not np.shares_memory(out, patch)
    np.testing.assert_array_equal(patch, original)


@pytest.mark.parametrize("shape", [(16, 16, 16), (12, 20, 8)])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_seeded_reproducibility(name, shape):
    patch = make_patch(shape)
    fn = FUNCTIONS[name]
    first = fn(patch, np.random.default_rng(7))
    np.testing.assert_array_equal(first, fn(patch, np.random.default_rng(7)))
    assert not np.array_equal(first, fn(patch, np.random.default_rng(8)))


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 4, 4), np.float32),
            np.full((4, 4, 4), 1.01, np.float32), np.full((4, 4, 4), -0.5, np.float32),
            np.full((4, 4, 4), np.nan, np.float32)],
    ids=["2d", "4d", "above_one", "negative", "nan"],
)
def test_rejects_bad_patches(name, bad):
    with pytest.raises(ValueError, match="patch"):
        FUNCTIONS[name](bad, np.random.default_rng(0))


def test_tolerates_rounding_outside_unit_range():
    patch = make_patch((8, 8, 8))
    patch.flat[0], patch.flat[-1] = -5e-7, 1.0 + 5e-7
    out = corrupt(patch, np.random.default_rng(0), ALL_ON)
    assert out.min() >= 0.0 and out.max() <= 1.0


# ---------------------------------------------------------------- local_shuffle


@pytest.mark.parametrize("shape", [(16, 16, 16), (12, 20, 8), (32, 24, 40)])
@pytest.mark.parametrize("seed", range(5))
def test_local_shuffle_single_window_is_permutation(shape, seed):
    patch = make_patch(shape)
    max_window = 4
    out = local_shuffle(patch, np.random.default_rng(seed), num_windows=1, max_window=max_window)
    changed = out != patch
    if not changed.any():  # a 1x1x1 window or identity permutation: nothing to check
        return
    box = bounding_box(changed)
    assert all(s.stop - s.start <= max_window for s in box)
    # Fixed points of a permutation drop out; the moved voxels permute among themselves.
    np.testing.assert_array_equal(np.sort(out[changed]), np.sort(patch[changed]))
    np.testing.assert_array_equal(np.sort(out[box].ravel()), np.sort(patch[box].ravel()))
    np.testing.assert_array_equal(out[~changed], patch[~changed])


def test_local_shuffle_single_window_changes_something_for_some_seed():
    patch = make_patch((16, 16, 16))
    assert any(
        not np.array_equal(local_shuffle(patch, np.random.default_rng(s), 1, 4), patch)
        for s in range(10)
    )


def test_local_shuffle_few_windows_on_big_patch_is_global_permutation():
    # Five windows of at most 4^3 voxels in 48^3 are disjoint for this seed, so the
    # whole output is a permutation of the input, and the changes form separate boxes.
    patch = make_patch((48, 48, 48))
    out = local_shuffle(patch, np.random.default_rng(3), num_windows=5, max_window=4)
    np.testing.assert_array_equal(np.sort(out.ravel()), np.sort(patch.ravel()))
    labels, count = ndimage.label(out != patch, structure=np.ones((3, 3, 3)))
    assert 1 <= count <= 5
    for box in ndimage.find_objects(labels):
        assert all(s.stop - s.start <= 4 for s in box)
        np.testing.assert_array_equal(np.sort(out[box].ravel()), np.sort(patch[box].ravel()))


def test_local_shuffle_default_windows_only_rearrange_original_values():
    patch = make_patch((32, 32, 32))
    out = local_shuffle(patch, np.random.default_rng(0))
    # Windows read from the original, so even overlapping ones only copy input values.
    assert np.isin(out, patch).all()
    changed_fraction = (out != patch).mean()
    assert 0.2 < changed_fraction < 0.9


def test_local_shuffle_zero_windows_is_identity():
    patch = make_patch((8, 8, 8))
    np.testing.assert_array_equal(local_shuffle(patch, np.random.default_rng(0), num_windows=0), patch)


@pytest.mark.parametrize("kwargs, word", [({"num_windows": -1}, "num_windows"), ({"max_window": 0}, "max_window")])
def test_local_shuffle_rejects_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        local_shuffle(make_patch((8, 8, 8)), np.random.default_rng(0), **kwargs)


# ---------------------------------------------------------------- bezier_intensity


def reference_bezier_map(values, controls_x, controls_y, invert, num=1001):
    """Scalar reference: sample the cubic Bezier in a loop, interpolate each value by hand."""
    xs, ys = [], []
    for i in range(num):
        t = i / (num - 1)
        s = 1.0 - t
        weights = (s**3, 3 * s * s * t, 3 * s * t * t, t**3)
        xs.append(sum(w * c for w, c in zip(weights, controls_x)))
        ys.append(sum(w * c for w, c in zip(weights, controls_y)))
    if invert:
        ys = [1.0 - y for y in ys]
    mapped = []
    for v in values:
        j = bisect_right(xs, v) - 1
        if j >= num - 1:
            mapped.append(ys[-1])
        else:
            frac = (v - xs[j]) / (xs[j + 1] - xs[j])
            mapped.append(ys[j] + frac * (ys[j + 1] - ys[j]))
    return np.array(mapped)


@pytest.mark.parametrize("shape", [(6, 7, 8), (4, 4, 4)])
@pytest.mark.parametrize("invert", [False, True, None])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bezier_intensity_matches_scalar_reference(shape, invert, seed):
    patch = make_patch(shape, seed=seed + 10)
    out = bezier_intensity(patch, np.random.default_rng(seed), invert=invert)
    # Reproduce the documented draw order: sorted x controls, sorted y controls, inversion.
    rng = np.random.default_rng(seed)
    inner_x, inner_y = np.sort(rng.random(2)), np.sort(rng.random(2))
    flip = bool(rng.random() < 0.5) if invert is None else invert
    expected = reference_bezier_map(
        patch.astype(np.float64).ravel(), [0.0, *inner_x, 1.0], [0.0, *inner_y, 1.0], flip
    )
    np.testing.assert_allclose(out.ravel(), expected, atol=1e-6)


def test_bezier_curve_endpoints_and_shape():
    x, y = bezier_curve([0.0, 0.3, 0.6, 1.0], [0.0, 0.9, 0.95, 1.0], num=11)
    assert x.shape == y.shape == (11,)
    assert (x[0], y[0], x[-1], y[-1]) == (0.0, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        bezier_curve([0.0, 1.0], [0.0, 1.0])


@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize("seed", range(8))
def test_bezier_intensity_is_monotone_with_fixed_endpoints(invert, seed):
    patch = make_patch((10, 12, 14), seed=seed)
    out = bezier_intensity(patch, np.random.default_rng(seed), invert=invert)
    order = np.argsort(patch.ravel(), kind="stable")
    steps = np.diff(out.ravel()[order])
    assert (steps >= 0).all() if not invert else (steps <= 0).all()
    low, high = (0.0, 1.0) if not invert else (1.0, 0.0)
    assert out.flat[0] == pytest.approx(low, abs=1e-6)  # input 0
    assert out.flat[-1] == pytest.approx(high, abs=1e-6)  # input 1


def test_bezier_intensity_inverts_about_half_the_time():
    patch = make_patch((4, 4, 4))
    flips = [bezier_intensity(patch, np.random.default_rng(s)).flat[0] > 0.5 for s in range(200)]
    assert 60 < sum(flips) < 140


# ---------------------------------------------------------------- in-/out-painting


@pytest.mark.parametrize("shape", [(18, 18, 18), (12, 24, 30), (36, 12, 18)])
@pytest.mark.parametrize("seed", range(4))
def test_inpaint_single_block_is_one_noise_box(shape, seed):
    patch = make_patch(shape)
    out = inpaint(patch, np.random.default_rng(seed), max_blocks=1)
    changed = out != patch
    box = bounding_box(changed)
    assert changed[box].all()  # the changed voxels form exactly one box
    for s, extent in zip(box, shape):
        assert max(1, extent // 6) <= s.stop - s.start <= extent // 3
    np.testing.assert_array_equal(out[~changed], patch[~changed])


@pytest.mark.parametrize("shape", [(18, 18, 18), (12, 24, 30)])
@pytest.mark.parametrize("max_blocks", [2, 5])
def test_inpaint_changes_stay_within_max_blocks(shape, max_blocks):
    patch = make_patch(shape)
    box_volume = np.prod([s // 3 for s in shape])
    for seed in range(5):
        out = inpaint(patch, np.random.default_rng(seed), max_blocks=max_blocks)
        changed = out != patch
        labels, count = ndimage.label(changed)
        assert 1 <= count <= max_blocks
        assert changed.sum() <= max_blocks * box_volume
        np.testing.assert_array_equal(out[~changed], patch[~changed])


def test_inpaint_usually_uses_many_blocks():
    # With continuation probability 0.95 most draws reach the maximum of five boxes.
    patch = make_patch((30, 30, 30))
    volumes = [(inpaint(patch, np.random.default_rng(s)) != patch).sum() for s in range(20)]
    single = [(inpaint(patch, np.random.default_rng(s), max_blocks=1) != patch).sum() for s in range(20)]
    assert np.mean(volumes) > 2 * np.mean(single)


@pytest.mark.parametrize("shape", [(14, 14, 14), (21, 14, 28)])
@pytest.mark.parametrize("seed", range(4))
def test_outpaint_single_block_keeps_one_box(shape, seed):
    patch = make_patch(shape)
    out = outpaint(patch, np.random.default_rng(seed), max_blocks=1)
    kept = out == patch
    box = bounding_box(kept)
    assert kept[box].all() and kept.sum() == kept[box].size
    for s, extent in zip(box, shape):
        assert 3 * extent // 7 <= s.stop - s.start <= 4 * extent // 7


@pytest.mark.parametrize("shape", [(16, 16, 16), (12, 20, 8), (32, 24, 40)])
def test_outpaint_keeps_some_original_voxels_and_noises_the_rest(shape):
    patch = make_patch(shape)
    for seed in range(5):
        out = outpaint(patch, np.random.default_rng(seed))
        kept = out == patch
        assert kept.any()
        assert kept.mean() <= 5 * np.prod([(4 * s // 7) / s for s in shape])
        assert (~kept).mean() > 0.3  # the noise region dominates or is substantial


@pytest.mark.parametrize("fn", [inpaint, outpaint])
def test_painting_rejects_bad_max_blocks(fn):
    with pytest.raises(ValueError, match="max_blocks"):
        fn(make_patch((8, 8, 8)), np.random.default_rng(0), max_blocks=0)


# ---------------------------------------------------------------- corrupt


@pytest.mark.parametrize("shape", SHAPES)
def test_corrupt_with_all_probabilities_zero_is_identity(shape):
    patch = make_patch(shape)
    out = corrupt(patch, np.random.default_rng(0), ALL_OFF)
    np.testing.assert_array_equal(out, patch)
    assert out is not patch


@pytest.mark.parametrize(
    "field", ["shuffle_prob", "intensity_prob", "paint_prob"],
)
@pytest.mark.parametrize("inpaint_fraction", [0.0, 1.0])
def test_corrupt_each_enabled_corruption_changes_the_patch(field, inpaint_fraction):
    # 32^3, because the default shuffle window max(1, min(shape) // 10) is 1 voxel
    # (a no-op, as in Models Genesis) for patches smaller than 20 along some axis.
    patch = make_patch((32, 32, 32))
    config = CorruptionConfig(
        **{"shuffle_prob": 0.0, "intensity_prob": 0.0, "paint_prob": 0.0, field: 1.0},
        inpaint_fraction=inpaint_fraction,
    )
    for seed in range(3):
        out = corrupt(patch, np.random.default_rng(seed), config)
        assert not np.array_equal(out, patch)
        assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0


def test_corrupt_default_config_sometimes_leaves_patch_untouched():
    # P(no corruption) = 0.75 * 0.5 * 0.25, so some of 100 seeds must be identity.
    patch = make_patch((8, 8, 8))
    same = [np.array_equal(corrupt(patch, np.random.default_rng(s)), patch) for s in range(100)]
    assert 0 < sum(same) < 40


@pytest.mark.parametrize("field", ["shuffle_prob", "intensity_prob", "paint_prob", "inpaint_fraction"])
@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_config_rejects_out_of_range_values(field, value):
    with pytest.raises(ValueError, match=field):
        CorruptionConfig(**{field: value})


def test_rng_must_be_a_generator():
    with pytest.raises(TypeError):
        corrupt(make_patch((8, 8, 8)), np.random.RandomState(0))
