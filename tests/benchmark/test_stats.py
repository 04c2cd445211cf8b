import math

import pytest

from vectorpose.benchmark.stats import paired_difference, summarise_values

# Student t quantiles from a printed table (two-sided 95 %): df 1, 2, 4.
T975 = {1: 12.706205, 2: 4.302653, 4: 2.776445}


def test_hand_computed_three_values():
    s = summarise_values([0.7, 0.8, 0.9])
    assert s.n == 3 and s.mean == pytest.approx(0.8)
    assert s.std == pytest.approx(0.1)
    half = T975[2] * 0.1 / math.sqrt(3)  # = 0.248414
    assert (s.ci_low, s.ci_high) == (pytest.approx(0.8 - half, abs=1e-6), pytest.approx(0.8 + half, abs=1e-6))
    assert half == pytest.approx(0.248414, abs=1e-6)


@pytest.mark.parametrize("values", [[1.0, 3.0], [0.2, 0.4, 0.1, 0.9, 0.5], [5.0, 5.0, 5.0]])
def test_matches_textbook_formula(values):
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = T975[n - 1] * std / math.sqrt(n)
    s = summarise_values(values)
    assert s.mean == pytest.approx(mean) and s.std == pytest.approx(std)
    assert s.ci_low == pytest.approx(mean - half, abs=1e-6) and s.ci_high == pytest.approx(mean + half, abs=1e-6)


def test_single_value_has_no_spread():
    s = summarise_values([0.5])
    assert (s.n, s.mean, s.std, s.ci_low, s.ci_high) == (1, 0.5, None, None, None)


@pytest.mark.parametrize("bad", [[], [float("nan")], [[1.0, 2.0]]])
def test_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        summarise_values(bad)


def test_rejects_bad_confidence():
    with pytest.raises(ValueError, match="confidence"):
        summarise_values([1.0, 2.0], confidence=1.5)


def test_paired_difference_matches_by_seed():
    method = {0: 0.80, 1: 0.79, 2: 0.81, 5: 0.9}
    baseline = {2: 0.78, 0: 0.78, 1: 0.80}
    d = paired_difference(method, baseline)
    assert d.seeds == (0, 1, 2)
    # differences +0.02, -0.01, +0.03: mean 0.013333, std 0.020817
    assert d.summary.mean == pytest.approx(0.04 / 3)
    assert d.summary.std == pytest.approx(math.sqrt(((0.02 - 0.04 / 3) ** 2 + (-0.01 - 0.04 / 3) ** 2 + (0.03 - 0.04 / 3) ** 2) / 2))
    assert d.positive == 2
    half = T975[2] * d.summary.std / math.sqrt(3)
    assert d.summary.ci_low == pytest.approx(d.summary.mean - half, abs=1e-6)


def test_paired_difference_without_shared_seeds():
    assert paired_difference({0: 1.0}, {1: 1.0}) is None
