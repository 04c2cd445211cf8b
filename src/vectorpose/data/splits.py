"""Deterministic splits of labelled cases: a fixed test split, a validation split, nested label subsets.

The test and validation splits depend only on the case ids and ``split_seed``: they are the same for
every label fraction and every training seed, so every model of a study is scored on the same cases.
The labelled training subset is a prefix of a seeded permutation of the remaining pool, so for one
seed the 5 % subset is contained in the 10 % subset, and so on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    """Case ids of one fine-tuning run."""

    test: tuple[str, ...]
    validation: tuple[str, ...]
    pool: tuple[str, ...]  # every case available for training, in the seed's order
    labelled: tuple[str, ...]  # the training subset actually used

    def to_json(self) -> dict:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict) -> Split:
        return cls(**{k: tuple(str(c) for c in d[k]) for k in ("test", "validation", "pool", "labelled")})


def _ordered(case_ids, seed: int) -> list[str]:
    ids = sorted(set(case_ids))
    if len(ids) != len(case_ids):
        raise ValueError("case ids must be unique")
    return [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]


def split_cases(
    case_ids: list[str],
    split_seed: int = 0,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """``(test, validation, pool)``: disjoint, covering all cases, fixed by ``split_seed`` alone."""
    if not 0 <= test_fraction < 1 or not 0 <= validation_fraction < 1 or test_fraction + validation_fraction >= 1:
        raise ValueError(f"test_fraction and validation_fraction must be >= 0 and sum below 1, got {test_fraction}, {validation_fraction}")
    ordered = _ordered(case_ids, split_seed)
    n_test = math.ceil(test_fraction * len(ordered)) if test_fraction > 0 else 0
    n_val = math.ceil(validation_fraction * len(ordered)) if validation_fraction > 0 else 0
    if len(ordered) - n_test - n_val < 1:
        raise ValueError(f"{len(ordered)} labelled cases leave none for training after {n_test} test and {n_val} validation cases")
    test = tuple(sorted(ordered[:n_test]))
    validation = tuple(sorted(ordered[n_test:n_test + n_val]))
    return test, validation, tuple(sorted(ordered[n_test + n_val:]))


def labelled_count(pool_size: int, fraction: float | None = None, count: int | None = None) -> int:
    """How many training cases a fraction (rounded to the nearest count) or an explicit count gives."""
    if (fraction is None) == (count is None):
        raise ValueError("give exactly one of fraction and count")
    if count is not None:
        if not 1 <= count <= pool_size:
            raise ValueError(f"labelled count must lie in 1..{pool_size} (the training pool), got {count}")
        return count
    assert fraction is not None
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must lie in (0, 1], got {fraction}")
    n = round(fraction * pool_size)
    if n < 1:
        # rounding up would train on more labels than the fraction says and mislabel the experiment
        raise ValueError(f"label fraction {fraction:g} of {pool_size} training cases gives no labelled case; "
                         f"use a fraction above {0.5 / pool_size:.3g} or a count of labelled cases")
    return n


def make_split(
    case_ids: list[str],
    split_seed: int = 0,
    seed: int = 0,
    fraction: float | None = 1.0,
    count: int | None = None,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
) -> Split:
    """The full split of one run: fixed test/validation, and the first ``n`` of the pool in ``seed`` order."""
    test, validation, pool = split_cases(case_ids, split_seed, test_fraction, validation_fraction)
    n = labelled_count(len(pool), None if count is not None else fraction, count)
    order = tuple(_ordered(list(pool), seed))
    return Split(test=test, validation=validation, pool=order, labelled=tuple(sorted(order[:n])))
