"""Sliding-window prediction: padding like training, shapes, and agreement with a direct forward pass."""

from __future__ import annotations

import itertools

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


def _asymmetric_network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Conv3d(1, 3, kernel_size=3, padding=1)  # random kernels: no flip symmetry


@pytest.mark.parametrize("axes", [(0,), (1, 2), (0, 1, 2)])
def test_mirroring_averages_the_flipped_predictions(axes):
    # one window covers the volume, so the expected value is the plain average over the 2^k flips, computed here directly
    image = np.random.default_rng(2).normal(size=(16, 16, 16)).astype(np.float32)
    net = _asymmetric_network()
    x = torch.from_numpy(image)[None, None]
    expected = torch.zeros(3, 16, 16, 16)
    subsets = [s for k in range(len(axes) + 1) for s in itertools.combinations(axes, k)]
    with torch.no_grad():
        for subset in subsets:
            dims = [2 + a for a in subset]
            out = torch.softmax(net(x.flip(dims)), dim=1).flip(dims)
            expected += out[0] / len(subsets)
    got = predict_probabilities(net, image, (16, 16, 16), mirror_axes=axes)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # and mirroring changes the answer of this asymmetric network
    assert not torch.allclose(got, predict_probabilities(net, image, (16, 16, 16)), atol=1e-4)


def test_mirroring_leaves_a_pointwise_network_unchanged():
    image = np.random.default_rng(3).normal(size=(40, 20, 33)).astype(np.float32)
    plain = predict_probabilities(Recorder(), image, (16, 16, 16))
    torch.testing.assert_close(predict_probabilities(Recorder(), image, (16, 16, 16), mirror_axes=(0, 2)), plain)


@pytest.mark.parametrize("axes", [(3,), (0, 0), (-1,)])
def test_rejects_bad_mirror_axes(axes):
    with pytest.raises(ValueError):
        predict_probabilities(Recorder(), np.zeros((16, 16, 16), np.float32), (16, 16, 16), mirror_axes=axes)
