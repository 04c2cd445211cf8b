"""Where and with how many threads torch computes: the device rule and the CPU thread policy."""

from __future__ import annotations

import os

import torch

from .errors import VectorPoseError


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; ``cpu``, ``cuda`` and ``cuda:N`` are taken as they are.

    Raises :class:`~vectorpose.errors.VectorPoseError` for CUDA on a machine without it.
    """
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VectorPoseError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def set_torch_threads(threads: int | None, workers: int, device: str) -> None:
    """Set the torch threads of this process: ``threads`` if given; on the CPU with DataLoader
    ``workers``, the cores they leave free (each worker computes with one), so data and model do not
    fight for cores; else torch's default (a torchrun process has ``OMP_NUM_THREADS`` set, which is
    left alone)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads (--threads) must be positive, got {threads}")
        torch.set_num_threads(threads)
    elif workers > 0 and (device == "cpu" or device == "auto" and not torch.cuda.is_available()) and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - workers))
