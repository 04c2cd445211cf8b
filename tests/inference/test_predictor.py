"""Prediction writes label maps in the input's own geometry: NIfTI in any orientation, DICOM series;
several models predict as an ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from cli_helpers import assert_one_line_error, run
from conftest import SHARED_DATA
from vectorpose.data.io import load_image
from vectorpose.data.preprocessing import PreprocessingConfig, normalise_intensity
from vectorpose.data.splits import Split
from vectorpose.errors import CheckpointError, DataError, VectorPoseError
from vectorpose.inference.evaluate import evaluate
from vectorpose.inference.predictor import Ensemble, Segmenter, load_predictor, load_segmenter, predict
from vectorpose.models.backbone import BackboneConfig
from vectorpose.models.segmentation_network import SegmentationNetwork
from vectorpose.models.files import save_model

DICOM = SHARED_DATA / "dicom_hippocampus_crops"
SMALL = BackboneConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1)


def save_segmenter(folder: Path, seed: int = 0, num_classes: int = 3, modality: str = "MRI", spacing=None) -> Path:
    torch.manual_seed(seed)
    net = SegmentationNetwork(SMALL, num_classes)
    meta = {"task": "segmentation", "method": "scratch", "backbone": SMALL.to_json(), "heads": {"segmentation": True},
            "patch_size": [16, 16, 16], "preprocessing": PreprocessingConfig(modality, spacing=spacing).to_json(), "step": 0, "num_classes": num_classes,
            "labels": {"0": "background", **{str(c): chr(ord("a") + c - 1) for c in range(1, num_classes)}}}
    save_model(folder, net.state_dict(), meta)
    return folder


@pytest.fixture
def model_dir(tmp_path) -> Path:
    return save_segmenter(tmp_path / "model")


def threshold_network(self: Segmenter, image: np.ndarray, spacing=None) -> np.ndarray:
    # a stand-in whose output is a known function of each voxel: 1 above the mean, 2 far above (this model keeps each scan's grid)
    return ((image > 0).astype(np.uint8) + (image > 1).astype(np.uint8))


@pytest.mark.parametrize("axcodes", [("L", "P", "S"), ("P", "S", "R"), ("R", "A", "S"), ("I", "L", "A")])
def test_nifti_round_trip_is_voxel_aligned(axcodes, model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(Segmenter, "predict_array", threshold_network)
    rng = np.random.default_rng(0)
    stored = rng.normal(size=(11, 14, 9)).astype(np.float32)
    affine = np.eye(4)
    affine[:, :3] = 0
    for i, code in enumerate(axcodes):  # stored axis i runs along world axis `row`, in the code's direction
        row = "RLAPSI".index(code) // 2
        affine[row, i] = (1.0 if code in "RAS" else -1.0) * (1.2, 0.9, 2.0)[i]
    affine[:3, 3] = (10.0, -4.0, 7.0)
    src = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(stored, affine), str(src))
    assert nib.aff2axcodes(affine) == axcodes
    [written] = predict(model_dir, src, tmp_path / "out")
    out = nib.load(str(written))
    expected = threshold_network(None, normalise_intensity(stored, PreprocessingConfig("MRI")))
    assert out.shape == stored.shape and np.allclose(out.affine, affine)
    assert out.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(out.dataobj), expected)


@pytest.mark.skipif(not DICOM.is_dir(), reason="DICOM data absent")
@pytest.mark.parametrize("series", sorted(p.relative_to(DICOM) for p in DICOM.glob("*/*") if p.is_dir()) if DICOM.is_dir() else [])
def test_dicom_series_geometry(series, model_dir, tmp_path):
    import SimpleITK as sitk

    folder = DICOM / series
    [written] = predict(model_dir, folder, tmp_path / "out")
    out = nib.load(str(written))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    ref = reader.Execute()
    assert out.shape == ref.GetSize()
    labels = np.asarray(out.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2}
    # every corner voxel lands on the same world point as SimpleITK says (LPS -> RAS flips x and y)
    for index in [(0, 0, 0), tuple(s - 1 for s in ref.GetSize()), (3, 0, ref.GetSize()[2] - 1)]:
        lps = np.array(ref.TransformIndexToPhysicalPoint(tuple(int(i) for i in index)))
        ras = out.affine @ np.array([*index, 1.0])
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-4)
    assert written.name == f"{folder.name}.nii.gz"


def test_refuses_existing_output_and_bad_models(model_dir, tmp_path, synthetic_dataset):
    src = next((synthetic_dataset / "imagesTr").glob("*.nii.gz"))
    out = tmp_path / "labels.nii.gz"
    predict(model_dir, src, out)
    before = out.read_bytes()
    with pytest.raises(VectorPoseError, match="already exists"):
        predict(model_dir, src, out)
    assert out.read_bytes() == before
    predict(model_dir, src, out, overwrite=True)
    with pytest.raises(DataError, match="no such file"):
        predict(model_dir, tmp_path / "nope.nii.gz", tmp_path / "o")


def test_folder_of_nifti(model_dir, tmp_path, synthetic_dataset):
    written = predict(model_dir, synthetic_dataset / "imagesTr", tmp_path / "out")
    assert len(written) == 6
    for path in written:
        src = synthetic_dataset / "imagesTr" / path.name
        assert nib.load(str(path)).shape == nib.load(str(src)).shape


def test_pretext_model_is_not_a_segmenter(tmp_path):
    from vectorpose.methods import get_method
    from vectorpose.errors import CheckpointError

    net = get_method("vp").build_network(SMALL)
    save_model(tmp_path, net.state_dict(), {"task": "pretext", "method": "vp", "backbone": SMALL.to_json(), "heads": {"vector": True},
                                            "patch_size": 16, "preprocessing": PreprocessingConfig("MRI").to_json(), "step": 1})
    with pytest.raises(CheckpointError, match="fine-tune it first"):
        load_segmenter(tmp_path)


def test_load_image_reads_dicom_like_nifti(tmp_path):
    if not DICOM.is_dir():
        pytest.skip("DICOM data absent")
    folder = sorted(p for p in DICOM.glob("*/*") if p.is_dir())[0]
    array, geometry = load_image(folder)
    assert array.shape == geometry.canonical_shape and geometry.axcodes == tuple(nib.aff2axcodes(np.asarray(geometry.affine)))


def test_prediction_mirrors_the_axes_training_flipped(model_dir, tmp_path):
    from vectorpose.inference.sliding_window import predict_labels

    meta_path = model_dir / "model.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    assert load_segmenter(model_dir).mirror_axes == ()  # a model that records no training flips is not mirrored
    meta["flip_axes"] = [0, 2]
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    segmenter = load_segmenter(model_dir)
    assert segmenter.mirror_axes == (0, 2) and load_segmenter(model_dir, mirror=False).mirror_axes == ()
    image = np.random.default_rng(0).normal(size=(20, 16, 24)).astype(np.float32)
    expected = predict_labels(segmenter.network, image, (16, 16, 16), mirror_axes=(0, 2))
    np.testing.assert_array_equal(segmenter.predict_array(image), expected)


def test_ensemble_averages_the_softmax_of_its_models(tmp_path):
    """On a volume one window covers, each model's prediction is its network's softmax; the ensemble's is their mean."""
    folders = [save_segmenter(tmp_path / f"m{seed}", seed) for seed in (0, 1, 2)]
    ensemble = load_predictor(folders)
    assert isinstance(ensemble, Ensemble) and [m.path for m in ensemble.members] == folders
    image = np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32)
    with torch.no_grad():
        softmax = [torch.softmax(m.network(torch.from_numpy(image)[None, None]), dim=1)[0] for m in ensemble.members]
    expected = torch.stack(softmax).mean(0)
    np.testing.assert_allclose(ensemble.predict_probabilities(image).numpy(), expected.numpy(), atol=1e-5)
    np.testing.assert_array_equal(ensemble.predict_array(image), expected.argmax(0).numpy())
    assert not np.array_equal(softmax[0].argmax(0).numpy(), softmax[1].argmax(0).numpy())  # the models disagree somewhere


