"""Speed options of a training step: bf16 autocast, channels-last 3D, ``torch.compile``, and where
the boundary target is made.

The first three are off by default and none is needed on the CPU; they are meant for CUDA, where
bf16 halves memory traffic and channels-last lets cuDNN pick faster 3D convolution kernels. Pinned
host memory for CUDA is switched on by the data loaders themselves
(:func:`~vectorpose.training.run.step_loader`). The boundary target (a 5³ median filter) is made by
the DataLoader workers on the CPU and on the training device on a GPU (``"auto"``); a GPU whose
step is launch-bound and a host with many cores may do better with ``"workers"``. It changes only
where the same target is computed, not the results.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch
from torch import nn

AMP_MODES = (None, "bf16")
BOUNDARY_PLACES = ("auto", "workers", "device")


@dataclass(frozen=True)
class SpeedOptions:
    """``amp``: ``None`` or ``"bf16"`` (autocast); ``channels_last``: NDHWC memory layout; ``compile``:
    ``torch.compile``; ``boundary_in``: ``"auto"``, ``"workers"`` or ``"device"``."""

    amp: str | None = None
    channels_last: bool = False
    compile: bool = False
    boundary_in: str = "auto"

    def __post_init__(self):
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.boundary_in not in BOUNDARY_PLACES:
            raise ValueError(f"boundary_in must be one of {BOUNDARY_PLACES}, got {self.boundary_in!r}")

    def boundary_in_workers(self, device: torch.device) -> bool:
        """Whether the DataLoader workers make the boundary target, rather than the training device."""
        return self.boundary_in == "workers" or (self.boundary_in == "auto" and torch.device(device).type != "cuda")

    def to_json(self) -> dict:
        return asdict(self)

    def layout(self, network: nn.Module) -> nn.Module:
        """``network`` (in place) in the chosen memory layout."""
        return network.to(memory_format=torch.channels_last_3d) if self.channels_last else network

    def compiled(self, module: nn.Module) -> nn.Module:
        """``module`` compiled if asked; the result shares its weights. Compile after wrapping in DDP."""
        return torch.compile(module) if self.compile else module

    def inputs(self, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        """Move a batch to ``device`` (asynchronously from pinned memory), 5D tensors in the chosen layout."""
        moved = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if self.channels_last:
            moved = {k: v.contiguous(memory_format=torch.channels_last_3d) if v.ndim == 5 else v for k, v in moved.items()}
        return moved

    def autocast(self, device: torch.device):
        return bf16_autocast(device, self.amp == "bf16")


def bf16_autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast for ``device``'s type when ``enabled``, else no context."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()
