"""The plan: spacing coarsened to the voxel budget, patch shrunk to it, batch filling the step (hand-computed cases)."""

import math

import pytest

from vectorpose.data.planning import (BUDGETS, MAX_BATCH, MIN_BATCH, VoxelBudget, budget_for, coarsened_spacing, plan_patch_and_batch,
                                      planned_batch, planned_patch, planned_spacing)


def test_patch_is_the_95th_percentile_shape_when_it_fits():
    # p95 of (35, 43, 40) is 42.5 -> 48; of (50, 59, 52) 58.3 -> 64; of (30, 47, 40) 46.3 -> 48
    assert planned_patch([(35, 50, 30), (43, 59, 47), (40, 52, 40)], (1, 1, 1), 16, 64**3) == (48, 64, 48)


def test_patch_shrinks_the_longest_axis_in_mm_but_keeps_two_divisors():
    # start (112, 112, 32); z is the longest in mm (160) but already two divisors, so x and y take turns:
    # (96,112) (96,96) (80,96) (80,80) (64,80) (64,64) -> 64*64*32 = 131072 fits
    assert planned_patch([(100, 100, 20)], (1, 1, 5), 16, 64 * 64 * 32) == (64, 64, 32)
    # isotropic: the axis of largest extent goes first, down to 64^3 from (512, 512, 208)
    patch = planned_patch([(512, 512, 200)], (1, 1, 1), 16, 64**3)
    assert math.prod(patch) <= 64**3 and all(p % 16 == 0 for p in patch) and patch == (64, 64, 64)


def test_patch_never_goes_below_one_divisor():
    assert planned_patch([(400, 400, 400)], (1, 1, 1), 16, 10) == (16, 16, 16)


def test_spacing_grows_finer_axes_first():
    # 300 mm cube at 1 x 1 x 3 mm, limit 4 * 64^3 = 1048576 voxels: x and y grow by 3 % a round until
    # 300^2 * 100 / s^2 <= 1048576, i.e. s >= 2.93: 37 rounds (1.03^36 = 2.898, 1.03^37 = 2.985); z stays 3
    s = coarsened_spacing((1, 1, 3), (300, 300, 300), 64**3)
    assert s == pytest.approx((1.03**37, 1.03**37, 3.0))


def test_spacing_grows_all_axes_once_isotropic():
    # 600 mm cube: at 3 mm it still holds 200^3 voxels; x and y stop at 3 mm, then all grow until
    # (600 / s)^3 <= 1048576, i.e. s >= 5.906: 3 * 1.03^23 = 5.92 (1.03^22 gives 5.75)
    s = coarsened_spacing((1, 1, 3), (600, 600, 600), 64**3)
    assert s == pytest.approx((3 * 1.03**23,) * 3)


def test_spacing_unchanged_when_the_scan_is_small():
    assert coarsened_spacing((1, 1, 1), (36, 50, 36), 64**3) == (1.0, 1.0, 1.0)


def test_planned_spacing_modes():
    spacings, shapes = [(1.0, 1.0, 3.0)] * 3, [(300, 300, 100)] * 3
    assert planned_spacing("native", spacings, shapes, BUDGETS["cpu"])[0] is None
    assert planned_spacing("2,2,2", spacings, shapes, BUDGETS["cpu"]) == ((2.0, 2.0, 2.0), "spacing: given")
    auto, reason = planned_spacing("auto", spacings, shapes, BUDGETS["cpu"])
    assert auto == pytest.approx((1.03**37, 1.03**37, 3.0)) and "coarsened" in reason
    assert planned_spacing("auto", spacings, shapes, None)[0] == (1.0, 1.0, 3.0)  # no budget: the median spacing


def test_batch_fills_the_step_within_bounds():
    assert planned_batch((48, 64, 48), 4 * 48 * 64 * 48) == 4
    assert planned_batch((64, 64, 64), 4 * 48 * 64 * 48) == 2
    assert planned_batch((8, 8, 8), 4 * 48 * 64 * 48) == MAX_BATCH
    assert planned_batch((128, 128, 128), 4 * 48 * 64 * 48) == MIN_BATCH


def test_given_patch_and_batch_are_kept():
    plan = plan_patch_and_batch([(100, 100, 100)], (1, 1, 1), 16, BUDGETS["cpu"], patch=(32, 32, 32), batch=3)
    assert (plan.patch, plan.batch) == ((32, 32, 32), 3)
    assert plan.to_json()["patch_size"] == [32, 32, 32] and "given" in plan.summary()


def test_budgets():
    assert budget_for("cuda") == BUDGETS["cuda"] and budget_for("cpu") == budget_for("mps") == BUDGETS["cpu"]
    with pytest.raises(ValueError, match="budget"):
        VoxelBudget(patch=100, step=150)
