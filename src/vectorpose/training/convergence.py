"""Whether a fine-tuning run had converged: did validation Dice still rise in the last quarter of the run?

A run that stops while its validation Dice is still rising measures how fast a method learns, not how
well it can do with its labels; a label-efficiency study needs every cell past that point. The rule
here reads the validation curve ``[(step, dice), ...]`` of a run of ``steps`` steps:

- the *late* rounds are those after ``(1 - last_share) · steps``, the *early* ones all before;
- ``late_gain`` = best late Dice − best early Dice;
- the run converged when ``late_gain <= tolerance``; with no early or no late round it is unknown.

A curve that falls in the last quarter counts as converged (more steps would not help).

The same late window judges each class: a class *collapsed* when its validation Dice stayed below
``COLLAPSE_DICE`` in every late round (never learned, or lost: the network labels it background or
another class; ``validation_confusion`` says which, when the run recorded it). Few-label fine-tuning
on body scans fails that way, and a mean Dice hides it. A class is still *rising* when its own late
gain exceeds ``tolerance``: small organs start late (on BTCV the portal vein left Dice 0 only after
step 1100 of 2000), so a run whose mean has settled can still be cut off while one class is being
learned, and whether a seed ends with that class is then a matter of timing.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

TOLERANCE = 0.01  # one Dice point
LAST_SHARE = 0.25
COLLAPSE_DICE = 0.01
MEAN_KEY, CLASS_PREFIX = "val/dice", "val/dice/"  # the metrics.jsonl columns of the mean and of each class


@dataclass(frozen=True)
class Convergence:
    """The verdict on one validation curve; ``converged`` and ``late_gain`` are ``None`` when unknown;
    ``collapsed`` names the classes whose Dice stayed below ``COLLAPSE_DICE`` in every late round, ``rising``
    those whose own late gain exceeds ``tolerance``. ``validation_confusion`` (``{"classes", "counts"}``
    voxel counts of the final weights on the validation cases) is added by fine-tuning when a class
    collapsed."""

    converged: bool | None
    late_gain: float | None
    best_dice: float | None
    best_step: int | None
    late_from_step: float
    tolerance: float
    collapsed: tuple[str, ...] = ()
    rising: tuple[str, ...] = ()
    validation_confusion: dict | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        d["collapsed"], d["rising"] = list(self.collapsed), list(self.rising)
        return d


def _finite(curve: list[tuple[int, float]]) -> list[tuple[int, float]]:
    return [(int(s), float(d)) for s, d in curve if d is not None and math.isfinite(d)]


def convergence(curve: list[tuple[int, float]], steps: int, tolerance: float = TOLERANCE, last_share: float = LAST_SHARE,
                classes: dict[str, list[tuple[int, float]]] | None = None) -> Convergence:
    """Judge the validation curve of a run of ``steps`` steps (rounds with a non-finite Dice are ignored),
    and the per-class curves ``classes`` (``{name: curve}``) for collapse and for a late rise."""
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    if not 0.0 < last_share < 1.0:
        raise ValueError(f"last_share must lie strictly between 0 and 1, got {last_share}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    points = _finite(curve)
    late_from = (1.0 - last_share) * steps
    best_step, best_dice = max(points, key=lambda p: (p[1], -p[0])) if points else (None, None)
    per_class = {name: _finite(c) for name, c in (classes or {}).items()}
    collapsed = tuple(name for name, c in per_class.items() if _collapsed(c, late_from))
    rising = tuple(name for name, c in per_class.items() if (g := _late_gain(c, late_from)) is not None and g > tolerance)
    gain = _late_gain(points, late_from)
    return Convergence(None if gain is None else gain <= tolerance, gain, best_dice, best_step, late_from, tolerance, collapsed, rising)


def _late_gain(points: list[tuple[int, float]], late_from: float) -> float | None:
    early = [d for s, d in points if s <= late_from]
    late = [d for s, d in points if s > late_from]
    return max(late) - max(early) if early and late else None


def _collapsed(points: list[tuple[int, float]], late_from: float) -> bool:
    late = [d for s, d in points if s > late_from] or [d for _, d in points[-1:]]
    return bool(late) and max(late) < COLLAPSE_DICE


def validation_curves(metrics_file: str | Path) -> tuple[list[tuple[int, float]], dict[str, list[tuple[int, float]]]]:
    """From a run's ``metrics.jsonl``: ``[(step, val/dice), ...]`` and ``{class name: [(step, val/dice/<name>), ...]}``;
    a later row of a step (after a resume) wins."""
    curves: dict[str, dict[int, float]] = {}
    for line in Path(metrics_file).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            for key, value in row.items():
                if key == MEAN_KEY or key.startswith(CLASS_PREFIX):
                    curves.setdefault(key, {})[int(row["step"])] = float(value)
    mean = sorted(curves.pop(MEAN_KEY, {}).items())
    return mean, {key[len(CLASS_PREFIX):]: sorted(c.items()) for key, c in curves.items()}
