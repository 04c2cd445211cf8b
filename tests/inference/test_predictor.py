"""Prediction writes label maps in the input's own geometry: NIfTI in any orientation, DICOM series."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from vectorpose.data.io import load_image
from vectorpose.data.preprocessing import PreprocessingConfig, normalise_intensity
from vectorpose.errors import DataError, VectorPoseError
from vectorpose.inference.predictor import Segmenter, load_segmenter, predict
from vectorpose.models.backbone import BackboneConfig
from vectorpose.models.segmentation_network import SegmentationNetwork
from vectorpose.models.files import save_model

DICOM = SHARED_DATA / "dicom_hippocampus_crops"
SMALL = BackboneConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1)


@pytest.fixture
def model_dir(tmp_path) -> Path:
    torch.manual_seed(0)
    net = SegmentationNetwork(SMALL, 3)
    meta = {"task": "segmentation", "method": "scratch", "backbone": SMALL.to_json(), "heads": {"segmentation": True},
            "patch_size": [16, 16, 16], "preprocessing": PreprocessingConfig("MRI").to_json(), "step": 0, "num_classes": 3,
            "labels": {"0": "background", "1": "a", "2": "b"}}
    save_model(tmp_path / "model", net.state_dict(), meta)
    return tmp_path / "model"


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
    import json

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
