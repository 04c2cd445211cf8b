"""What every training run shares: the run folder's rules, the data loader, the metric logs and stop signals."""

from __future__ import annotations

import json
import shutil
import signal
import threading
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..errors import OutputError, TrainingStopped, VectorPoseError
from ..utils.files import atomic_write, remove_stale_temporaries
from .resume import RESUME_FILE

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"


def step_loader(dataset, batch_size: int, start: int, steps: int, seed: int, workers: int, device: torch.device,
                collate_fn=None) -> DataLoader:
    """Batches for steps ``start + 1 .. steps`` of a dataset whose samples are seeded by their index.

    Batch ``k`` always holds samples ``k·B .. k·B + B - 1``, so a resumed run sees what the original
    saw. A private generator keeps the loader from drawing on the global RNG (which dropout uses) when
    its iterator starts; otherwise a resumed run would draw other dropout masks.
    """
    return DataLoader(dataset, batch_size=batch_size, sampler=range(start * batch_size, steps * batch_size), num_workers=workers,
                      pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed), collate_fn=collate_fn)


def resume_conflicts(out: Path, section: str, config) -> tuple[dict, list[str]]:
    """For ``--resume``: the saved ``config.json`` of ``out`` and the settings of its ``section`` in which
    ``config`` (a config dataclass with ``to_json`` / ``from_json``) differs; ``steps`` may grow."""
    saved_run = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))
    saved = type(config).from_json(saved_run[section])
    if replace(saved, steps=config.steps) == config:
        return saved_run, []
    now, before = config.to_json(), saved.to_json()
    return saved_run, [k for k in now if k != "steps" and now[k] != before.get(k)] or [section]


def check_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless resuming or told to overwrite; changes nothing on disk."""
    if resume and overwrite:
        raise VectorPoseError("--resume and --overwrite contradict each other: choose one")
    if out.exists() and not out.is_dir():
        raise VectorPoseError(f"{out}: exists and is not a folder")
    if resume:
        for name in (RESUME_FILE, CONFIG_FILE):
            if not (out / name).is_file():
                raise VectorPoseError(f"{out}: nothing to resume (no {name})")
    elif out.is_dir() and any(out.iterdir()) and not overwrite:
        raise VectorPoseError(f"{out}: already holds results; pass --resume to continue the run or --overwrite to replace it")


def create_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Called once the data is known to be good, so a bad dataset never costs the old run.

    On resume, the temporary files of a write cut off by SIGKILL are removed.
    """
    if overwrite and not resume and out.is_dir():
        shutil.rmtree(out)
    if resume:
        remove_stale_temporaries(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(out, exc.strerror or str(exc)) from None


def saving_failed(exc: OutputError, out: Path, saved_step: int | None) -> OutputError:
    """``exc`` (a failed checkpoint or log write) with what the user still has and how to go on."""
    if saved_step is None:
        return OutputError(exc.path, exc.problem, "no checkpoint was saved yet")
    return OutputError(exc.path, exc.problem, f"the checkpoint of step {saved_step} in {out} is intact: "
                                              "free space or fix permissions, then continue with --resume")


class MetricsLog:
    """JSON-lines and TensorBoard logs of a run; on resume, rows past the resumed step are dropped.

    Keys in ``LOSS_KEYS`` go under ``loss/`` in TensorBoard, the rest under ``train/`` (or the
    prefix a row's key already has, e.g. ``val/dice``).
    """

    def __init__(self, run_dir: Path, start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.path = run_dir / METRICS_FILE
        if start_step > 0 and self.path.is_file():
            rows = [l for l in self.path.read_text(encoding="utf-8").splitlines() if l.strip() and json.loads(l)["step"] <= start_step]
            atomic_write(self.path, lambda tmp: tmp.write_text("".join(r + "\n" for r in rows), encoding="utf-8"))
        try:
            self.file = open(self.path, "a", encoding="utf-8")
            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)
        except OSError as exc:
            raise OutputError(Path(exc.filename or self.path), exc.strerror or str(exc)) from None

    def write(self, row: dict) -> None:
        try:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()
        except OSError as exc:
            raise OutputError(self.path, exc.strerror or str(exc)) from None
        for key, value in row.items():
            if key != "step":
                tag = key if "/" in key else ("loss/" if key in LOSS_KEYS else "train/") + key
                self.writer.add_scalar(tag, value, row["step"])

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass  # the row that could not be flushed was reported by write()
        self.writer.close()


LOSS_KEYS = {"total", "vp", "vp_r", "vp_theta", "vp_phi", "rec", "boundary", "dice_ce"}


class StopSignal:
    """Set by SIGINT / SIGTERM while a training loop runs; the loop checks it between steps."""

    def __init__(self):
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    def stopped(self, out: Path, step: int) -> TrainingStopped:
        name = signal.Signals(self.signum).name if self.signum else "a signal"
        return TrainingStopped(f"{out}: stopped by {name} after step {step}; its state is saved, continue with --resume",
                               self.signum or signal.SIGTERM)


@contextmanager
def stop_on_signal():
    """Turn SIGINT and SIGTERM into a request to stop at the next step boundary.

    The loop then saves its resume state and raises :class:`TrainingStopped`, so a pre-empted job
    loses at most one step. A second signal while saving is ignored. Outside the main thread (where
    Python cannot install handlers) signals keep their default behaviour.
    """
    flag = StopSignal()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag.signum = flag.signum or signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
