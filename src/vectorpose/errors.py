"""Errors that carry a message fit for a user: the CLI prints them as one line, without a traceback."""

from __future__ import annotations

from pathlib import Path


class VectorPoseError(Exception):
    """Base class of the errors a user can fix (bad input, bad option, existing output)."""


class DataError(VectorPoseError):
    """A data file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class DatasetError(VectorPoseError):
    """One or more problems found while validating a dataset, all reported at once."""

    def __init__(self, problems: list[DataError]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class CheckpointError(VectorPoseError):
    """A model or resume file that is missing, unsafe or inconsistent."""


class TrainingStopped(VectorPoseError):
    """A run stopped by SIGINT / SIGTERM at a step boundary, with its resume state saved."""

    def __init__(self, message: str, signum: int):
        self.signum = signum
        super().__init__(message)


class OutputError(VectorPoseError):
    """A result that could not be written (full disk, read-only folder); the old file is unchanged."""

    def __init__(self, path: str | Path, problem: str, advice: str = ""):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: cannot write ({problem})" + (f"; {advice}" if advice else ""))
