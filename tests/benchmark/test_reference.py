"""The fast sample pipeline against the per-crop SciPy reference: same draws, same sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vectorpose.pretext.boundary import boundary_target
from vectorpose.benchmark.reference import reference_boundary_target, reference_sample
from vectorpose.pretext.masking import MaskingConfig
from vectorpose.pretext.sample import PretextConfig, make_pretext_sample


def volume(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, shape).astype(np.float32)
    x[shape[0] // 4: shape[0] // 2] += 3.0  # an edge for the boundary target
    return x


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shape,patch", [((40, 56, 36), 32), ((20, 24, 18), 16), ((12, 30, 30), 16)])
def test_fast_pipeline_matches_reference(seed, shape, patch):
    vol = volume(shape, seed)
    span = (float(vol.min()), float(vol.max()))
    config = PretextConfig(patch_size=patch)
    fast = make_pretext_sample(vol, span, np.random.default_rng(seed), config)
    slow = reference_sample(vol, span, np.random.default_rng(seed), config)
    np.testing.assert_allclose(fast.clean[0].numpy(), slow["clean"], atol=1e-5)
    np.testing.assert_allclose(fast.input[0].numpy(), slow["input"], atol=1e-4)
    np.testing.assert_allclose(fast.vectors.numpy(), slow["vectors"], atol=1e-6)
    np.testing.assert_allclose(boundary_target(fast.clean[None]).numpy()[0, 0], slow["boundary"], atol=1e-3)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("patch, masking", [(32, MaskingConfig()), (16, MaskingConfig(block_size=8, ratio=0.75))])
def test_masked_pipeline_matches_reference(seed, patch, masking):
    """mae's samples: the same blocks hidden (filled block by block in the reference) from the same draws."""
    vol = volume((40, 44, 36), seed)
    span = (float(vol.min()), float(vol.max()))
    config = PretextConfig(patch_size=patch)
    fast = make_pretext_sample(vol, span, np.random.default_rng(seed), config, masking)
    slow = reference_sample(vol, span, np.random.default_rng(seed), config, masking)
    assert np.array_equal(fast.mask[0].numpy(), slow["mask"])
    np.testing.assert_allclose(fast.clean[0].numpy(), slow["clean"], atol=1e-5)
    np.testing.assert_allclose(fast.input[0].numpy(), slow["input"], atol=1e-4)


def test_reference_boundary_sees_an_edge():
    clean = np.zeros((16, 16, 16), np.float32)
    clean[8:] = 1.0
    b = reference_boundary_target(clean)
    assert b[7:9].min() == 1.0 and b[:4].max() == 0.0 and b[12:].max() == 0.0
    assert np.array_equal(b, boundary_target(torch.from_numpy(clean)).numpy())
