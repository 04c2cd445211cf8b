"""A model trained at another spacing predicts and is scored on each scan's own grid (real abdominal MR)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from vectorpose.data.datasets import load_dataset
from vectorpose.data.preprocessing import PreprocessingConfig, preprocess_dataset
from vectorpose.inference.evaluate import evaluate
from vectorpose.inference.predictor import load_segmenter, predict
from vectorpose.models.backbone import BackboneConfig
from vectorpose.models.files import load_model
from vectorpose.training.finetune import FinetuneConfig, finetune


@pytest.fixture(scope="module")
def coarse_run(chaos_t2, tmp_path_factory):
    """Two steps on CHAOS T2 (1.25 × 1.25 × 7.7 mm) resampled to 2.5 × 2.5 × 7.7 mm."""
    out = tmp_path_factory.mktemp("chaos") / "run"
    cache = tmp_path_factory.mktemp("cache")
    config = FinetuneConfig(steps=2, batch_size=1, labelled=2, val_every=2, log_every=1, patch_size=(64, 64, 16), spacing="2.5,2.5,7.7",
                            backbone=BackboneConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1))
    finetune(chaos_t2, out, config, cache_dir=cache, progress=False)
    return out, cache


def test_training_arrays_are_on_the_target_grid(chaos_t2, coarse_run):
    run, cache = coarse_run
    _, meta = load_model(run)
    assert meta["preprocessing"]["spacing"] == [2.5, 2.5, 7.7]
    config = PreprocessingConfig.from_json(meta["preprocessing"])
    dataset = load_dataset(chaos_t2)
    volumes, _ = preprocess_dataset(dataset.images_only(), config, cache)
    for v in volumes[:3]:
        native = v.geometry.canonical_shape
        assert v.shape == (round(native[0] / 2), round(native[1] / 2), native[2]) and np.asarray(v.image()).shape == v.shape


def test_prediction_lands_on_the_scan_grid(chaos_t2, coarse_run, tmp_path):
    run, _ = coarse_run
    split = json.loads((run / "split.json").read_text(encoding="utf-8"))
    scan = chaos_t2 / "imagesTr" / f"{split['test'][0]}.nii.gz"
    [written] = predict(run, scan, tmp_path / "pred")
    source, out = nib.load(str(scan)), nib.load(str(written))
    assert out.shape == source.shape and np.allclose(out.affine, source.affine)
    assert set(np.unique(np.asarray(out.dataobj))) <= set(range(5))


def test_prediction_resamples_probabilities_back(coarse_run):
    run, _ = coarse_run
    segmenter = load_segmenter(run)
    image = np.random.default_rng(0).normal(size=(96, 80, 20)).astype(np.float32)
    # on a 1.25 mm grid the network sees 48 × 40 × 20 voxels; the labels come back at 96 × 80 × 20
    assert segmenter.predict_array(image, (1.25, 1.25, 7.7)).shape == (96, 80, 20)


def test_evaluation_scores_native_labels(chaos_t2, coarse_run):
    run, cache = coarse_run
    result = evaluate(run, chaos_t2, None, cache_dir=cache)
    split = json.loads((run / "split.json").read_text(encoding="utf-8"))
    assert result["num_cases"] == len(split["test"])
    assert set(result["per_class"]) == {"liver", "right kidney", "left kidney", "spleen"}


def write_body_ct(root):
    """BTCV-like CT: a body (40 HU) holding a kidney (label 1, 180 HU) and a spleen (label 2, 120 HU), the
    same 96 × 80 × 120 mm of anatomy at five spacings and in four voxel orders."""
    specs = [((1.2, 1.2, 3.0), "RAS"), ((1.6, 1.6, 5.0), "LPS"), ((1.4, 1.4, 2.5), "RAS"), ((2.0, 2.0, 4.0), "LAS"), ((1.5, 1.5, 3.0), "PLS")]
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i, (spacing, codes) in enumerate(specs):
        shape = [int(round(e / s)) for e, s in zip((96, 80, 120), spacing)]
        grid = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij")
        body = ((grid[0] - 48) / 44) ** 2 + ((grid[1] - 40) / 36) ** 2 < 1
        kidney = ((grid[0] - 30) ** 2 + (grid[1] - 40) ** 2 + (grid[2] - 60) ** 2) < 12**2
        spleen = ((grid[0] - 68) ** 2 + (grid[1] - 35) ** 2 + (grid[2] - 70) ** 2) < 14**2
        rng = np.random.default_rng(i)
        image = np.where(body, 40.0, -1000.0) + rng.normal(0, 15, shape)
        image[kidney], image[spleen] = 180.0, 120.0
        label = (kidney * 1 + spleen * 2).astype(np.uint8)
        to = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt(codes))
        for array, folder in ((np.rint(image).astype(np.int16), "imagesTr"), (label, "labelsTr")):
            ras = nib.Nifti1Image(array, np.diag([*spacing, 1.0]))
            nib.save(ras.as_reoriented(to), root / folder / f"body_{i}.nii.gz")
        training.append({"image": f"./imagesTr/body_{i}.nii.gz", "label": f"./labelsTr/body_{i}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"name": "body", "modality": {"0": "CT"}, "training": training,
                                                   "labels": {"0": "background", "1": "left kidney", "2": "spleen"}}), encoding="utf-8")
    return root


def test_body_ct_of_mixed_spacings_and_orientations_round_trips(tmp_path):
    """Defaults only (spacing, CT window, patch and batch planned): every prediction has its scan's shape,
    affine and voxel order, here and on the real CT example."""
    data = write_body_ct(tmp_path / "body")
    config = FinetuneConfig(steps=2, labelled=2, test_fraction=0.2, val_every=2, log_every=1,
                            backbone=BackboneConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1))
    finetune(data, tmp_path / "run", config, cache_dir=tmp_path / "cache", progress=False)
    _, meta = load_model(tmp_path / "run")
    # the median spacing per axis of the scans outside the test split (their headers)
    test = set(json.loads((tmp_path / "run" / "split.json").read_text(encoding="utf-8"))["test"])
    zooms = [nib.load(str(p)).header.get_zooms() for p in sorted((data / "imagesTr").glob("*.nii.gz")) if p.name[:-7] not in test]
    # (every scan has equal x and y sizes, so the voxel orders, which swap x and y in one scan, do not matter here)
    assert len(zooms) == 4 and meta["preprocessing"]["spacing"] == pytest.approx(np.median(np.asarray(zooms), axis=0))
    assert meta["preprocessing"]["ct_window"] == [120.0, 180.0]  # the labelled voxels hold these two values only
    scans = sorted((data / "imagesTr").glob("*.nii.gz"))
    written = predict(tmp_path / "run", data / "imagesTr", tmp_path / "pred")
    assert len(written) == len(scans)
    for scan, out in zip(scans, sorted(written)):
        source, result = nib.load(str(scan)), nib.load(str(out))
        assert result.shape == source.shape and np.allclose(result.affine, source.affine)
        assert nib.aff2axcodes(result.affine) == nib.aff2axcodes(source.affine)
        assert set(np.unique(np.asarray(result.dataobj))) <= {0, 1, 2}


def test_real_ct_example_keeps_its_geometry(tmp_path):
    from conftest import SHARED_DATA

    scan = SHARED_DATA / "ct_example" / "example_ct_sm.nii.gz"
    if not scan.is_file():
        pytest.skip(f"real data not found at {scan}")
    data = write_body_ct(tmp_path / "body")
    config = FinetuneConfig(steps=1, labelled=2, val_every=1, log_every=1,
                            backbone=BackboneConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1))
    finetune(data, tmp_path / "run", config, cache_dir=tmp_path / "cache", progress=False)
    [written] = predict(tmp_path / "run", scan, tmp_path / "pred.nii.gz")
    source, result = nib.load(str(scan)), nib.load(str(written))
    assert result.shape == source.shape and np.allclose(result.affine, source.affine)
