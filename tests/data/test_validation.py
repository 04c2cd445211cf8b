"""Up-front checks: declared label values, useful patch sizes, crops that fit (hand-computed cases)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cached_volumes import label_volume as volume
from vectorpose.data.validation import check_crop_fits, check_label_values, check_patch_fits, largest_useful_patch
from vectorpose.errors import DataError, DatasetError


@pytest.mark.parametrize("values,declared,bad", [
    ([0, 1, 2], {0: "bg", 1: "a", 2: "b"}, None),
    ([0, 1], {0: "bg", 1: "a", 2: "b"}, None),              # a class absent from one case is fine
    ([0, 3], {0: "bg", 1: "a", 3: "c"}, None),              # gaps in the declared values are fine
    ([0, 2], {0: "bg", 1: "a", 3: "c"}, [2]),               # 2 < max declared, but not declared
    ([0, 1, 7, 9], {0: "bg", 1: "a"}, [7, 9]),
])
def test_label_values_must_be_declared(tmp_path, values, declared, bad):
    label = np.zeros((4, 4, 4), np.uint8)
    label.flat[: len(values)] = values
    v = volume(tmp_path, "c", label)
    if bad is None:
        check_label_values([v], declared)
        return
    with pytest.raises(DatasetError) as info:
        check_label_values([v], declared)
    assert len(info.value.problems) == 1
    assert str(v.source_label) in str(info.value) and f"label values {bad} are not declared" in str(info.value)


def test_label_problems_of_every_case_listed(tmp_path):
    a = volume(tmp_path, "a", np.full((2, 2, 2), 4, np.uint8))
    b = volume(tmp_path, "b", np.zeros((2, 2, 2), np.uint8))
    c = volume(tmp_path, "c", np.full((2, 2, 2), 5, np.uint8))
    with pytest.raises(DatasetError) as info:
        check_label_values([a, b, c], {0: "bg"})
    assert [p.path for p in info.value.problems] == [a.source_label, c.source_label]


@pytest.mark.parametrize("shapes,divisor,expected", [
    ([(35, 51, 35), (43, 59, 47)], 16, (48, 64, 48)),
    ([(32, 32, 32)], 16, (32, 32, 32)),
    ([(33, 10, 1)], 4, (36, 12, 4)),
])
def test_largest_useful_patch(shapes, divisor, expected):
    assert largest_useful_patch(shapes, divisor) == expected


@pytest.mark.parametrize("patch,ok", [((48, 64, 48), True), ((32, 32, 32), True), ((64, 64, 48), False), ((48, 80, 48), False)])
def test_patch_fits(patch, ok):
    shapes = [(35, 51, 35), (43, 59, 47)]
    if ok:
        check_patch_fits(patch, shapes, 16, Path("data"))
    else:
        with pytest.raises(DataError, match="larger than every volume.*at most 48×64×48"):
            check_patch_fits(patch, shapes, 16, Path("data"))


@pytest.mark.parametrize("patch,min_scale,ok", [
    (32, 0.5, True),    # smallest crop 16 fits 20³
    (40, 0.5, True),    # 20 fits exactly
    (42, 0.5, False),   # 21 fits nowhere
    (64, 0.25, True),   # 16
    (32, 1.0, False),   # 32 > 20
])
def test_crop_fits(patch, min_scale, ok):
    shapes = [(20, 20, 20), (30, 30, 12)]  # the second is too thin for anything above 12
    if ok:
        check_crop_fits(patch, min_scale, shapes, Path("data"))
    else:
        with pytest.raises(DataError, match="smallest crop .* is larger than every volume"):
            check_crop_fits(patch, min_scale, shapes, Path("data"))
