"""The linear probes on features whose answer is known: R² ≈ 1 when linear, ≈ 0 on noise; chance on noise."""

from __future__ import annotations

import numpy as np
import pytest

from vectorpose.probe.fit import fit_classifier, fit_regression


def _split(x, y, n_fit):
    return x[:n_fit], y[:n_fit], x[n_fit:], y[n_fit:]


def test_regression_recovers_a_linear_code():
    rng = np.random.default_rng(0)
    target = rng.random((600, 3))
    mixing = rng.normal(size=(3, 32))
    features = target @ mixing + 0.01 * rng.normal(size=(600, 32))
    score = fit_regression(*_split(features, target, 300))
    assert score.r2 > 0.99 and all(v > 0.99 for v in score.r2_per_target) and len(score.r2_per_target) == 3
    # the same by a least-squares fit written out with NumPy
    x_fit = np.c_[features[:300], np.ones(300)]
    coef, *_ = np.linalg.lstsq(x_fit, target[:300], rcond=None)
    pred = np.c_[features[300:], np.ones(300)] @ coef
    r2_ref = 1 - ((pred - target[300:]) ** 2).sum(0) / ((target[300:] - target[300:].mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(score.r2_per_target, r2_ref, atol=0.005)


def test_regression_on_noise_scores_about_zero():
    rng = np.random.default_rng(1)
    features, target = rng.normal(size=(400, 64)), rng.random(400)
    score = fit_regression(*_split(features, target, 200))
    assert score.r2 <= 0.1 and len(score.r2_per_target) == 1
    assert score.r2 > -0.2  # regularisation shrinks towards the mean instead of fitting noise


def test_classifier_reads_separable_classes_and_sits_at_chance_on_noise():
    rng = np.random.default_rng(2)
    labels = rng.integers(6, size=900)
    centres = rng.normal(scale=4.0, size=(6, 16))
    features = centres[labels] + rng.normal(size=(900, 16))
    good = fit_classifier(*_split(features, labels, 450), classes=6)
    assert good.accuracy > 0.95 and good.chance == pytest.approx(1 / 6) and good.converged

    noise = rng.normal(size=(2000, 16))
    labels = rng.integers(48, size=2000)
    bad = fit_classifier(*_split(noise, labels, 1000), classes=48)
    # binomial 95 % band around chance for 1000 evaluation rows is about ±0.009
    assert abs(bad.accuracy - 1 / 48) < 0.02 and bad.chance == pytest.approx(1 / 48)


def test_majority_rate_is_the_fit_halfs_most_frequent_class_on_the_evaluation_half():
    x = np.random.default_rng(3).normal(size=(10, 2))
    y_fit = np.array([2, 2, 2, 1, 0])
    y_eval = np.array([2, 1, 1, 2, 0])
    score = fit_classifier(x[:5], y_fit, x[5:], y_eval, classes=3)
    assert score.majority == pytest.approx(2 / 5)
    one_class = fit_classifier(x[:5], np.zeros(5, int), x[5:], y_eval, classes=3)
    assert one_class.accuracy == one_class.majority == pytest.approx(1 / 5)


def test_inputs_are_checked():
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="same number of rows"):
        fit_regression(x, np.zeros(3), x, np.zeros(4))
    with pytest.raises(ValueError, match="same C"):
        fit_regression(x, np.zeros(4), np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="labels must lie"):
        fit_classifier(x, np.array([0, 1, 2, 3]), x, np.zeros(4, int), classes=3)
