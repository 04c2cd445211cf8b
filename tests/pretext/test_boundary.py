"""The boundary target against a SciPy median filter and scikit-image's 3D Sobel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from skimage.filters import sobel

from vectorpose.pretext.boundary import boundary_target, median_filter, sobel_magnitude


def reference_boundary(y: np.ndarray) -> np.ndarray:
    smoothed = ndi.median_filter(y, size=5, mode="nearest")
    return np.clip(30.0 * (sobel(smoothed, mode="nearest") - 0.01), 0.0, 1.0)


def blocks(shape, seed):
    # piecewise-constant boxes plus noise: real edges for the filter to find
    rng = np.random.default_rng(seed)
    y = np.zeros(shape)
    for _ in range(4):
        lo = [rng.integers(0, s // 2) for s in shape]
        hi = [l + rng.integers(3, s // 2) for l, s in zip(lo, shape)]
        y[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = rng.random()
    return np.clip(y + rng.normal(scale=0.05, size=shape), 0, 1)


@pytest.mark.parametrize("shape", [(16, 16, 16), (12, 20, 9)])
@pytest.mark.parametrize("seed", range(3))
def test_boundary_matches_reference(shape, seed):
    y = blocks(shape, seed)
    got = boundary_target(torch.from_numpy(y))
    np.testing.assert_allclose(got.numpy(), reference_boundary(y), atol=1e-6)
    assert got.shape == shape and 0.05 < (got.numpy() > 0).mean() < 0.9  # edges found, not everywhere


def test_batched_shapes_match_per_sample():
    ys = np.stack([blocks((12, 12, 12), s) for s in range(3)]).astype(np.float32)
    batch = boundary_target(torch.from_numpy(ys)[:, None])
    assert batch.shape == (3, 1, 12, 12, 12)
    for i in range(3):
        torch.testing.assert_close(batch[i, 0], boundary_target(torch.from_numpy(ys[i])))


def test_components_match_reference():
    y = torch.from_numpy(blocks((10, 11, 12), 5))[None, None]
    np.testing.assert_array_equal(median_filter(y)[0, 0].numpy(), ndi.median_filter(y[0, 0].numpy(), size=5, mode="nearest"))
    np.testing.assert_allclose(sobel_magnitude(y)[0, 0].numpy(), sobel(y[0, 0].numpy(), mode="nearest"), atol=1e-12)


@pytest.mark.parametrize("axis", [2, 3, 4])
def test_cpu_and_gpu_sobel_paths_agree(axis):
    """Separable slices (the CPU path) and a 27-tap convolution (the GPU path), both run here on the CPU."""
    from vectorpose.pretext.boundary import _sobel_conv, _sobel_separable

    padded = torch.rand(2, 1, 9, 12, 7, generator=torch.Generator().manual_seed(axis), dtype=torch.float64)
    torch.testing.assert_close(_sobel_separable(padded, axis), _sobel_conv(padded, axis), rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("shape", [(2, 1, 41, 24, 20), (1, 1, 9, 64, 50)])
def test_cpu_median_in_chunks_matches_scipy(size, shape):
    """Shapes whose depth is split into several chunks of planes, with a shorter last one."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(size))
    expected = ndi.median_filter(x.numpy(), size=(1, 1, size, size, size), mode="nearest")
    np.testing.assert_array_equal(median_filter(x, size).numpy(), expected)


def test_cpu_median_memory_is_bounded():
    """A batch of 16 crops of 32³: copying every voxel's 125-value window at once would take 262 MB."""
    import tracemalloc

    x = torch.rand(16, 1, 32, 32, 32)
    tracemalloc.start()
    try:
        median_filter(x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_constant_patch_has_no_boundary():
    assert boundary_target(torch.full((8, 8, 8), 0.7)).abs().max() == 0


def test_rejects_bad_shapes():
    with pytest.raises(ValueError):
        boundary_target(torch.zeros(2, 2, 8, 8, 8))
    with pytest.raises(ValueError):
        median_filter(torch.zeros(1, 1, 8, 8, 8), size=4)


@pytest.mark.parametrize("size", [1, 3, 5])
@pytest.mark.parametrize("shape", [(1, 1, 7, 9, 6), (3, 1, 16, 16, 16)])
def test_cpu_and_gpu_median_paths_are_identical(size, shape):
    """The CPU path (np.partition) and the GPU path (torch.median), both run here on the CPU."""
    from vectorpose.pretext.boundary import _median_numpy, _median_torch

    x = torch.rand(shape, generator=torch.Generator().manual_seed(size))
    x[..., :2, :, :] = 0.5  # ties
    assert torch.equal(_median_numpy(x, size), _median_torch(x, size))
