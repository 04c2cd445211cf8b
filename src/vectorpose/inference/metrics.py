"""Per-case, per-class Dice and 95 % Hausdorff distance (MONAI metrics) and their summaries.

Conventions (nnU-Net's): a class absent from both prediction and reference is not scored in that
case (Dice and HD95 ``None`` in JSON), so a scan without a gallbladder neither rewards nor punishes an
empty prediction of it; a class present in only one of them has Dice 0 and an undefined HD95
(``None``), which summaries count separately instead of averaging an infinity. Summaries average each
class over the cases that score it, and the mean Dice over the classes. The voxel confusion counts
say where a class that scores Dice 0 went: to the background, or to another class.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

# Stored with every evaluation: a result of another version was scored under other conventions.
METRICS_VERSION = 2


def _one_hot(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    return torch.nn.functional.one_hot(t, num_classes).permute(3, 0, 1, 2)[None].float()


def case_metrics(prediction: np.ndarray, reference: np.ndarray, num_classes: int, spacing=(1.0, 1.0, 1.0),
                 hd95: bool = True) -> dict[str, list]:
    """Dice and HD95 (in mm, using ``spacing``) of each foreground class ``1..num_classes-1``.

    Returns ``{"dice": [...], "hd95": [...]}``, one entry per foreground class (``None`` where the
    module docstring says); without ``hd95`` only ``"dice"`` (the distance transform is the slow part).
    """
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from reference shape {reference.shape}")
    if max(int(prediction.max(initial=0)), int(reference.max(initial=0))) >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    pred, ref = _one_hot(prediction, num_classes), _one_hot(reference, num_classes)
    scored = [bool(pred[0, c].any() or ref[0, c].any()) for c in range(1, num_classes)]
    dice = compute_dice(pred, ref, include_background=False, ignore_empty=False)[0]
    dices = [float(d) if s else None for d, s in zip(dice, scored)]
    if not hd95:
        return {"dice": dices}
    with warnings.catch_warnings():
        # empty classes are handled below; MONAI's warnings about them (and its deprecations) are noise here
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        hd = compute_hausdorff_distance(pred, ref, include_background=False, percentile=95, spacing=list(spacing))[0]
    hds = []
    for c in range(num_classes - 1):
        both = bool(pred[0, c + 1].any()) and bool(ref[0, c + 1].any())
        hds.append(float(hd[c]) if both and math.isfinite(float(hd[c])) else None)
    return {"dice": dices, "hd95": hds}


def confusion_counts(prediction: np.ndarray, reference: np.ndarray, num_classes: int) -> np.ndarray:
    """``(num_classes, num_classes)`` int64 voxel counts: row ``t``, column ``p`` counts the voxels of
    class ``t`` in ``reference`` that ``prediction`` labels ``p`` (background is row and column 0)."""
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from reference shape {reference.shape}")
    truth, predicted = np.asarray(reference, dtype=np.int64).ravel(), np.asarray(prediction, dtype=np.int64).ravel()
    if truth.size and (min(truth.min(), predicted.min()) < 0 or max(truth.max(), predicted.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    return np.bincount(truth * num_classes + predicted, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def voxels_went_to(confusion: dict | None, name: str, least: float = 0.05) -> str | None:
    """Where the reference's voxels of class ``name`` went, from ``{"classes", "counts"}`` confusion counts,
    e.g. ``"liver 57 %, background 42 %"``: every class given at least ``least`` of them, the largest share
    first. ``None`` without counts (an evaluation older than them) or without voxels of the class."""
    if not confusion or name not in confusion["classes"]:
        return None
    row = confusion["counts"][confusion["classes"].index(name)]
    total = sum(row)
    if not total:
        return None
    shares = sorted(((count / total, to) for to, count in zip(confusion["classes"], row) if count / total >= least), reverse=True)
    return ", ".join(f"{to} {100 * share:.0f} %" for share, to in shares) or None


def summarise(rows: list[dict], class_names: list[str]) -> dict:
    """Means over the cases that score each class; ``mean_dice`` is the mean of the classes' means
    (nnU-Net's foreground mean), ``mean_hd95`` the mean of every defined HD95.

    ``rows`` hold ``{"dice": {name: value or None}, "hd95": {name: value or None}}``. Per class,
    ``absent`` counts the cases without it in prediction or reference (not scored) and
    ``hd95_undefined`` those with it in only one of them.
    """
    per_class = {}
    for name in class_names:
        d = [r["dice"][name] for r in rows if r["dice"][name] is not None]
        h = [r["hd95"][name] for r in rows if r["hd95"][name] is not None]
        absent = len(rows) - len(d)
        per_class[name] = {
            "dice": float(np.mean(d)) if d else None,
            "hd95": float(np.mean(h)) if h else None,
            "absent": absent,
            "hd95_undefined": len(rows) - absent - len(h),
        }
    class_dice = [c["dice"] for c in per_class.values() if c["dice"] is not None]
    all_hd = [r["hd95"][n] for r in rows for n in class_names if r["hd95"][n] is not None]
    return {
        "mean_dice": float(np.mean(class_dice)) if class_dice else None,
        "mean_hd95": float(np.mean(all_hd)) if all_hd else None,
        "per_class": per_class,
    }
