"""Deterministic splits of labelled cases: a fixed test split, a validation split, nested label subsets.

The test and validation splits depend only on the case ids and ``split_seed``: they are the same for
every label fraction and every training seed, so every model of a study is scored on the same cases.
A fixed test split (a published protocol's, e.g. ``paper_split`` in BTCV's ``dataset.json``) replaces
the seeded one; the validation split is then drawn from the remaining cases.
The labelled training subset is a prefix of a seeded permutation of the remaining pool, so for one
seed the 5 % subset is contained in the 10 % subset, and so on.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import DataError
from .datasets import Dataset

SPLIT_HELP = ("A fixed test split: a key of the data's dataset.json (e.g. paper_split) or a JSON file, holding "
              "{\"test\": [case ids]} (cases under \"train\", if given, are the only others used). "
              "Without it, a seeded --test-fraction of the cases.")


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


def _test_count(n_cases: int, test_fraction: float) -> int:
    return math.ceil(test_fraction * n_cases) if test_fraction > 0 else 0


def split_cases(
    case_ids: list[str],
    split_seed: int = 0,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    test: tuple[str, ...] | None = None,
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """``(test, validation, pool)``: disjoint, covering all cases, fixed by ``split_seed`` alone.

    With a fixed ``test`` (case ids among ``case_ids``) the test split is that, ``test_fraction`` is
    not used, and the validation split is ``validation_fraction`` of the other cases (rounded up).
    """
    if not 0 <= test_fraction < 1 or not 0 <= validation_fraction < 1 or test_fraction + validation_fraction >= 1:
        raise ValueError(f"test_fraction and validation_fraction must be >= 0 and sum below 1, got {test_fraction}, {validation_fraction}")
    ordered = _ordered(case_ids, split_seed)
    if test is None:
        n_test = _test_count(len(ordered), test_fraction)
        fixed, rest = ordered[:n_test], ordered[n_test:]
    else:
        unknown = sorted(set(test) - set(ordered))
        if unknown:
            raise ValueError(f"the test split names cases that are not labelled cases of the data: {', '.join(unknown[:5])}")
        held_out = set(test)
        fixed, rest = list(test), [c for c in ordered if c not in held_out]
    base = len(ordered) if test is None else len(rest)
    n_val = math.ceil(validation_fraction * base) if validation_fraction > 0 else 0
    if len(rest) - n_val < 1:
        raise ValueError(f"{len(ordered)} labelled cases leave none for training after {len(fixed)} test and {n_val} validation cases")
    return tuple(sorted(fixed)), tuple(sorted(rest[:n_val])), tuple(sorted(rest[n_val:]))


def read_test_split(root: Path, spec: str) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """``(test ids, train ids or None)`` of ``spec``: a key of ``root/dataset.json`` or a JSON file."""
    path = Path(spec)
    if path.suffix == ".json" or path.is_file():
        source, where = path, str(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(path, "split file not found") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(path, f"not a readable JSON split ({exc})") from None
    else:
        source, where = root / "dataset.json", f"key {spec!r} of {root / 'dataset.json'}"
        try:
            d = json.loads(source.read_text(encoding="utf-8")).get(spec)
        except (OSError, json.JSONDecodeError):
            d = None
        if d is None:
            raise DataError(source, f"has no split {spec!r}; give a key of dataset.json or a JSON file")
    if not isinstance(d, dict) or not isinstance(d.get("test"), list) or not d["test"] or \
            not all(isinstance(c, str) for c in d["test"] + list(d.get("train") or [])):
        raise DataError(source, f"{where}: a split needs a non-empty \"test\" list of case ids (and optionally \"train\")")
    train = d.get("train")
    overlap = sorted(set(d["test"]) & set(train or []))
    if overlap:
        raise DataError(source, f"{where}: cases both in test and train: {', '.join(overlap[:5])}")
    return tuple(d["test"]), (tuple(train) if train is not None else None)


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


def cases_in_split(cases, test: tuple[str, ...] | None, train: tuple[str, ...] | None) -> tuple:
    """The ``cases`` (anything with a ``case_id``) a split uses: all of them, or only its test and
    training cases when it lists the training ones."""
    if train is None:
        return tuple(cases)
    used = set(test) | set(train)
    return tuple(c for c in cases if c.case_id in used)


def training_part(dataset: Dataset, split: str | None, split_seed: int, test_fraction: float) -> Dataset:
    """``dataset`` without its test cases: those of split ``split`` when given (and, if it lists them,
    only its training cases), else the test split that a run without a fixed split draws from the
    labelled cases with ``split_seed`` and ``test_fraction`` (the same cases as :func:`split_cases`;
    unlabelled cases stay)."""
    if split is not None:
        test, train = read_test_split(dataset.root, split)
        cases, held_out, why = cases_in_split(dataset.cases, test, train), set(test), f"split {split!r}"
    else:
        labelled = [c.case_id for c in dataset.labelled]
        cases = dataset.cases
        held_out = set(_ordered(labelled, split_seed)[: _test_count(len(labelled), test_fraction)])
        why = f"a test fraction of {test_fraction:g}"
    kept = tuple(c for c in cases if c.case_id not in held_out)
    if not kept:
        raise DataError(dataset.root, f"{why} leaves no case outside its test split")
    return replace(dataset, cases=kept)


def make_split(
    case_ids: list[str],
    split_seed: int = 0,
    seed: int = 0,
    fraction: float | None = 1.0,
    count: int | None = None,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    test: tuple[str, ...] | None = None,
) -> Split:
    """The full split of one run: fixed test/validation, and the first ``n`` of the pool in ``seed`` order."""
    test, validation, pool = split_cases(case_ids, split_seed, test_fraction, validation_fraction, test)
    n = labelled_count(len(pool), None if count is not None else fraction, count)
    order = tuple(_ordered(list(pool), seed))
    return Split(test=test, validation=validation, pool=order, labelled=tuple(sorted(order[:n])))
