"""Per-case, per-class Dice and 95 % Hausdorff distance (MONAI metrics) and their summaries.

Conventions: a class absent from both prediction and reference has Dice 1 and HD95 0; a class
present in only one of them has Dice 0 and an undefined HD95 (``None`` in JSON), which summaries
count separately instead of averaging an infinity.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance


def _one_hot(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    return torch.nn.functional.one_hot(t, num_classes).permute(3, 0, 1, 2)[None].float()


def case_metrics(prediction: np.ndarray, reference: np.ndarray, num_classes: int, spacing=(1.0, 1.0, 1.0),
                 hd95: bool = True) -> dict[str, list]:
    """Dice and HD95 (in mm, using ``spacing``) of each foreground class ``1..num_classes-1``.

    Returns ``{"dice": [...], "hd95": [...]}``, one entry per foreground class (HD95 may be ``None``);
    without ``hd95`` only ``"dice"`` (the distance transform is the slow part).
    """
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from reference shape {reference.shape}")
    if max(int(prediction.max(initial=0)), int(reference.max(initial=0))) >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    pred, ref = _one_hot(prediction, num_classes), _one_hot(reference, num_classes)
    dice = compute_dice(pred, ref, include_background=False, ignore_empty=False)[0]
    if not hd95:
        return {"dice": [float(d) for d in dice]}
    with warnings.catch_warnings():
        # empty classes are handled below; MONAI's warnings about them (and its deprecations) are noise here
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        hd = compute_hausdorff_distance(pred, ref, include_background=False, percentile=95, spacing=list(spacing))[0]
    dices, hds = [], []
    for c in range(num_classes - 1):
        p_any, r_any = bool(pred[0, c + 1].any()), bool(ref[0, c + 1].any())
        dices.append(float(dice[c]))
        if not p_any and not r_any:
            hds.append(0.0)
        elif p_any and r_any and math.isfinite(float(hd[c])):
            hds.append(float(hd[c]))
        else:
            hds.append(None)
    return {"dice": dices, "hd95": hds}


def summarise(rows: list[dict], class_names: list[str]) -> dict:
    """Means over cases per class and overall; ``mean_dice`` averages classes and cases.

    ``rows`` hold ``{"dice": {name: value}, "hd95": {name: value or None}}``.
    """
    per_class = {}
    for name in class_names:
        d = [r["dice"][name] for r in rows]
        h = [r["hd95"][name] for r in rows if r["hd95"][name] is not None]
        per_class[name] = {
            "dice": float(np.mean(d)) if d else None,
            "hd95": float(np.mean(h)) if h else None,
            "hd95_undefined": sum(r["hd95"][name] is None for r in rows),
        }
    all_dice = [r["dice"][n] for r in rows for n in class_names]
    all_hd = [r["hd95"][n] for r in rows for n in class_names if r["hd95"][n] is not None]
    return {
        "mean_dice": float(np.mean(all_dice)) if all_dice else None,
        "mean_hd95": float(np.mean(all_hd)) if all_hd else None,
        "per_class": per_class,
    }