def test_ensemble_resamples_the_mean_once(tmp_path):
    """Models trained at a target spacing: trilinear resampling is linear, so resampling the mean of the
    probabilities once equals the mean of each model's own prediction on the scan's grid."""
    ensemble = load_predictor([save_segmenter(tmp_path / f"m{seed}", seed, spacing=(2.0, 2.0, 2.0)) for seed in (0, 1)])
    image = np.random.default_rng(1).normal(size=(30, 26, 20)).astype(np.float32)
    spacing = (1.0, 1.2, 1.5)
    each = [m.predict_probabilities(image, spacing) for m in ensemble.members]
    assert each[0].shape == (3, 30, 26, 20)
    np.testing.assert_allclose(ensemble.predict_probabilities(image, spacing).numpy(), torch.stack(each).mean(0).numpy(), atol=1e-5)


def test_ensemble_of_copies_is_the_model(model_dir, synthetic_dataset, tmp_path):
    src = next((synthetic_dataset / "imagesTr").glob("*.nii.gz"))
    [single] = predict(model_dir, src, tmp_path / "one.nii.gz")
    [twice] = predict([model_dir, model_dir], src, tmp_path / "two.nii.gz")
    np.testing.assert_array_equal(np.asarray(nib.load(str(twice)).dataobj), np.asarray(nib.load(str(single)).dataobj))


