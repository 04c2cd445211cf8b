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
