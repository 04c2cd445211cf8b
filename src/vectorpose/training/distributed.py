"""The process group of a run started by ``torchrun``: who this process is, and what ranks agree on.

``torchrun`` (``python -m torch.distributed.run``) starts one process per GPU or CPU slot and sets
``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. Without them (or with
``WORLD_SIZE=1``) everything here is a no-op for one process, so the same code runs unchanged alone.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

from ..devices import resolve_device
from ..errors import VectorPoseError

T = TypeVar("T")

# Ranks wait at a barrier while rank 0 preprocesses the whole dataset on a first run, which can take
# far longer than the default (10 min for NCCL). A process that dies is caught sooner: torchrun then
# stops the others.
GROUP_TIMEOUT = timedelta(hours=2)


class PeerFailed(VectorPoseError):
    """Raised on the ranks that did not fail when another rank failed (which reports its own error)."""


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run: ``rank`` of ``world_size``, ``local_rank`` on its machine, its device.

    Use it as a context manager: leaving it tears down the process group it initialised (also on error).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = field(default=False, repr=False)

    def __post_init__(self):
        if self.world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {self.world_size}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must lie in [0, {self.world_size}), got {self.rank}")
        if self.local_rank < 0:
            raise ValueError(f"local_rank must be >= 0, got {self.local_rank}")

    @property
    def is_main(self) -> bool:
        """True on rank 0, the one process that writes the run folder and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def close(self) -> None:
        """Destroy the process group if this context created it (safe to call twice)."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    def __enter__(self) -> DistributedContext:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _env_int(name: str, default: int | None = None) -> int:
    text = os.environ.get(name)
    if text is None:
        if default is None:
            raise VectorPoseError(f"${name} is not set although $WORLD_SIZE > 1; start several processes with torchrun")
        return default
    try:
        return int(text)
    except ValueError:
        raise VectorPoseError(f"${name} must be an integer, got {text!r}") from None


def init_distributed(device_name: str) -> DistributedContext:
    """Join the process group torchrun described in the environment, or return a one-process context.

    With ``WORLD_SIZE`` > 1 the group uses NCCL when the device is CUDA and gloo otherwise; each process
    takes GPU ``cuda:$LOCAL_RANK`` (``device_name`` ``auto`` or ``cuda``). A group that the caller
    already initialised is reused and left alone on close. Alone, the device is ``resolve_device(device_name)``.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size < 1:
        raise VectorPoseError(f"$WORLD_SIZE must be >= 1, got {world_size}")
    if world_size == 1:
        return DistributedContext(device=resolve_device(device_name))
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
    if not 0 <= rank < world_size or local_rank < 0:
        raise VectorPoseError(f"$RANK {rank} / $LOCAL_RANK {local_rank} do not fit $WORLD_SIZE {world_size}")

    if device_name.startswith("cuda:"):
        raise VectorPoseError(f"--device {device_name} would put all {world_size} processes on one GPU; "
                              "pass --device cuda (each process takes cuda:$LOCAL_RANK)")
    device = resolve_device(device_name)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise VectorPoseError(f"$LOCAL_RANK {local_rank} but this machine has {torch.cuda.device_count()} GPU(s): "
                                  "start at most one process per GPU (--nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)  # NCCL and object collectives use the current device

    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size, timeout=GROUP_TIMEOUT)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device, owns_group=owns)


def _reduce(ctx: DistributedContext, values: list[float], op) -> list[float]:
    # NCCL reduces only tensors on the GPU; gloo those on the CPU
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor, op=op)
    return tensor.tolist()


def mean_across_ranks(ctx: DistributedContext, values: dict[str, float]) -> dict[str, float]:
    """The mean of each value over all ranks (every rank gets the same dict, in the same key order).

    All ranks must pass the same keys. Alone: ``values`` unchanged.
    """
    if not ctx.distributed:
        return values
    sums = _reduce(ctx, list(values.values()), dist.ReduceOp.SUM)
    return {k: s / ctx.world_size for k, s in zip(values, sums)}


def any_rank(ctx: DistributedContext, flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one (e.g. a stop request). Alone: ``flag``."""
    if not ctx.distributed:
        return bool(flag)
    return _reduce(ctx, [float(bool(flag))], dist.ReduceOp.MAX)[0] > 0


def barrier(ctx: DistributedContext) -> None:
    """Wait until every rank got here. Alone: returns at once."""
    if not ctx.distributed:
        return
    if ctx.device.type == "cuda":
        dist.barrier(device_ids=[ctx.local_rank])
    else:
        dist.barrier()


def gather_objects(ctx: DistributedContext, obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank. Alone: ``[obj]``."""
    if not ctx.distributed:
        return [obj]
    gathered: list = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def in_turn(ctx: DistributedContext, active: bool, fn: Callable[[], T]) -> T | None:
    """Call ``fn`` on the ranks where ``active`` is true while the others wait; then all ranks agree on
    whether it failed anywhere.

    Returns ``fn()`` where it ran, else None. Where ``fn`` raised, the exception propagates; on the
    other ranks :class:`PeerFailed` is raised, so no rank is left waiting for a collective that never
    comes. Alone: ``fn()`` if ``active``.
    """
    if not ctx.distributed:
        return fn() if active else None
    result = None
    try:
        if active:
            result = fn()
    except BaseException:
        any_rank(ctx, True)
        raise
    if any_rank(ctx, False):
        raise PeerFailed(f"process {ctx.rank} of {ctx.world_size}: stopped because another process failed (its error is shown above)")
    return result


def exit_torchrun_worker(code: int) -> None:
    """In a process that torchrun started (``WORLD_SIZE`` > 1), end it now with exit status ``code``,
    without the interpreter's shutdown; elsewhere return at once.

    Why: with PyTorch 2.13, a gloo process group that DistributedDataParallel used outlives
    ``destroy_process_group`` together with its worker threads. A worker thread that drops its last
    collective while the interpreter shuts down needs the GIL for a Python object that collective
    holds, and CPython ends a thread that asks for the GIL then, which aborts the process ("terminate
    called without an active exception"; ``benchmarks/torchrun_exit.py`` counts how often). A run has
    closed every file it writes before this is called; the standard streams are flushed here.
    """
    try:
        world_size = _env_int("WORLD_SIZE", 1)
    except VectorPoseError:  # the command has already reported the bad value
        return
    if world_size <= 1:
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)
