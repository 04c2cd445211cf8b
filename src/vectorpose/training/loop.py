"""The training loop that pretraining and fine-tuning both run.

A run is a :class:`TrainingTask`, the part that differs (what the loss of a batch is, what a
checkpoint saves, what validation does), driven by a :class:`TrainingLoop`, which owns the rest:
the optimisation step and schedule, the metric logs, checkpoints and resume state, stop signals,
and the bookkeeping across the processes of a ``torchrun`` run.

Each step ``s`` (counted from 1) the loop takes a batch (whatever the task's data loader yields;
the task moves nothing), asks the task for its loss terms (a dict of scalar tensors, the term
``task.loss_key`` being the one optimised), steps the optimizer and the scheduler, and averages the
terms over the processes. Every ``log_every`` steps (and at the last) it writes a row
``{"step", <mean of each term since the last row>, "lr", "<unit>_per_s", "elapsed_s"}``. Every
``checkpoint_every`` steps (and at the last) the task writes its model files (and may validate),
adding its entries (e.g. ``"val/dice"``) to the row, and the loop writes ``resume.pt``. SIGINT or
SIGTERM stops the run after the current step, with a checkpoint, by raising
:class:`~vectorpose.errors.TrainingStopped`. Rank 0 alone writes; every rank learns whether a write
failed (:func:`~vectorpose.training.distributed.in_turn`).
"""

from __future__ import annotations

import itertools
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch

from ..errors import OutputError, VectorPoseError
from .distributed import DistributedContext, any_rank, in_turn, mean_across_ranks
from .resume import RESUME_FILE, restore_training_state, save_resume_state, training_state
from .run import MetricsLog, saving_failed, stop_on_signal


def optimise(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimizer step on the scalar ``loss``: clear the gradients, back-propagate, apply."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


class TrainingTask(ABC):
    """What a kind of training adds to the loop.

    ``loss_key`` names the loss term that is optimised (a non-finite value stops the run);
    ``progress_keys`` the row entries the progress bar shows.
    """

    loss_key: str = "total"
    progress_keys: tuple[str, ...] = ()

    @abstractmethod
    def losses(self, batch, step: int) -> dict[str, torch.Tensor]:
        """The loss terms (scalar tensors, ``loss_key`` among them) of ``batch`` at ``step``."""

    @abstractmethod
    def checkpoint(self, step: int, scheduled: bool) -> dict:
        """Write the model files of ``step``; returns entries for that step's log row.

        ``scheduled`` is true every ``checkpoint_every`` steps and at the last, false when a stop
        signal asks for a checkpoint in between (then nothing beyond the weights should be computed).
        Called on rank 0 only.
        """

    def resume_state(self) -> dict:
        """Plain values the task needs back on ``--resume`` (saved in ``resume.pt``)."""
        return {}

    def started(self, first_batch) -> None:
        """Called on every rank once the first batch of this invocation is loaded (``None`` if there is
        none), before the metric logs open."""


@dataclass(frozen=True)
class LoopConfig:
    """``steps`` in all; ``batch_size`` samples per process and step; rows every ``log_every`` steps,
    checkpoints every ``checkpoint_every``; throughput is reported as ``<unit>_per_s``."""

    steps: int
    batch_size: int
    log_every: int
    checkpoint_every: int
    unit: str = "samples"

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass
class LoopResult:
    """The rows the run logged in this invocation (on every rank; rank 0 also wrote them)."""

    history: list[dict] = field(default_factory=list)

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}