def test_ensemble_members_must_agree(tmp_path):
    base = save_segmenter(tmp_path / "base")
    with pytest.raises(CheckpointError, match="must predict the same classes"):
        load_predictor([base, save_segmenter(tmp_path / "four", num_classes=4)])
    with pytest.raises(CheckpointError, match="must share their preprocessing"):
        load_predictor([base, save_segmenter(tmp_path / "ct", modality="CT")])
    with pytest.raises(VectorPoseError, match="no model"):
        load_predictor([])


def _record_split(folder: Path, test: list[str]) -> None:
    (folder / "split.json").write_text(json.dumps(Split(tuple(test), (), (), ()).to_json()), encoding="utf-8")


def test_evaluate_scores_the_ensemble_on_the_shared_split(tmp_path, synthetic_dataset, cache_dir, capsys):
    a, b = save_segmenter(tmp_path / "a", 0), save_segmenter(tmp_path / "b", 1)
    for folder in (a, b):
        _record_split(folder, ["synth_001", "synth_004"])
    code, out, _ = run(["evaluate", a, b, synthetic_dataset, "--cache", cache_dir, "--out", tmp_path / "m.json"], capsys)
    assert code == 0 and "(2 cases, test split)" in out
    result = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))
    assert [m["path"] for m in result["models"]] == [str(a.resolve()), str(b.resolve())]
    # the ensemble's Dice and voxel confusion, recomputed from its label maps by NumPy
    ensemble = load_predictor([a, b])
    k = ensemble.num_classes
    assert result["confusion"]["classes"] == ["background", *ensemble.class_names]
    assert np.array_equal(result["confusion"]["counts"], np.sum([case["confusion"] for case in result["cases"]], axis=0))
    for case in result["cases"]:
        [written] = predict([a, b], synthetic_dataset / "imagesTr" / f"{case['case_id']}.nii.gz", tmp_path / f"{case['case_id']}.nii.gz")
        predicted = np.asarray(nib.load(str(written)).dataobj)
        truth = np.asarray(nib.load(str(synthetic_dataset / "labelsTr" / f"{case['case_id']}.nii.gz")).dataobj)
        assert case["confusion"] == [[int(((truth == t) & (predicted == p)).sum()) for p in range(k)] for t in range(k)]
        for c, name in enumerate(ensemble.class_names, start=1):
            p, t = predicted == c, truth == c
            if p.sum() + t.sum():
                assert case["dice"][name] == pytest.approx(2 * (p & t).sum() / (p.sum() + t.sum()), abs=1e-6)
    _record_split(b, ["synth_001", "synth_005"])
    code, _, err = run(["evaluate", a, b, synthetic_dataset, "--cache", cache_dir, "--out", tmp_path / "n.json"], capsys)
    assert_one_line_error(code, err, str(b), "another test split")
    assert not (tmp_path / "n.json").exists()
