"""Block masking (``mae``): the hidden share, the block layout, the fill value, and the sample it makes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vectorpose.pretext.masking import MaskingConfig, block_mask, mask_patch
from vectorpose.pretext.sample import PretextConfig, make_pretext_sample


def blocks_of(mask: np.ndarray, b: int) -> np.ndarray:
    """Reference: the block grid read off the first voxel of every block."""
    return mask[::b, ::b, ::b]


@pytest.mark.parametrize("patch, block, ratio", [(32, 4, 0.6), (32, 8, 0.75), (16, 4, 0.6), (16, 2, 0.3), (24, 6, 0.5)])
@pytest.mark.parametrize("seed", range(3))
def test_mask_hides_the_requested_share_in_whole_aligned_blocks(patch, block, ratio, seed):
    mask = block_mask(patch, MaskingConfig(block_size=block, ratio=ratio), np.random.default_rng(seed))
    assert mask.shape == (patch,) * 3 and mask.dtype == bool
    coarse = blocks_of(mask, block)
    # blocky and aligned: spreading the grid over blocks with np.kron gives the mask back
    assert np.array_equal(np.kron(coarse.astype(int), np.ones((block,) * 3, dtype=int)).astype(bool), mask)
    n_blocks = (patch // block) ** 3
    # the share is the requested one up to rounding to whole blocks
    assert abs(coarse.sum() / n_blocks - ratio) <= 0.5 / n_blocks
    assert mask.sum() == coarse.sum() * block**3


def test_every_block_is_equally_likely_to_be_hidden():
    """Over many draws each block is hidden in about ``ratio`` of them (within 5 binomial standard deviations)."""
    config, draws = MaskingConfig(block_size=4, ratio=0.6), 400
    rng = np.random.default_rng(0)
    counts = sum(blocks_of(block_mask(16, config, rng), 4).astype(int) for _ in range(draws))
    share = round(0.6 * 64) / 64
    sd = math.sqrt(draws * share * (1 - share))
    assert np.all(np.abs(counts - draws * share) < 5 * sd), counts
    assert len({block_mask(16, config, np.random.default_rng(s)).tobytes() for s in range(5)}) == 5


def test_same_generator_state_same_mask():
    config = MaskingConfig()
    assert np.array_equal(block_mask(32, config, np.random.default_rng(7)), block_mask(32, config, np.random.default_rng(7)))


def test_hidden_voxels_take_the_mean_of_the_visible_ones():
    clean = np.arange(8, dtype=np.float32).reshape(2, 2, 2) / 10
    mask = np.zeros((2, 2, 2), dtype=bool)
    mask[0] = True  # hides 0.0, 0.1, 0.2, 0.3; the visible mean is (0.4 + 0.5 + 0.6 + 0.7) / 4 = 0.55
    masked = mask_patch(clean, mask)
    np.testing.assert_allclose(masked[0], np.full((2, 2), 0.55, np.float32))
    assert np.array_equal(masked[1], clean[1])
    assert masked.dtype == np.float32 and clean[0, 0, 0] == 0.0  # the input is left alone


@pytest.mark.parametrize("kwargs, match", [
    (dict(block_size=0), "positive"),
    (dict(ratio=0.0), r"\(0, 1\)"),
    (dict(ratio=1.0), r"\(0, 1\)"),
    (dict(ratio=float("nan")), r"\(0, 1\)"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MaskingConfig(**kwargs)


@pytest.mark.parametrize("patch, kwargs, match", [
    (16, dict(block_size=5), "must divide the patch size 16"),
    (16, dict(block_size=16), "hides 1 of the 1 blocks"),
    (16, dict(block_size=4, ratio=0.001), "hides 0 of the 64 blocks"),
])
def test_block_and_ratio_must_fit_the_patch(patch, kwargs, match):
    with pytest.raises(ValueError, match=match):
        MaskingConfig(**kwargs).grid(patch)


def test_mask_patch_refuses_mismatches():
    with pytest.raises(ValueError, match="shapes differ"):
        mask_patch(np.zeros((4, 4, 4), np.float32), np.zeros((4, 4, 2), bool))
    with pytest.raises(ValueError, match="every voxel"):
        mask_patch(np.zeros((4, 4, 4), np.float32), np.ones((4, 4, 4), bool))


@pytest.mark.parametrize("seed", range(3))
def test_masked_sample_is_the_same_crop_with_blocks_hidden(seed):
    """The masked sample draws the crop and orientation of the corrupted one, then hides blocks of it."""
    rng = np.random.default_rng(100)
    volume = rng.normal(size=(30, 26, 40)).astype(np.float32)
    span = (float(volume.min()), float(volume.max()))
    config, masking = PretextConfig(patch_size=16), MaskingConfig(block_size=4, ratio=0.6)
    corrupted = make_pretext_sample(volume, span, np.random.default_rng(seed), config)
    masked = make_pretext_sample(volume, span, np.random.default_rng(seed), config, masking)
    assert corrupted.mask is None
    assert np.array_equal(masked.clean.numpy(), corrupted.clean.numpy()) and masked.geometry == corrupted.geometry
    assert np.array_equal(masked.vectors.numpy(), corrupted.vectors.numpy())
    mask, clean = masked.mask[0].numpy(), masked.clean[0].numpy()
    assert masked.mask.shape == (1, 16, 16, 16) and mask.sum() == round(0.6 * 64) * 4**3
    # in normalised units: visible voxels are the volume's own, hidden ones the visible mean
    expected = np.where(mask, clean[~mask].mean(), clean) * (span[1] - span[0]) + span[0]
    np.testing.assert_allclose(masked.input[0].numpy(), expected, rtol=1e-5, atol=1e-5)
