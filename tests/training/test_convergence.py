"""The convergence verdict on hand-made validation curves, and on a real fine-tuning run's metrics.jsonl."""

from __future__ import annotations

import json
import math

import pytest

from vectorpose.training.convergence import convergence, validation_curves


@pytest.mark.parametrize("curve, steps, converged, gain", [
    # still rising: best early 0.60 (step 600), best late 0.70 (step 1000) -> gain 0.10
    ([(200, 0.3), (400, 0.5), (600, 0.6), (800, 0.65), (1000, 0.7)], 1000, False, 0.10),
    # a plateau: the late rounds add 0.005, under one Dice point
    ([(250, 0.80), (500, 0.85), (750, 0.850), (1000, 0.855)], 1000, True, 0.005),
    # falling at the end (over-fitting) counts as converged: more steps would not help
    ([(100, 0.5), (200, 0.8), (300, 0.75), (400, 0.70)], 400, True, -0.10),
    # step 750 of 1000 is not late (late means after 750)
    ([(500, 0.5), (750, 0.9), (1000, 0.905)], 1000, True, 0.005),
])
def test_verdicts_by_hand(curve, steps, converged, gain):
    v = convergence(curve, steps)
    assert v.converged is converged
    assert v.late_gain == pytest.approx(gain)
    best_step, best_dice = max(curve, key=lambda p: p[1])
    assert (v.best_step, v.best_dice) == (best_step, best_dice)


def test_unknown_without_early_or_late_rounds():
    assert convergence([(1000, 0.8)], 1000).converged is None       # no early round
    assert convergence([(100, 0.5), (200, 0.6)], 1000).converged is None  # no late round
    v = convergence([(500, float("nan")), (1000, 0.7)], 1000)         # a NaN round does not count
    assert v.converged is None and v.best_dice == 0.7


def test_tolerance_is_the_boundary():
    curve = [(500, 0.80), (1000, 0.81)]
    assert convergence(curve, 1000, tolerance=0.0100001).converged is True
    assert convergence(curve, 1000, tolerance=0.0099).converged is False


@pytest.mark.parametrize("kwargs", [dict(steps=0), dict(steps=10, last_share=1.0), dict(steps=10, tolerance=-0.1)])
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        convergence([(1, 0.5)], **kwargs)


def test_curve_from_metrics_keeps_the_latest_row_of_a_step(tmp_path):
    rows = [{"step": 1, "loss": 2.0}, {"step": 2, "val/dice": 0.1}, {"step": 4, "val/dice": 0.3},
            {"step": 4, "val/dice": 0.35}, {"step": 6, "loss": 1.0, "val/dice": 0.4}]  # step 4 again after a resume
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    assert validation_curves(path)[0] == [(2, 0.1), (4, 0.35), (6, 0.4)]


@pytest.mark.parametrize("curve, collapsed", [
    ([(250, 0.0), (500, 0.0), (750, 0.0), (1000, 0.0)], True),          # never learned
    ([(250, 0.3), (500, 0.5), (750, 0.6), (1000, 0.0)], True),          # lost in the only late round
    ([(250, 0.3), (500, 0.5), (750, 0.6), (900, 0.0), (1000, 0.009)], True),
    ([(250, 0.0), (500, 0.0), (750, 0.0), (900, 0.0), (1000, 0.01)], False),  # 0.01 is not below the threshold
    ([(250, 0.0), (500, 0.0), (750, 0.0), (1000, 0.4)], False),         # learned at last
    ([(500, 0.0), (750, 0.0)], True),                                   # no late round: the last one decides
])
def test_collapse_by_hand(curve, collapsed):
    v = convergence([(s, 0.5) for s, _ in curve], 1000, classes={"spleen": curve, "liver": [(s, 0.9) for s, _ in curve]})
    assert v.collapsed == (("spleen",) if collapsed else ())


@pytest.mark.parametrize("curve, rising", [
    # the portal vein of BTCV scratch, 2 labelled, seed 1 (runs/btcv-2000): 0 until step 1100, 0.17 at 1500, 0.23 at 2000
    ([(s, 0.0) for s in range(100, 1200, 100)] + [(1200, 0.01), (1300, 0.09), (1400, 0.2), (1500, 0.17), (1600, 0.21),
                                                  (1700, 0.22), (1800, 0.22), (1900, 0.23), (2000, 0.23)], True),
    ([(s, 0.0) for s in range(100, 2100, 100)], False),                                 # never learned: collapsed, not rising
    ([(500, 0.6), (1000, 0.7), (1500, 0.71), (1600, 0.73), (2000, 0.72)], True),       # late gain 0.02
    ([(500, 0.6), (1000, 0.7), (1500, 0.71), (1600, 0.70), (2000, 0.715)], False),     # late gain 0.005: settled
    ([(500, 0.6), (1000, 0.7), (1500, 0.71), (2000, 0.5)], False),                     # falling
    ([(500, 0.0), (1500, 0.0)], False),                                                 # no late round: unknown
])
def test_a_class_still_rising_by_hand(curve, rising):
    mean = [(s, 0.5) for s, _ in curve]  # a flat mean: the run converged, whatever one class does
    v = convergence(mean, 2000, classes={"portal vein": curve, "liver": [(s, 0.9) for s, _ in curve]})
    assert v.rising == (("portal vein",) if rising else ())
    assert v.converged in (True, None)


