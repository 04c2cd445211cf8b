"""The CT window: given, or the 0.5th / 99.5th percentiles of labelled (or body) voxels, against NumPy;
recorded in the plan and the pretrained model; the test split never contributes."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from cli_helpers import run
from vectorpose.data.ct_window import SAMPLE_PER_SCAN, ct_window_from_data, intensity_sample, parse_ct_window
from vectorpose.data.datasets import load_dataset


def write_ct(root, num_cases=4, side=20):
    """CT scans of air (-1000 HU) around a body (about 40 HU) holding an organ (about 150 HU), labelled 1."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i in range(num_cases):
        rng = np.random.default_rng(i)
        image = np.full((side,) * 3, -1000.0, np.float32)
        body = np.zeros((side,) * 3, bool)
        body[2:-2, 2:-2, 2:-2] = True
        image[body] = rng.normal(40, 30, body.sum())
        label = np.zeros((side,) * 3, np.uint8)
        label[6:12, 6:12, 6:12 + i] = 1
        image[label == 1] = rng.normal(150 + 20 * i, 10, (label == 1).sum())
        nib.save(nib.Nifti1Image(np.rint(image).astype(np.int16), np.eye(4)), root / "imagesTr" / f"ct_{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / f"ct_{i}.nii.gz")
        training.append({"image": f"./imagesTr/ct_{i}.nii.gz", "label": f"./labelsTr/ct_{i}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"name": "ct", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "organ"},
                                                   "training": training, "held_out": {"test": ["ct_3"]}}), encoding="utf-8")
    return root


def raw(root, i):
    image = np.asarray(nib.load(root / "imagesTr" / f"ct_{i}.nii.gz").dataobj).astype(np.float64)
    label = np.asarray(nib.load(root / "labelsTr" / f"ct_{i}.nii.gz").dataobj)
    return image, label


def test_window_from_labelled_and_from_body_voxels(tmp_path):
    data = write_ct(tmp_path / "ct")
    cases = list(load_dataset(data).cases)
    foreground = np.concatenate([raw(data, i)[0][raw(data, i)[1] > 0] for i in range(4)])
    assert ct_window_from_data(cases, True, tmp_path / "cache") == pytest.approx(np.percentile(foreground, [0.5, 99.5]))
    body = np.concatenate([raw(data, i)[0][raw(data, i)[0] > -500] for i in range(4)])
    assert ct_window_from_data(cases, False, tmp_path / "cache") == pytest.approx(np.percentile(body, [0.5, 99.5]))


def test_large_scans_are_subsampled(tmp_path):
    data = write_ct(tmp_path / "ct", num_cases=1, side=30)  # 26^3 = 17576 body voxels
    case = load_dataset(data).cases[0]
    sample = intensity_sample(case, False, tmp_path / "cache")
    image = raw(data, 0)[0]
    assert len(sample) == SAMPLE_PER_SCAN and np.isin(sample, image[image > -500]).all()
    np.testing.assert_array_equal(intensity_sample(case, False, tmp_path / "cache"), sample)  # cached, and seeded


@pytest.mark.parametrize("text", ["5,1", "1", "a,b", "nan,3", "1,2,3"])
def test_parse_refuses(text):
    with pytest.raises(ValueError, match="ct window"):
        parse_ct_window(text)


def test_parse():
    assert parse_ct_window(" AUTO ") == "auto" and parse_ct_window("-125,275") == (-125.0, 275.0)


def test_plan_and_pretraining_record_the_window_without_the_test_split(tmp_path, capsys):
    data = write_ct(tmp_path / "ct")
    cache = tmp_path / "cache"
    code, out, _ = run(["plan", data, "--split", "held_out", "--cache", cache, "--json", "--channels", "4,8,16"], capsys)
    assert code == 0, out
    plan = json.loads(out)
    foreground = np.concatenate([raw(data, i)[0][raw(data, i)[1] > 0] for i in range(3)])  # ct_3 is the test split
    assert plan["ct_window"] == pytest.approx(np.percentile(foreground, [0.5, 99.5]))
    code, out, err = run(["pretrain", data, "--out", tmp_path / "pre", "--split", "held_out", "--cache", cache, "--steps", "1",
                          "--batch", "1", "--patch", "16", "--channels", "4,8,16", "--quiet"], capsys)
    assert code == 0, err
    body = np.concatenate([raw(data, i)[0][raw(data, i)[0] > -500] for i in range(3)])
    meta = json.loads((tmp_path / "pre" / "model.json").read_text(encoding="utf-8"))
    assert meta["preprocessing"]["ct_window"] == pytest.approx(np.percentile(body, [0.5, 99.5]))
    code, out, _ = run(["plan", data, "--ct-window", "-100,200", "--cache", cache, "--json", "--channels", "4,8,16"], capsys)
    assert code == 0 and json.loads(out)["ct_window"] == [-100.0, 200.0]


def test_bad_window_is_a_usage_error(tmp_path, capsys):
    data = write_ct(tmp_path / "ct")
    code, _, err = run(["plan", data, "--ct-window", "300,100", "--cache", tmp_path / "cache"], capsys)
    assert code == 2 and "ct window needs LO,HI with LO < HI, got '300,100'" in err and "Traceback" not in err