class TrainingLoop:
    """Trains ``network`` (the unwrapped module, whose ``state_dict`` is saved) in the run folder ``out``.

    Call :meth:`resume` first to continue a run; :attr:`start` is then the step it continues from,
    which the data loader needs. :meth:`run` trains steps ``start + 1 .. config.steps``.
    """

    def __init__(self, out: Path, network: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, config: LoopConfig, ctx: DistributedContext,
                 progress: bool = True, description: str = "train"):
        self.out = Path(out)
        self.network = network
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.config = config
        self.ctx = ctx
        self.progress = progress
        self.description = description
        self.start = 0
        self.saved_step: int | None = None  # the step of the newest checkpoint on disk

    def resume(self) -> dict:
        """Load ``resume.pt`` into the network, optimizer, scheduler and RNG; returns the saved state."""
        state = restore_training_state(self.out, self.network, self.optimizer, self.scheduler, self.config.steps, self.ctx.device)
        self.start = self.saved_step = int(state["step"])
        return state

    def run(self, task: TrainingTask, batches: Iterable) -> LoopResult:
        """Train on ``batches`` (one per step from ``start + 1``); the network is in eval mode afterwards."""
        ctx = self.ctx
        logs = None
        result = LoopResult()
        self.network.train()
        window = _Window()
        # the data loader's workers start inside, inheriting the handlers: with the default ones,
        # Ctrl-C would end them
        with stop_on_signal() as stop:
            iterator = iter(batches)
            try:
                first = next(iterator, None)
                task.started(first)
                logs = in_turn(ctx, ctx.is_main, lambda: MetricsLog(self.out, self.start))
                self._steps(task, itertools.chain([] if first is None else [first], iterator), window, stop, logs, result)
            except OutputError as exc:
                raise saving_failed(exc, self.out, self.saved_step) from exc
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()  # stops a prefetching thread
                if logs is not None:
                    logs.close()
        self.network.eval()
        return result

    def _steps(self, task: TrainingTask, batches: Iterable, window: _Window, stop, logs: MetricsLog | None, result: LoopResult) -> None:
        from tqdm.auto import tqdm

        ctx, config = self.ctx, self.config
        bar = tqdm(total=config.steps, initial=self.start, desc=self.description, unit="step",
                   disable=not (self.progress and ctx.is_main), dynamic_ncols=True)
        try:
            for step, batch in enumerate(batches, start=self.start + 1):
                terms = task.losses(batch, step)
                optimise(self.optimizer, terms[task.loss_key])
                self.scheduler.step()
                # means over the ranks, so all of them see the same numbers and stop alike on a NaN
                values = mean_across_ranks(ctx, {k: v.item() for k, v in terms.items()})
                if not math.isfinite(values[task.loss_key]):
                    raise VectorPoseError(f"loss became {values[task.loss_key]} at step {step}; lower --lr")
                window.add(values)
                bar.update(1)
                # a signal may reach the ranks at different steps: they stop together, at the first
                # step any of them was asked to
                stopping = any_rank(ctx, bool(stop))
                logged = window.row(self.scheduler.get_last_lr()[0], config.batch_size * ctx.world_size, config.unit) \
                    if step % config.log_every == 0 or step == config.steps else {}
                scheduled = step % config.checkpoint_every == 0 or step == config.steps
                if logged or scheduled or stopping:
                    row = in_turn(ctx, ctx.is_main, lambda: self._record(task, logs, step, logged, scheduled, stopping))
                    row = row or ({"step": step, **logged} if logged else None)
                    if row:
                        result.history.append(row)
                        bar.set_postfix(_postfix(row, task.progress_keys, config.unit))
                    if scheduled or stopping:
                        window.restart_clock()  # checkpoints and validation are not training throughput
                if stopping:
                    raise stop.stopped(self.out, step)
        finally:
            bar.close()

    def _record(self, task: TrainingTask, logs: MetricsLog, step: int, logged: dict, scheduled: bool, stopping: bool) -> dict | None:
        """On rank 0: the checkpoint (if due), then the log row; returns the row written, if any."""
        extra = {}
        if scheduled or stopping:
            extra = task.checkpoint(step, scheduled)
            state = training_state(step, self.network, self.optimizer, self.scheduler, self.ctx.device, **task.resume_state())
            save_resume_state(self.out / RESUME_FILE, state)
            self.saved_step = step
        if not (logged or extra):
            return None
        row = {"step": step, **logged, **extra}
        logs.write(row)
        return row


class _Window:
    """Loss sums and timing since the last log row."""

    def __init__(self):
        self.begun = time.perf_counter()
        self.sums: dict[str, float] = {}
        self.count = 0
        self.tic = self.begun

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def row(self, lr: float, samples_per_step: int, unit: str) -> dict:
        """The means and rate of the window, which then starts anew."""
        now = time.perf_counter()
        row = {**{k: v / self.count for k, v in self.sums.items()}, "lr": lr,
               f"{unit}_per_s": self.count * samples_per_step / (now - self.tic), "elapsed_s": now - self.begun}
        self.sums, self.count, self.tic = {}, 0, time.perf_counter()
        return row

    def restart_clock(self) -> None:
        self.tic = time.perf_counter()


def _postfix(row: dict, keys: tuple[str, ...], unit: str) -> dict[str, str]:
    shown = {k: f"{row[k]:.3f}" for k in keys if k in row}
    rate = f"{unit}_per_s"
    return shown | ({f"{unit}/s": f"{row[rate]:.1f}"} if rate in row else {})