def test_class_curves_from_metrics(tmp_path):
    rows = [{"step": 2, "val/dice": 0.4, "val/dice/liver": 0.8, "val/dice/spleen": 0.0}, {"step": 3, "loss": 1.0},
            {"step": 4, "val/dice": 0.5, "val/dice/liver": 0.9, "val/dice/spleen": 0.1}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    assert validation_curves(path) == ([(2, 0.4), (4, 0.5)], {"liver": [(2, 0.8), (4, 0.9)], "spleen": [(2, 0.0), (4, 0.1)]})


def test_a_finetuning_run_records_its_verdict(synthetic_dataset, cache_dir, tmp_path):
    from vectorpose.models.backbone import BackboneConfig
    from vectorpose.training.finetune import FinetuneConfig, finetune

    out = tmp_path / "run"
    config = FinetuneConfig(steps=8, batch_size=1, labelled=2, patch_size=(16, 16, 16), val_every=2,
                            backbone=BackboneConfig(channels=(4, 8, 16)))
    result = finetune(synthetic_dataset, out, config, cache_dir=cache_dir, progress=False)
    saved = json.loads((out / "convergence.json").read_text(encoding="utf-8"))
    # the verdict, recomputed by hand from metrics.jsonl: rounds at 2, 4, 6 are early (<= 6), 8 is late
    dice = {r["step"]: r["val/dice"] for r in map(json.loads, (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines())
            if "val/dice" in r}
    assert sorted(dice) == [2, 4, 6, 8]
    gain = dice[8] - max(dice[2], dice[4], dice[6])
    assert math.isclose(saved["late_gain"], gain, abs_tol=1e-12)
    assert saved["converged"] is (gain <= 0.01) and result.convergence.converged is saved["converged"]
    # each class's Dice is logged, their mean is val/dice, and the late round decides collapse
    rows = {r["step"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()) if "val/dice" in r}
    for row in rows.values():
        assert math.isclose((row["val/dice/left organ"] + row["val/dice/right organ"]) / 2, row["val/dice"], abs_tol=1e-9)
    assert saved["collapsed"] == [n for n in ("left organ", "right organ") if rows[8][f"val/dice/{n}"] < 0.01]
    assert saved["rising"] == [n for n in ("left organ", "right organ")
                               if rows[8][f"val/dice/{n}"] - max(rows[s][f"val/dice/{n}"] for s in (2, 4, 6)) > 0.01]


def test_a_run_made_to_collapse_is_named_in_the_verdict_and_the_warning(tmp_path, capsys):
    """The labelled cases of the split lose their right organ (class 2), the validation case keeps it:
    fine-tuning cannot learn class 2, so its validation Dice ends at 0 and the guard must say so."""
    import nibabel as nib
    import numpy as np

    from cli_helpers import run
    from vectorpose.data.datasets import load_dataset
    from vectorpose.data.splits import make_split
    from vectorpose.data.synthetic import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "data", num_cases=8, seed=1)
    split = make_split([c.case_id for c in load_dataset(data).labelled], 0, 0, None, 2, 0.2, 0.1)
    for case in load_dataset(data).labelled:
        if case.case_id in split.labelled:
            label = nib.load(str(case.label))
            values = np.asarray(label.dataobj)
            nib.save(nib.Nifti1Image(np.where(values == 2, 0, values).astype(np.uint8), label.affine), str(case.label))
    # a learning rate five times the default drives this small network to all-background within 60 steps
    args = ["finetune", data, "--out", tmp_path / "run", "--labeled", "2", "--steps", "60", "--batch", "2", "--patch", "16",
            "--val-every", "10", "--lr", "0.01", "--channels", "4,8,16", "--cache", tmp_path / "cache", "--quiet"]
    code, _, err = run(args, capsys)
    assert code == 0
    saved = json.loads((tmp_path / "run" / "convergence.json").read_text(encoding="utf-8"))
    assert "right organ" in saved["collapsed"]
    assert "warning: collapse: validation Dice of" in err and "right organ" in err
    # where the validation voxels went, recounted by NumPy from the label maps the final weights predict
    # (model.*: the final step by default; the sided labels turn test-time mirroring off, as in validation)
    from vectorpose.inference.predictor import predict

    recorded = json.loads((tmp_path / "run" / "split.json").read_text(encoding="utf-8"))["validation"]
    expected = np.zeros((3, 3), dtype=np.int64)
    for case in (c for c in load_dataset(data).labelled if c.case_id in recorded):
        [written] = predict(tmp_path / "run", case.image, tmp_path / "pred" / f"{case.case_id}.nii.gz")
        predicted, truth = np.asarray(nib.load(str(written)).dataobj), np.asarray(nib.load(str(case.label)).dataobj)
        expected += [[int(((truth == t) & (predicted == p)).sum()) for p in range(3)] for t in range(3)]
    confusion = saved["validation_confusion"]
    assert confusion["classes"] == ["background", "left organ", "right organ"] and confusion["counts"] == expected.tolist()
    shares = expected[2] / expected[2].sum()
    top = int(np.argmax(shares))
    assert f"right organ as {confusion['classes'][top]} {100 * shares[top]:.0f} %" in err
    # a class still rising in the last quarter is warned of exactly when the verdict names one
    assert ("in the last quarter of the run: more --steps may still raise" in err) is bool(saved["rising"])
