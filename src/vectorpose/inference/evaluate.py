"""Scoring a fine-tuned model or an ensemble of them: the runs' recorded test split, or every labelled case of a dataset."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..data.datasets import Dataset, load_dataset
from ..data.preprocessing import PreprocessedVolume, PreprocessingConfig, preprocess_dataset
from ..data.splits import Split
from ..data.validation import check_label_values
from ..errors import DataError, VectorPoseError
from ..models.files import model_paths
from ..utils.files import write_json
from .metrics import METRICS_VERSION, case_metrics, confusion_counts, summarise
from .predictor import LabelPredictor, load_predictor


def recorded_split(model: str | Path) -> Split:
    """The split saved beside a fine-tuned model (``split.json`` in its run folder)."""
    weights, _ = model_paths(model)
    path = weights.parent / "split.json"
    if not path.is_file():
        raise VectorPoseError(f"{path}: no recorded split beside the model; evaluate with --all on an external dataset")
    try:
        return Split.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise VectorPoseError(f"{path}: malformed split file ({exc})") from None


def evaluate(model: str | Path | Sequence[str | Path], data: str | Path, out: str | Path | None = None, all_cases: bool = False,
             device: str = "cpu", cache_dir: str | Path | None = None, overwrite: bool = False, progress: bool = False,
             mirror: bool = True) -> dict:
    """Dice and HD95 of ``model`` on the test split (or ``all_cases``) of ``data``, and the voxel confusion
    counts summed over the cases; writes ``out`` as JSON.

    ``model``: one model, or several scored as one ensemble (the mean of their probabilities); their runs
    must record the same test split. ``mirror``: average over mirrored copies on the axes training
    flipped (test-time augmentation).
    """
    if out is not None and Path(out).exists() and not overwrite:
        raise VectorPoseError(f"{out}: already exists; pass --overwrite to replace it")
    models = [model] if isinstance(model, (str, Path)) else list(model)
    predictor = load_predictor(models, device, mirror)
    dataset = load_dataset(data)
    labelled = {c.case_id: c for c in dataset.labelled}
    if all_cases:
        ids = sorted(labelled)
        if not ids:
            raise DataError(Path(data), "no labelled cases to evaluate")
    else:
        ids = list(recorded_split(models[0]).test)
        for other in models[1:]:
            if sorted(recorded_split(other).test) != sorted(ids):
                raise VectorPoseError(f"{other}: its run records another test split than {models[0]}; ensemble runs that share "
                                      "one split, or evaluate with --all")
        missing = [i for i in ids if i not in labelled]
        if missing:
            raise DataError(Path(data), f"{len(missing)} test cases of the recorded split are not in this dataset (e.g. {missing[0]}); use --all for another dataset")
    if dataset.modality is not None and dataset.modality != predictor.preprocessing.modality:
        raise VectorPoseError(f"{data}: {dataset.modality} data, but the model was trained on {predictor.preprocessing.modality}")
    if dataset.labels and max(dataset.labels) >= predictor.num_classes:
        raise DataError(Path(data) / "dataset.json", f"declares labels up to {max(dataset.labels)}, the model predicts 0..{predictor.num_classes - 1}")
    volumes = scoring_volumes(dataset, ids, predictor.preprocessing, cache_dir, progress)
    declared = dataset.labels or {c: f"class {c}" for c in range(predictor.num_classes)}
    check_label_values(volumes, declared)
    rows = score_volumes(predictor, volumes)
    result = {
        "models": [{"path": str(Path(member.path).resolve()), "mirror_axes": list(member.mirror_axes)} for member in predictor.members],
        "data": str(Path(data).resolve()),
        "cases_from": "all" if all_cases else "test split",
        "num_cases": len(rows),
        "metrics_version": METRICS_VERSION,
        **summarise(rows, predictor.class_names),
        "confusion": summed_confusion(rows, predictor.class_names),
        "cases": rows,
    }
    if out is not None:
        write_json(out, result)
    return result


def scoring_volumes(dataset: Dataset, ids: Sequence[str], preprocessing: PreprocessingConfig, cache_dir: str | Path | None = None,
                    progress: bool = False) -> list[PreprocessedVolume]:
    """The labelled cases ``ids`` of ``dataset`` normalised as ``preprocessing`` says, each on its own grid
    (a model trained at another spacing predicts through resampling), as :func:`score_volumes` takes them."""
    labelled = {c.case_id: c for c in dataset.labelled}
    subset = Dataset(dataset.root, tuple(labelled[i] for i in ids), dataset.modality, dataset.labels)
    return preprocess_dataset(subset, replace(preprocessing, spacing=None), cache_dir, progress=progress)[0]


def score_volumes(predictor: LabelPredictor, volumes: Sequence[PreprocessedVolume], hd95: bool = True) -> list[dict]:
    """One row per labelled volume (each normalised, on its own grid): ``{"case_id", "dice", "hd95",
    "confusion"}``; Dice and HD95 by class name, as :func:`~vectorpose.inference.metrics.summarise` reads
    them (HD95 ``None`` without ``hd95``), and the voxel counts of
    :func:`~vectorpose.inference.metrics.confusion_counts` as nested lists."""
    names, rows = predictor.class_names, []
    for v in volumes:
        pred, reference = predictor.predict_array(np.asarray(v.image()), v.geometry.spacing), np.asarray(v.label())
        m = case_metrics(pred, reference, predictor.num_classes, v.geometry.spacing, hd95=hd95)
        distances = dict(zip(names, m["hd95"])) if hd95 else dict.fromkeys(names)
        rows.append({"case_id": v.case_id, "dice": dict(zip(names, m["dice"])), "hd95": distances,
                     "confusion": confusion_counts(pred, reference, predictor.num_classes).tolist()})
    return rows


def summed_confusion(rows: list[dict], class_names: list[str]) -> dict:
    """``{"classes": ["background", *class_names], "counts": [[...]]}``: the rows' confusion counts summed
    (row: the reference's class, column: the predicted one)."""
    counts = np.sum([r["confusion"] for r in rows], axis=0, dtype=np.int64) if rows else np.zeros((len(class_names) + 1,) * 2, np.int64)
    return {"classes": ["background", *class_names], "counts": counts.tolist()}


def format_table(result: dict) -> str:
    """A readable per-class table of a result from :func:`evaluate`."""
    names = list(result["per_class"])
    fmt = lambda v: "  n/a " if v is None else f"{v:6.3f}"  # noqa: E731
    lines = [f"{'class':<16} {'Dice':>6} {'HD95':>6}"]
    for n in names:
        pc = result["per_class"][n]
        lines.append(f"{n:<16} {fmt(pc['dice'])} {fmt(pc['hd95'])}")
    lines.append(f"{'mean':<16} {fmt(result['mean_dice'])} {fmt(result['mean_hd95'])}   ({result['num_cases']} cases, {result['cases_from']})")
    return "\n".join(lines)
