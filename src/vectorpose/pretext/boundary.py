"""The boundary (edge) target of Boundary-Focused Reconstruction (VectorPOSE, ISBI 2023, section 3).

``b = clip(30 * (edge(median_5(y)) - 0.01), 0, 1)`` for a clean crop ``y`` in ``[0, 1]``: a 5×5×5
median removes noise, a 3D Sobel gradient magnitude finds edges, and the soft threshold keeps the
strong ones and saturates them. Computed with batched tensor ops, so it runs on the training device.

The edge operator equals ``skimage.filters.sobel`` in 3D: per axis, the central difference
``[-1, 0, 1]`` smoothed by ``[1/4, 1/2, 1/4]`` on the two other axes; magnitude
``sqrt(sum_i g_i^2 / 3)``. Borders repeat the edge voxel (``mode='nearest'``) in both filters.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view

MEDIAN_SIZE = 5
EDGE_GAIN = 30.0
EDGE_THRESHOLD = 0.01
_WINDOW_VALUES_PER_CHUNK = 2**18


def _as_5d(x: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
    if x.ndim == 3:
        return x[None, None], x.shape
    if x.ndim == 4:
        return x[:, None], x.shape
    if x.ndim == 5 and x.shape[1] == 1:
        return x, x.shape
    raise ValueError(f"expected (D, H, W), (B, D, H, W) or (B, 1, D, H, W), got shape {tuple(x.shape)}")


def median_filter(x: torch.Tensor, size: int = MEDIAN_SIZE) -> torch.Tensor:
    """Cubic median filter with replicated borders; ``x`` of shape ``(B, 1, D, H, W)``.

    The window's middle element is one of its values, so both paths give identical results: on a GPU
    ``torch.median`` over unfolded windows, on the CPU NumPy's introselect (``np.partition``), which
    is about six times faster there than ``torch.median`` (``benchmarks/median_filter_speed.py``) and
    still dominates the pipeline's CPU cost.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd number, got {size}")
    return _median_numpy(x, size) if x.device.type == "cpu" else _median_torch(x, size)


def _median_numpy(x: torch.Tensor, size: int) -> torch.Tensor:
    r = size // 2
    volume = x.detach().numpy()
    padded = np.pad(volume, [(0, 0), (0, 0)] + [(r, r)] * 3, mode="edge")
    out = np.empty_like(volume)
    depth, height, width = volume.shape[2:]
    middle = size**3 // 2
    # A few planes at a time: their windows' copy (size³ values per voxel) then stays in the cache,
    # where a whole batch's would take 65 MB at batch 4 of 32³ and run 1.4× slower.
    planes = max(1, _WINDOW_VALUES_PER_CHUNK // (height * width * size**3))
    for b in range(volume.shape[0]):
        for z in range(0, depth, planes):
            n = min(planes, depth - z)
            windows = sliding_window_view(padded[b, 0, z:z + n + 2 * r], (size,) * 3).reshape(-1, size**3)
            out[b, 0, z:z + n] = np.partition(windows, middle, axis=-1)[:, middle].reshape(n, height, width)
    return torch.from_numpy(out)


def _median_torch(x: torch.Tensor, size: int) -> torch.Tensor:
    r = size // 2
    padded = F.pad(x, (r,) * 6, mode="replicate")
    windows = padded.unfold(2, size, 1).unfold(3, size, 1).unfold(4, size, 1)
    return windows.reshape(*x.shape, size**3).median(dim=-1).values


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """3D Sobel gradient magnitude as ``skimage.filters.sobel``; ``x`` of shape ``(B, 1, D, H, W)``.

    Each axis' kernel is a difference along it and a smoothing along the two others. On the CPU it
    is applied separably, as shifted slices of the padded tensor; on a GPU as three 27-tap
    convolutions, a third of the kernel launches (the step there is launch-bound).
    """
    padded = F.pad(x, (1,) * 6, mode="replicate")
    total = torch.zeros_like(x)
    for axis in (2, 3, 4):
        gradient = _sobel_separable(padded, axis) if x.device.type == "cpu" else _sobel_conv(padded, axis)
        total = total + gradient**2
    return torch.sqrt(total / 3.0)


def _sobel_separable(padded: torch.Tensor, axis: int) -> torch.Tensor:
    g = padded
    for dim in (2, 3, 4):
        n = g.shape[dim] - 2
        if dim == axis:
            g = g.narrow(dim, 2, n) - g.narrow(dim, 0, n)
        else:
            g = (g.narrow(dim, 0, n) + 2.0 * g.narrow(dim, 1, n) + g.narrow(dim, 2, n)) * 0.25
    return g


def _sobel_conv(padded: torch.Tensor, axis: int) -> torch.Tensor:
    derivative = padded.new_tensor([-1.0, 0.0, 1.0])
    smooth = padded.new_tensor([0.25, 0.5, 0.25])
    factors = [derivative if dim == axis else smooth for dim in (2, 3, 4)]
    return F.conv3d(padded, torch.einsum("i,j,k->ijk", *factors)[None, None])


def boundary_target(clean: torch.Tensor) -> torch.Tensor:
    """Edge map of clean crops in ``[0, 1]``; shape ``(D, H, W)``, ``(B, D, H, W)`` or ``(B, 1, D, H, W)`` in and out."""
    x, shape = _as_5d(clean)
    edges = sobel_magnitude(median_filter(x))
    return torch.clamp(EDGE_GAIN * (edges - EDGE_THRESHOLD), 0.0, 1.0).reshape(shape)
