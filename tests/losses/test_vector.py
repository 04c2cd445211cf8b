"""The Vector Prediction loss against a NumPy reference of the wrap-around azimuth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vectorpose.losses.vector import circular_l1, vector_loss


def reference_loss(pred, target):
    r = np.abs(pred[..., 0] - target[..., 0]).mean()
    theta = np.abs(pred[..., 1] - target[..., 1]).mean()
    d = pred[..., 2] - target[..., 2]
    circle = np.min(np.stack([np.abs(d), np.abs(d - 2), np.abs(d + 2)]), axis=0)
    defined = np.sin(np.pi * target[..., 1]) >= 0.05
    phi = circle[defined].mean() if defined.any() else 0.0
    return r, theta, phi


@pytest.mark.parametrize("seed", range(4))
def test_matches_numpy_reference(seed):
    rng = np.random.default_rng(seed)
    pred = np.concatenate([rng.random((5, 9, 2)), rng.uniform(-1, 1, (5, 9, 1))], axis=-1)
    target = np.concatenate([rng.random((5, 9, 2)), rng.uniform(-1, 1, (5, 9, 1))], axis=-1)
    target[0, :4, 1] = [0.0, 1.0, 0.01, 0.99]  # on or within 2° of the polar axis: azimuth left out
    got = vector_loss(torch.from_numpy(pred), torch.from_numpy(target))
    r, theta, phi = reference_loss(pred, target)
    assert got["r"].item() == pytest.approx(r) and got["theta"].item() == pytest.approx(theta)
    assert got["phi"].item() == pytest.approx(phi)
    assert got["total"].item() == pytest.approx(r + theta + phi)


@pytest.mark.parametrize("p,t,expected", [(0.95, -0.95, 0.1), (-1.0, 1.0, 0.0), (0.2, -0.3, 0.5), (0.9, -0.2, 0.9)])
def test_wraparound_hand_cases(p, t, expected):
    assert circular_l1(torch.tensor(p), torch.tensor(t)).item() == pytest.approx(expected)


def test_gradient_flows_across_the_seam():
    pred = torch.tensor([0.95], requires_grad=True)
    circular_l1(pred, torch.tensor([-0.95])).sum().backward()
    assert pred.grad.item() == pytest.approx(-1.0)  # moving towards +1 (= -1) reduces the loss


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        vector_loss(torch.zeros(2, 9, 3), torch.zeros(2, 9, 2))


def test_azimuth_on_the_polar_axis_costs_nothing():
    # theta-hat 0 and 1 (along and against the polar axis), and 0.5 (in plane) with the azimuth wrong by 0.5
    target = torch.tensor([[[0.5, 0.0, 0.0], [0.5, 1.0, 1.0], [0.5, 0.5, 0.25]]])
    pred = torch.tensor([[[0.5, 0.0, 0.7], [0.5, 1.0, -0.3], [0.5, 0.5, 0.75]]])
    assert vector_loss(pred, target)["phi"].item() == pytest.approx(0.5)
    assert vector_loss(pred[:, :2], target[:, :2])["phi"].item() == 0.0
