"""The probe's case split: a fit half and an evaluation half with no case in both.

A linear probe (Zhang et al., ISBI 2023, measured head on) is scored on crops of cases it never saw,
so a probe that memorised one scan's appearance cannot pass for spatial awareness. The split depends
only on the sorted case ids and the seed.
"""

from __future__ import annotations

import numpy as np


def split_cases(case_ids, seed: int, fit_share: float = 0.5) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(fit, evaluation)``: disjoint, both non-empty, ``round(fit_share * n)`` (at least 1, at most
    ``n - 1``) cases to fit on, chosen by a seeded permutation of the sorted ids; each half sorted.

    Raises:
        ValueError: fewer than 2 cases, duplicate ids, or ``fit_share`` outside ``(0, 1)``.
    """
    ids = sorted(str(c) for c in case_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("case ids must be unique")
    if len(ids) < 2:
        raise ValueError(f"the probe needs at least 2 cases (one to fit on, one to evaluate on), got {len(ids)}")
    if not 0.0 < fit_share < 1.0:
        raise ValueError(f"fit_share must lie strictly between 0 and 1, got {fit_share}")
    order = np.random.default_rng(seed).permutation(len(ids))
    n_fit = min(max(int(round(fit_share * len(ids))), 1), len(ids) - 1)
    fit = tuple(sorted(ids[i] for i in order[:n_fit]))
    evaluation = tuple(sorted(ids[i] for i in order[n_fit:]))
    return fit, evaluation
