"""The linear probes: ridge regression for position and scale, logistic regression for orientation.

Measures the paper's claim (Zhang et al., ISBI 2023) with the simplest readers there are: if a
*linear* function of the pooled features ``X`` (``(n, C)``) predicts a crop's position, scale or
orientation on cases the probe never saw, the encoder holds that information explicitly.

- regression (:func:`fit_regression`): ``StandardScaler`` then ``RidgeCV`` with alphas on a log grid;
  targets ``(n,)`` or ``(n, k)``; scored by R² per target column on the evaluation rows
  (``sklearn.metrics.r2_score``; 0 = no better than the evaluation mean, 1 = exact).
- classification (:func:`fit_classifier`): ``StandardScaler`` then multinomial ``LogisticRegression``
  (lbfgs, fixed ``random_state``); scored by accuracy on the evaluation rows, beside the majority-class
  rate (the fit rows' most frequent class, scored on the evaluation rows): with a skewed label
  distribution that, not ``1 / classes``, is what a probe that learnt nothing reaches.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

ALPHAS = tuple(float(a) for a in np.logspace(-3, 5, 17))


@dataclass(frozen=True)
class RegressionScore:
    """R² on the evaluation rows: ``r2`` the mean over target columns, ``r2_per_target`` each; ``alpha`` chosen."""

    r2: float
    r2_per_target: tuple[float, ...]
    alpha: float

    def to_json(self) -> dict:
        return {"r2": self.r2, "r2_per_target": list(self.r2_per_target), "alpha": self.alpha}


@dataclass(frozen=True)
class ClassifierScore:
    """Accuracy on the evaluation rows, the nominal chance ``1 / classes``, the majority-class rate, and
    whether the solver converged within its iterations."""

    accuracy: float
    chance: float
    majority: float
    classes: int
    converged: bool = True

    def to_json(self) -> dict:
        return {"accuracy": self.accuracy, "chance": self.chance, "majority": self.majority, "classes": self.classes,
                "converged": self.converged}


def _check(x_fit: np.ndarray, y_fit: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray) -> None:
    if x_fit.ndim != 2 or x_eval.ndim != 2 or x_fit.shape[1] != x_eval.shape[1]:
        raise ValueError(f"features must be (n, C) with the same C, got {x_fit.shape} and {x_eval.shape}")
    if len(x_fit) != len(y_fit) or len(x_eval) != len(y_eval):
        raise ValueError("features and targets must have the same number of rows")
    if len(x_fit) < 2 or len(x_eval) < 2:
        raise ValueError(f"need at least 2 fit rows and 2 evaluation rows (R² needs two), got {len(x_fit)} and {len(x_eval)}")


def fit_regression(x_fit: np.ndarray, y_fit: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray,
                   alphas: tuple[float, ...] = ALPHAS) -> RegressionScore:
    """Fit ``StandardScaler + RidgeCV(alphas)`` on the fit rows; R² of each target column on the evaluation rows."""
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_fit, x_eval = np.asarray(x_fit, np.float64), np.asarray(x_eval, np.float64)
    y_fit, y_eval = np.asarray(y_fit, np.float64), np.asarray(y_eval, np.float64)
    _check(x_fit, y_fit, x_eval, y_eval)
    y_fit2, y_eval2 = y_fit.reshape(len(y_fit), -1), y_eval.reshape(len(y_eval), -1)
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas))
    model.fit(x_fit, y_fit2)
    predicted = model.predict(x_eval).reshape(y_eval2.shape)
    per = r2_score(y_eval2, predicted, multioutput="raw_values")
    return RegressionScore(float(np.mean(per)), tuple(float(v) for v in per), float(model[-1].alpha_))


def fit_classifier(x_fit: np.ndarray, y_fit: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray, classes: int,
                   c: float = 1.0, max_iter: int = 2000, seed: int = 0) -> ClassifierScore:
    """Fit ``StandardScaler + LogisticRegression`` (multinomial) on the fit rows; accuracy on the evaluation rows."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_fit, x_eval = np.asarray(x_fit, np.float64), np.asarray(x_eval, np.float64)
    y_fit, y_eval = np.asarray(y_fit, np.int64), np.asarray(y_eval, np.int64)
    _check(x_fit, y_fit, x_eval, y_eval)
    if classes < 2 or y_fit.min() < 0 or max(y_fit.max(), y_eval.max()) >= classes:
        raise ValueError(f"labels must lie in 0..{classes - 1}")
    majority_class = int(np.bincount(y_fit, minlength=classes).argmax())
    majority = float(np.mean(y_eval == majority_class))
    if len(np.unique(y_fit)) < 2:  # nothing to discriminate: the probe can only answer the one class
        return ClassifierScore(majority, 1.0 / classes, majority, classes)
    # lbfgs on more than two classes fits the multinomial (softmax) model
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings():
        # a probe that needs more iterations is still a linear probe: recorded in the score, not printed
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_fit, y_fit)
    accuracy = float(np.mean(model.predict(x_eval) == y_eval))
    converged = bool(np.max(model[-1].n_iter_) < max_iter)
    return ClassifierScore(accuracy, 1.0 / classes, majority, classes, converged)
