"""The probe's case split: disjoint, complete, deterministic, and refused below two cases."""

from __future__ import annotations

import pytest

from vectorpose.probe.split import split_cases


def test_split_is_disjoint_complete_and_deterministic():
    ids = [f"case_{i:03d}" for i in range(11)]
    fit, evaluation = split_cases(ids, seed=3)
    assert not set(fit) & set(evaluation)
    assert sorted(fit + evaluation) == ids
    assert len(fit) == round(0.5 * 11)
    assert split_cases(list(reversed(ids)), seed=3) == (fit, evaluation)  # input order does not matter
    assert split_cases(ids, seed=4) != (fit, evaluation)
    fit30, eval30 = split_cases(ids, seed=3, fit_share=0.3)
    assert (len(fit30), len(eval30)) == (3, 8)


def test_both_halves_are_never_empty():
    assert split_cases(["a", "b"], seed=0, fit_share=0.01) in ((("a",), ("b",)), (("b",), ("a",)))
    fit, evaluation = split_cases(["a", "b", "c"], seed=0, fit_share=0.99)
    assert (len(fit), len(evaluation)) == (2, 1)


@pytest.mark.parametrize("ids, share, message", [(["only"], 0.5, "at least 2 cases"), (["a", "a"], 0.5, "unique"),
                                                 (["a", "b"], 1.0, "fit_share"), (["a", "b"], 0.0, "fit_share")])
def test_bad_splits_are_refused(ids, share, message):
    with pytest.raises(ValueError, match=message):
        split_cases(ids, seed=0, fit_share=share)
