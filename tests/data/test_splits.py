"""Split logic: determinism, a test split fixed across fractions and seeds, nested label subsets."""

from __future__ import annotations

import json

import pytest

from vectorpose.data.splits import Split, labelled_count, make_split, read_test_split, split_cases
from vectorpose.errors import DataError

IDS = [f"case_{i:03d}" for i in range(208)]


def test_deterministic_and_independent_of_input_order():
    a = make_split(IDS, split_seed=3, seed=1, fraction=0.1)
    b = make_split(list(reversed(IDS)), split_seed=3, seed=1, fraction=0.1)
    assert a == b


@pytest.mark.parametrize("split_seed", [0, 7])
def test_parts_are_disjoint_and_cover_all(split_seed):
    test, val, pool = split_cases(IDS, split_seed)
    assert not (set(test) & set(val)) and not (set(test) & set(pool)) and not (set(val) & set(pool))
    assert sorted(test + val + pool) == sorted(IDS)
    assert len(test) == 42 and len(val) == 21 and len(pool) == 145  # ceil(0.2 * 208), ceil(0.1 * 208)


@pytest.mark.parametrize("seed", range(4))
def test_test_split_fixed_and_fractions_nested(seed):
    fractions = [0.05, 0.1, 0.25, 0.5, 1.0]
    splits = [make_split(IDS, split_seed=0, seed=seed, fraction=f) for f in fractions]
    reference = make_split(IDS, split_seed=0, seed=99, fraction=0.3)
    for s in splits:
        assert s.test == reference.test and s.validation == reference.validation
        assert set(s.labelled) <= set(s.pool) and not set(s.labelled) & (set(s.test) | set(s.validation))
    for small, large in zip(splits, splits[1:]):
        assert set(small.labelled) < set(large.labelled)
    assert [len(s.labelled) for s in splits] == [round(f * 145) for f in fractions]


def test_seeds_draw_different_subsets_and_count_option():
    a, b = make_split(IDS, seed=0, fraction=0.05), make_split(IDS, seed=1, fraction=0.05)
    assert a.labelled != b.labelled
    eight = make_split(IDS, seed=0, fraction=None, count=8)
    assert len(eight.labelled) == 8 and set(eight.labelled) <= set(make_split(IDS, seed=0, fraction=None, count=20).labelled)


@pytest.mark.parametrize("kwargs", [dict(fraction=0.0), dict(fraction=1.5), dict(fraction=None, count=0), dict(fraction=None, count=146)])
def test_bad_amounts(kwargs):
    with pytest.raises(ValueError):
        make_split(IDS, **kwargs)


@pytest.mark.parametrize("pool,fraction,expected", [(10, 0.06, 1), (10, 0.15, 2), (145, 0.05, 7), (145, 0.1, 14), (3, 0.4, 1)])
def test_fraction_rounds_to_nearest_count(pool, fraction, expected):
    assert labelled_count(pool, fraction=fraction) == expected


@pytest.mark.parametrize("pool,fraction", [(10, 0.01), (10, 0.05), (145, 0.003)])
def test_fraction_that_yields_no_case_is_refused(pool, fraction):
    with pytest.raises(ValueError, match="gives no labelled case"):
        labelled_count(pool, fraction=fraction)


def test_too_few_cases_fail():
    with pytest.raises(ValueError, match="none for training"):
        split_cases(["a", "b"], test_fraction=0.5, validation_fraction=0.4)
    with pytest.raises(ValueError, match="unique"):
        split_cases(["a", "a", "b"])


def test_json_round_trip():
    s = make_split(IDS, fraction=0.1)
    assert Split.from_json(s.to_json()) == s


def test_fixed_test_split_and_validation_from_the_rest():
    ids = [f"c{i:02d}" for i in range(30)]
    test = tuple(f"c{i:02d}" for i in range(21, 30))
    t, v, pool = split_cases(ids, 0, 0.2, 0.1, test=test)
    assert t == test and len(v) == 3 and len(pool) == 18  # ceil(0.1 * 21) validation cases, from the 21 others
    assert not set(v) & set(test) and set(t) | set(v) | set(pool) == set(ids)
    small, large = make_split(ids, 0, 1, count=2, test=test), make_split(ids, 0, 1, count=5, test=test)
    assert set(small.labelled) <= set(large.labelled) and small.test == test and small.validation == v
    with pytest.raises(ValueError, match="not labelled cases"):
        split_cases(ids, test=("nope",))


def test_read_test_split(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"paper": {"test": ["a"], "train": ["b", "c"]}, "bad": {"test": []},
                                                       "both": {"test": ["a"], "train": ["a"]}}))
    assert read_test_split(tmp_path, "paper") == (("a",), ("b", "c"))
    (tmp_path / "mine.json").write_text(json.dumps({"test": ["c"]}))
    assert read_test_split(tmp_path, str(tmp_path / "mine.json")) == (("c",), None)
    for spec, message in (("missing", "has no split 'missing'"), ("bad", "non-empty"), ("both", "both in test and train"),
                          (str(tmp_path / "absent.json"), "split file not found")):
        with pytest.raises(DataError, match=message):
            read_test_split(tmp_path, spec)
