"""The masked reconstruction loss: a hand-computed case, blindness to visible voxels, and its checks."""

from __future__ import annotations

import pytest
import torch

from vectorpose.losses.masked import masked_mse


def test_hand_computed_case():
    prediction = torch.tensor([[0.5, 1.0], [0.0, 0.2]])
    target = torch.tensor([[0.0, 1.0], [1.0, 0.2]])
    mask = torch.tensor([[True, True], [False, True]])
    # hidden errors 0.5, 0, 0: (0.25 + 0 + 0) / 3; the visible error of 1 does not count
    torch.testing.assert_close(masked_mse(prediction, target, mask), torch.tensor(0.25 / 3))


def test_pooled_over_the_batch():
    torch.manual_seed(0)
    prediction, target = torch.rand(2, 1, 4, 4, 4), torch.rand(2, 1, 4, 4, 4)
    mask = torch.rand(2, 1, 4, 4, 4) < 0.5
    expected = sum(((prediction[i] - target[i])[mask[i]] ** 2).sum() for i in range(2)) / mask.sum()
    torch.testing.assert_close(masked_mse(prediction, target, mask), expected)


def test_visible_voxels_change_nothing():
    torch.manual_seed(1)
    prediction = torch.rand(2, 1, 8, 8, 8, requires_grad=True)
    target = torch.rand(2, 1, 8, 8, 8)
    mask = torch.zeros(2, 1, 8, 8, 8, dtype=torch.bool)
    mask[:, :, :4, 4:] = True
    loss = masked_mse(prediction, target, mask)
    loss.backward()
    assert torch.all(prediction.grad[~mask] == 0) and torch.all(prediction.grad[mask] != 0)
    with torch.no_grad():
        perturbed = prediction + torch.where(mask, 0.0, torch.randn_like(prediction) * 10)
        torch.testing.assert_close(masked_mse(perturbed, target, mask), loss, rtol=0, atol=0)
        perturbed[~mask] = float("nan")
        torch.testing.assert_close(masked_mse(perturbed, target, mask), loss, rtol=0, atol=0)
        hidden_changed = prediction + torch.where(mask, 0.1, 0.0)
        assert masked_mse(hidden_changed, target, mask) != loss


def test_bad_arguments():
    x = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="share a shape"):
        masked_mse(x, x, torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="boolean"):
        masked_mse(x, x, torch.ones(2, 4))
