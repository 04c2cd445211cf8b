"""Whole-volume prediction by Gaussian-weighted sliding windows (MONAI ``sliding_window_inference``),
optionally averaged over mirrored copies of the volume (test-time augmentation, as nnU-Net does).

Mirroring: for every subset of ``mirror_axes`` (``2^k`` copies, the unmirrored one included) the
volume is flipped on those axes, predicted, and the softmax flipped back; the probabilities are
averaged. Only axes the network was trained to see mirrored make sense here: a flip the training
never showed gives a view the network has not learned.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn


@torch.no_grad()
def predict_probabilities(
    network: nn.Module,
    image: np.ndarray,
    patch_size: tuple[int, int, int],
    device: torch.device | str = "cpu",
    overlap: float = 0.5,
    batch_size: int = 4,
    mirror_axes: tuple[int, ...] = (),
) -> torch.Tensor:
    """Softmax probabilities ``(C, X, Y, Z)`` (on the CPU) for a normalised volume ``(X, Y, Z)``, averaged
    over the mirrored copies of ``mirror_axes`` (spatial axes among 0, 1, 2; none by default).

    Windows of ``patch_size`` are batched ``batch_size`` at a time. A volume smaller than a window is
    padded with its own minimum (the background), exactly as training patches are, and cropped back:
    padding with 0, MONAI's default, would put mean-intensity tissue around a z-scored scan, which the
    network never saw in training. The network runs in eval mode and is then put back in the mode it
    was in.
    """
    if image.ndim != 3:
        raise ValueError(f"expected a (X, Y, Z) volume, got shape {image.shape}")
    if len(set(mirror_axes)) != len(mirror_axes) or any(a not in (0, 1, 2) for a in mirror_axes):
        raise ValueError(f"mirror_axes must be distinct spatial axes among 0, 1, 2, got {mirror_axes}")
    training = network.training
    network.eval()
    x = torch.from_numpy(np.array(image, dtype=np.float32))[None, None].to(device)  # a copy: the cache maps are read-only
    flips = [tuple(2 + a for a in subset) for k in range(len(mirror_axes) + 1) for subset in itertools.combinations(mirror_axes, k)]
    total = None
    try:
        for dims in flips:
            view = x.flip(dims) if dims else x
            logits = sliding_window_inference(
                view, roi_size=tuple(patch_size), sw_batch_size=batch_size, predictor=network, overlap=overlap, mode="gaussian",
                cval=float(image.min()),
            )
            probabilities = torch.softmax(logits.float(), dim=1)
            probabilities = probabilities.flip(dims) if dims else probabilities
            total = probabilities if total is None else total + probabilities
    finally:
        network.train(training)
    return (total[0] / len(flips)).cpu()


def predict_labels(network: nn.Module, image: np.ndarray, patch_size: tuple[int, int, int], device: torch.device | str = "cpu",
                   overlap: float = 0.5, batch_size: int = 4, mirror_axes: tuple[int, ...] = ()) -> np.ndarray:
    """The argmax label map ``(X, Y, Z)`` as uint8."""
    probabilities = predict_probabilities(network, image, patch_size, device, overlap, batch_size, mirror_axes)
    return probabilities.argmax(0).numpy().astype(np.uint8)
