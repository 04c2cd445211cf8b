"""Sliding-window prediction: padding like training, shapes, and agreement with a direct forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vectorpose.inference.sliding_window import predict_labels, predict_probabilities


class Recorder(nn.Module):
    """Returns two-class logits from the input and keeps every window it saw."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return torch.cat([-x, x], dim=1)


def test_small_volume_is_padded_with_its_minimum():
    image = np.random.default_rng(0).normal(size=(10, 12, 8)).astype(np.float32) + 5.0
    net = Recorder()
    probs = predict_probabilities(net, image, (16, 16, 16))
    window = net.seen[0]
    assert probs.shape == (2, 10, 12, 8)
    # everything outside the volume holds the volume's minimum, never 0
    outside = window[0, 0].numpy().copy()
    inside_values = np.sort(image.ravel())
    padded = np.setdiff1d(np.unique(outside), inside_values)
    assert padded.size == 0 and np.isclose(outside, image.min()).sum() >= outside.size - image.size


@pytest.mark.parametrize("shape", [(16, 16, 16), (40, 20, 33)])
def test_labels_match_direct_thresholding(shape):
    # the recorder's argmax is "x > 0", so the label map must equal that test voxel for voxel
    image = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    labels = predict_labels(Recorder(), image, (16, 16, 16))
    assert labels.dtype == np.uint8 and labels.shape == shape
    np.testing.assert_array_equal(labels, (image > 0).astype(np.uint8))


def test_rejects_non_3d():
    with pytest.raises(ValueError):
        predict_probabilities(Recorder(), np.zeros((4, 4)), (16, 16, 16))
