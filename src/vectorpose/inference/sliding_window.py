"""Whole-volume prediction by Gaussian-weighted sliding windows (MONAI ``sliding_window_inference``)."""

from __future__ import annotations

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
) -> torch.Tensor:
    """Softmax probabilities ``(C, X, Y, Z)`` (on the CPU) for a normalised volume ``(X, Y, Z)``.

    Windows of ``patch_size`` are batched ``batch_size`` at a time. A volume smaller than a window is
    padded with its own minimum (the background), exactly as training patches are, and cropped back:
    padding with 0, MONAI's default, would put mean-intensity tissue around a z-scored scan, which the
    network never saw in training. The network runs in eval mode and is then put back in the mode it
    was in.
    """
    if image.ndim != 3:
        raise ValueError(f"expected a (X, Y, Z) volume, got shape {image.shape}")
    training = network.training
    network.eval()
    x = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32)[None, None].to(device)
    try:
        logits = sliding_window_inference(
            x, roi_size=tuple(patch_size), sw_batch_size=batch_size, predictor=network, overlap=overlap, mode="gaussian",
            cval=float(image.min()),
        )
    finally:
        network.train(training)
    return torch.softmax(logits[0].float(), dim=0).cpu()


def predict_labels(network: nn.Module, image: np.ndarray, patch_size: tuple[int, int, int], device: torch.device | str = "cpu",
                   overlap: float = 0.5, batch_size: int = 4) -> np.ndarray:
    """The argmax label map ``(X, Y, Z)`` as uint8."""
    return predict_probabilities(network, image, patch_size, device, overlap, batch_size).argmax(0).numpy().astype(np.uint8)
