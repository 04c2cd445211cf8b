"""Box arithmetic shared by the pretext crops and the segmentation patches, against hand cases."""

from __future__ import annotations

import numpy as np
import pytest

from vectorpose.data.boxes import crop_box, origin_range


@pytest.mark.parametrize("size,side,expected", [(10, 4, (0, 6)), (10, 10, (0, 0)), (10, 14, (-4, 0)), (1, 3, (-2, 0))])
def test_origin_range_hand_cases(size, side, expected):
    assert origin_range(size, side) == expected


@pytest.mark.parametrize("size,side", [(10, 4), (10, 14), (5, 5)])
def test_every_origin_in_range_keeps_the_box_inside_or_covering(size, side):
    a, b = origin_range(size, side)
    for lo in range(a, b + 1):
        hi = lo + side
        assert (0 <= lo and hi <= size) if side <= size else (lo <= 0 and hi >= size)


def test_crop_box_pads_outside_with_the_value():
    volume = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    box = crop_box(volume, (-1, 2, 4), (3, 2, 4), pad_value=-7.0)
    expected = np.full((3, 2, 4), -7.0, dtype=np.float32)
    expected[1:, :, :2] = volume[0:2, 2:4, 4:6]
    np.testing.assert_array_equal(box, expected)
