"""Crop sampling bounds and crop extraction against NumPy slicing and padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vectorpose.pretext.crop_geometry import CropGeometry, extract_crop, sample_crop_geometry


@pytest.mark.parametrize("shape,patch", [((40, 50, 30), 32), ((20, 20, 12), 16), ((100, 100, 100), 32)])
def test_sampled_geometry_bounds(shape, patch):
    rng = np.random.default_rng(0)
    for _ in range(300):
        g = sample_crop_geometry(shape, patch, rng, (0.5, 1.5))
        assert 0.5 <= g.scale <= 1.5 and g.side == max(1, round(g.scale * patch))
        for lo, hi, s in zip(g.lo, g.hi, shape):
            if g.side <= s:
                assert 0 <= lo and hi <= s  # fits: fully inside
            else:
                assert lo <= 0 and hi >= s  # too big: covers the whole axis
        np.testing.assert_allclose(g.centre, np.array(g.lo) + g.side / 2)


def test_crop_without_resize_is_a_slice():
    vol = np.random.default_rng(0).random((20, 22, 24)).astype(np.float32)
    g = CropGeometry((20, 22, 24), (3, 5, 7), 8, 8, 1.0, 12)
    np.testing.assert_array_equal(extract_crop(vol, g, 0.0)[0].numpy(), vol[3:11, 5:13, 7:15])


def test_padded_crop_matches_numpy_pad():
    vol = np.random.default_rng(1).random((10, 12, 6)).astype(np.float32)
    g = CropGeometry((10, 12, 6), (-2, 3, -5), 14, 14, 1.0, 21)
    assert g.padded
    padded = np.pad(vol, 20, constant_values=-1.0)
    expected = padded[18:32, 23:37, 15:29]
    np.testing.assert_array_equal(extract_crop(vol, g, -1.0)[0].numpy(), expected)


def test_resize_is_trilinear_of_the_crop():
    vol = np.random.default_rng(2).random((30, 30, 30)).astype(np.float32)
    g = CropGeometry((30, 30, 30), (2, 4, 6), 24, 16, 1.5, 24)
    crop = torch.from_numpy(vol[2:26, 4:28, 6:30].copy())[None, None]
    expected = F.interpolate(crop, size=(16, 16, 16), mode="trilinear", align_corners=False)[0]
    torch.testing.assert_close(extract_crop(vol, g, 0.0), expected)


def test_multichannel_and_shape_check():
    vol = np.zeros((3, 10, 10, 10), dtype=np.float32)
    g = CropGeometry((10, 10, 10), (0, 0, 0), 5, 8, 0.6, 12)
    assert extract_crop(vol, g, 0.0).shape == (3, 8, 8, 8)
    with pytest.raises(ValueError, match="differs"):
        extract_crop(np.zeros((9, 10, 10), dtype=np.float32), g, 0.0)


@pytest.mark.parametrize("kwargs", [dict(volume_shape=(10, 10)), dict(patch_size=0), dict(scale_range=(1.5, 0.5)), dict(scale_range=(0, 1))])
def test_sampling_rejects_bad_arguments(kwargs):
    args = dict(volume_shape=(10, 10, 10), patch_size=8, rng=np.random.default_rng(0), scale_range=(0.5, 1.5)) | kwargs
    with pytest.raises(ValueError):
        sample_crop_geometry(**args)


def test_max_side_bounds_every_drawn_side():
    rng = np.random.default_rng(3)
    for _ in range(200):
        g = sample_crop_geometry((30, 40, 20), 16, rng, (0.5, 1.5))
        assert g.max_side == 24 and 8 <= g.side <= 24
    with pytest.raises(ValueError, match="max_side"):
        CropGeometry((10, 10, 10), (0, 0, 0), 13, 8, 1.6, 12)
