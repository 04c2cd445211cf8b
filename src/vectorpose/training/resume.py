"""Resume state: everything a run needs to continue exactly where it stopped.

``resume.pt`` is a ``torch.save`` file of tensors and plain Python values (step, weights, optimizer,
scheduler, RNG), read back only with ``torch.load(weights_only=True)``, which refuses arbitrary
pickled objects. It is written to a temporary name and renamed, so a crash never leaves a
half-written file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError
from ..utils.files import atomic_write

RESUME_FILE = "resume.pt"


def save_resume_state(path: str | Path, state: dict) -> Path:
    """Atomically ``torch.save`` a dict of tensors and plain values (optimizer, scheduler, RNG, step)."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_resume_state(path: str | Path) -> dict:
    """Read resume state with ``weights_only=True``: a file holding arbitrary objects is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: resume state not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or others for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: refused or unreadable resume state ({first})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path}: not a VectorPOSE resume state")
    return state


def training_state(step: int, network, optimizer, scheduler, device: torch.device, **extra) -> dict:
    """Everything a run needs to continue exactly: weights, optimizer, schedule, RNG, step (+ ``extra``).

    The sample streams need no RNG state: each sample is a function of (seed, sample index).
    """
    state = {"step": step, "network": network.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(), **extra}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def restore_training_state(run_dir: Path, network, optimizer, scheduler, total_steps: int, device: torch.device) -> dict:
    """Load ``resume.pt`` into the objects (the schedule stretched to ``total_steps``); returns the state."""
    state = load_resume_state(run_dir / RESUME_FILE)
    network.load_state_dict(state["network"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scheduler.T_max = total_steps
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    return state
