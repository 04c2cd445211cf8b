"""Frozen encoders and their pooled bottleneck features.

The probe (after Zhang et al., ISBI 2023: "the network learns where a crop is, how big and which way
is up") reads only what the pretrained encoder already holds: the network is put in eval mode, no
gradient flows, and each crop ``(1, P, P, P)`` becomes the backbone's bottleneck features
(``coarse[0]`` of :class:`~vectorpose.models.backbone.BackboneFeatures`, shape
``(B, C, P / d, P / d, P / d)`` with ``d`` the backbone's size divisor) average-pooled to a
``grid × grid × grid`` layout, i.e. ``C · grid³`` numbers with ``C = channels[-1]``. ``grid`` 2 reads
the layout the Vector Prediction head reads; ``grid`` 1, a global mean, keeps no layout: it cannot
tell where in the crop a feature lies, which is what orientation is about.

Only the encoder and bottleneck run (:func:`bottleneck`): the decoder does not change the bottleneck
and costs three quarters of a forward pass at the default size on a CPU. A test checks that the
result equals ``backbone(x).coarse[0]`` exactly, so a change of the backbone's layout shows there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..models.backbone import BackboneConfig, UNetBackbone


@dataclass
class Encoder:
    """A frozen backbone and where it came from.

    name: the row label in reports (``"run"``, ``"random init"`` or a compare run's name).
    source: the run folder or model file, or ``None`` for the random baseline.
    metadata: the model's metadata (``None`` for the random baseline).
    """

    name: str
    backbone: UNetBackbone
    source: Path | None = None
    metadata: dict | None = None


def load_encoder(path: str | Path, name: str) -> Encoder:
    """The backbone of a pretraining run folder or model file (via the project's loader)."""
    from ..training.pretrain import load_pretext_network

    network, meta = load_pretext_network(path)
    backbone = network.backbone.eval()
    backbone.requires_grad_(False)
    return Encoder(name, backbone, Path(path), meta)


def random_encoder(config: BackboneConfig, seed: int, name: str = "random init") -> Encoder:
    """A backbone of shape ``config`` with seeded random initial weights; the global RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = UNetBackbone(config)
    backbone.eval()
    backbone.requires_grad_(False)
    return Encoder(name, backbone)


def bottleneck(backbone: UNetBackbone, x: torch.Tensor) -> torch.Tensor:
    """The bottleneck features ``backbone(x).coarse[0]`` without running the decoder: ``(B, C, p, p, p)``."""
    div = backbone.config.size_divisor
    if x.ndim != 5 or any(n % div for n in x.shape[2:]):
        raise ValueError(f"input must be (B, C, X, Y, Z) with spatial sizes divisible by {div}, got {tuple(x.shape)}")
    for block in backbone.encoder:
        x = block(x)
    return backbone.bottleneck(x)


@torch.no_grad()
def pooled_features(backbone: UNetBackbone, patches: torch.Tensor, batch_size: int = 16,
                    device: str | torch.device = "cpu", grid: int = 1) -> np.ndarray:
    """Bottleneck features of ``patches`` ``(N, 1, P, P, P)`` average-pooled to ``grid³`` cells:
    ``(N, C · grid³)`` float64, channel-major (channel ``c``'s cells are ``c · grid³ .. (c + 1) · grid³ - 1``).

    The backbone runs in eval mode (restored afterwards) under ``torch.no_grad``.
    """
    if patches.ndim != 5:
        raise ValueError(f"patches must be (N, C, P, P, P), got {tuple(patches.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if grid < 1:
        raise ValueError(f"grid must be positive, got {grid}")
    was_training = backbone.training
    backbone.eval()
    backbone.to(device)
    try:
        out = []
        for start in range(0, len(patches), batch_size):
            x = patches[start:start + batch_size].to(device, torch.float32)
            out.append(torch.nn.functional.adaptive_avg_pool3d(bottleneck(backbone, x), grid).flatten(1).double().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, backbone.config.channels[-1] * grid**3))
    finally:
        backbone.train(was_training)
