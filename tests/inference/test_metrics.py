"""Dice and HD95 against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from vectorpose.inference.metrics import case_metrics, confusion_counts, summarise


def volume():
    return np.zeros((12, 12, 12), dtype=np.uint8)


def test_identical_maps():
    ref = volume()
    ref[2:6, 2:6, 2:6] = 1
    ref[7:10, 7:10, 7:10] = 2
    m = case_metrics(ref, ref, 3)
    assert m["dice"] == [1.0, 1.0] and m["hd95"] == [0.0, 0.0]


def test_half_overlap_dice():
    ref, pred = volume(), volume()
    ref[2:4, 2:4, 2:4] = 1  # 8 voxels
    pred[3:5, 2:4, 2:4] = 1  # 8 voxels, 4 shared
    m = case_metrics(pred, ref, 2)
    assert m["dice"][0] == pytest.approx(2 * 4 / 16)
    # every voxel is a surface voxel; half of each set is 1 voxel from the other set, half at 0
    assert m["hd95"][0] == pytest.approx(1.0)


@pytest.mark.parametrize("spacing,expected", [((1, 1, 1), 4.0), ((1, 1, 2), 8.0), ((3, 1, 1), 4.0)])
def test_single_voxels_hd95_uses_spacing(spacing, expected):
    ref, pred = volume(), volume()
    ref[5, 5, 5] = 1
    pred[5, 5, 9] = 1
    m = case_metrics(pred, ref, 2, spacing)
    assert m["dice"] == [0.0] and m["hd95"][0] == pytest.approx(expected)


def test_missing_and_absent_classes():
    ref, pred = volume(), volume()
    ref[1:3, 1:3, 1:3] = 1  # class 1 missed by the prediction; class 2 absent from both: not scored
    m = case_metrics(pred, ref, 3)
    assert m["dice"] == [0.0, None] and m["hd95"] == [None, None]
    assert case_metrics(pred, ref, 3, hd95=False) == {"dice": [0.0, None]}


def test_class_predicted_where_the_reference_has_none_scores_zero():
    ref, pred = volume(), volume()
    pred[4:6, 4:6, 4:6] = 1
    assert case_metrics(pred, ref, 2) == {"dice": [0.0], "hd95": [None]}


def test_confusion_counts_against_a_voxel_loop():
    rng = np.random.default_rng(0)
    ref, pred = rng.integers(0, 4, (6, 5, 7)), rng.integers(0, 4, (6, 5, 7))
    expected = np.zeros((4, 4), dtype=np.int64)
    for t, p in zip(ref.ravel(), pred.ravel()):
        expected[t, p] += 1
    counts = confusion_counts(pred, ref, 4)
    np.testing.assert_array_equal(counts, expected)
    assert counts.sum() == ref.size and counts.dtype == np.int64


def test_confusion_counts_of_a_class_labelled_as_another():
    ref, pred = volume(), volume()
    ref[2:4, 2:4, 2:4] = 2  # 8 voxels of class 2, all predicted as class 1
    pred[2:4, 2:4, 2:4] = 1
    counts = confusion_counts(pred, ref, 3)
    assert counts[2].tolist() == [0, 8, 0] and counts[0].tolist() == [12**3 - 8, 0, 0] and counts[1].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="0..2"):
        confusion_counts(pred + 2, ref, 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_counts(pred[:-1], ref, 3)


def test_summary_averages_and_counts_undefined():
    rows = [
        {"dice": {"a": 1.0, "b": 0.5}, "hd95": {"a": 0.0, "b": 2.0}},
        {"dice": {"a": 0.0, "b": 0.7}, "hd95": {"a": None, "b": 4.0}},
    ]
    s = summarise(rows, ["a", "b"])
    assert s["mean_dice"] == pytest.approx((1.0 + 0.5 + 0.0 + 0.7) / 4)
    assert s["per_class"]["a"] == {"dice": 0.5, "hd95": 0.0, "absent": 0, "hd95_undefined": 1}
    assert s["per_class"]["b"]["hd95"] == pytest.approx(3.0) and s["mean_hd95"] == pytest.approx(2.0)


def test_summary_leaves_unscored_cases_out():
    # "b" is absent from the second case: its mean is the first case's alone, and the overall mean
    # weighs each class once (nnU-Net's foreground mean), not each scored (case, class) pair
    rows = [
        {"dice": {"a": 0.9, "b": 0.0}, "hd95": {"a": 1.0, "b": None}},
        {"dice": {"a": 0.7, "b": None}, "hd95": {"a": 3.0, "b": None}},
        {"dice": {"a": 0.5, "b": None}, "hd95": {"a": 5.0, "b": None}},
    ]
    s = summarise(rows, ["a", "b"])
    assert s["per_class"]["b"] == {"dice": 0.0, "hd95": None, "absent": 2, "hd95_undefined": 1}
    assert s["per_class"]["a"]["dice"] == pytest.approx(0.7)
    assert s["mean_dice"] == pytest.approx((0.7 + 0.0) / 2)
    assert s["mean_hd95"] == pytest.approx(3.0)


def test_summary_of_a_class_no_case_scores():
    rows = [{"dice": {"a": 0.8, "b": None}, "hd95": {"a": 2.0, "b": None}}]
    s = summarise(rows, ["a", "b"])
    assert s["per_class"]["b"] == {"dice": None, "hd95": None, "absent": 1, "hd95_undefined": 0}
    assert s["mean_dice"] == pytest.approx(0.8)


def test_rejects_mismatch():
    with pytest.raises(ValueError):
        case_metrics(volume(), np.zeros((12, 12, 11), np.uint8), 2)
    with pytest.raises(ValueError):
        case_metrics(volume() + 3, volume(), 2)
