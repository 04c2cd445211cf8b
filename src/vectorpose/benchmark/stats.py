"""Summary statistics of benchmark cells: mean, sample standard deviation and Student-t intervals.

Seeds are few (3 by default), so intervals use the t distribution with ``n - 1`` degrees of freedom;
differences between methods are paired over seeds, because a seed fixes the labelled cases, the
initial weights of the new layers and the patch stream for every method alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Summary:
    """``n`` values: mean, sample std (``ddof=1``) and the ``confidence`` t-interval of the mean.

    With one value the std and the interval are undefined (``None``).
    """

    n: int
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float

    def to_json(self) -> dict:
        return asdict(self)


def summarise_values(values: Sequence[float], confidence: float = 0.95) -> Summary:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"need a non-empty list of values, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"values must be finite, got {x.tolist()}")
    mean = float(x.mean())
    if x.size < 2:
        return Summary(1, mean, None, None, None, confidence)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=x.size - 1)) * std / math.sqrt(x.size)
    return Summary(int(x.size), mean, std, mean - half, mean + half, confidence)


@dataclass(frozen=True)
class PairedDifference:
    """``method - baseline`` over the seeds both have: the summary and how many pairs were positive."""

    summary: Summary
    positive: int
    seeds: tuple[int, ...]

    def to_json(self) -> dict:
        return {**self.summary.to_json(), "positive": self.positive, "seeds": list(self.seeds)}


def paired_difference(method: Mapping[int, float], baseline: Mapping[int, float], confidence: float = 0.95) -> PairedDifference | None:
    """Differences matched by seed; ``None`` when no seed is shared."""
    seeds = tuple(sorted(set(method) & set(baseline)))
    if not seeds:
        return None
    diffs = [method[s] - baseline[s] for s in seeds]
    return PairedDifference(summarise_values(diffs, confidence), sum(d > 0 for d in diffs), seeds)
