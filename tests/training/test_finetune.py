"""Fine-tuning, evaluation and prediction end to end, on synthetic and on real data."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from vectorpose.errors import CheckpointError, VectorPoseError
from vectorpose.inference.evaluate import evaluate
from vectorpose.inference.predictor import predict
from vectorpose.models.backbone import BackboneConfig
from vectorpose.pretext.sample import PretextConfig
from vectorpose.models.files import load_model
from vectorpose.training.finetune import FinetuneConfig, auto_patch_size, finetune
from vectorpose.training.pretrain import PretrainConfig, pretrain

SMALL = BackboneConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
FAST = dict(steps=4, batch_size=2, val_every=2, log_every=2, backbone=SMALL, patch_size=(16, 16, 16))


@pytest.fixture(scope="module")
def pretrained_run(synthetic_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "run"
    config = PretrainConfig(steps=2, batch_size=2, backbone=SMALL, pretext=PretextConfig(patch_size=16))
    pretrain(synthetic_dataset, out, config, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    return out


def test_finetune_from_scratch_writes_run(synthetic_dataset, cache_dir, tmp_path):
    out = tmp_path / "ft"
    result = finetune(synthetic_dataset, out, FinetuneConfig(labelled=2, **FAST), cache_dir=cache_dir, progress=False)
    for name in ("model.safetensors", "model.json", "last.safetensors", "last.json", "split.json", "config.json", "resume.pt", "metrics.jsonl"):
        assert (out / name).is_file(), name
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and all("val/dice" in r for r in rows)
    _, meta = load_model(out)
    assert meta["task"] == "segmentation" and meta["num_classes"] == 3 and meta["step"] == result.best_step
    split = json.loads((out / "split.json").read_text(encoding="utf-8"))
    assert len(split["labelled"]) == 2 and not set(split["labelled"]) & set(split["test"])


def test_finetune_from_pretrained_loads_encoder(synthetic_dataset, pretrained_run, cache_dir, tmp_path):
    out = tmp_path / "ft"
    config = FinetuneConfig(labelled=2, **(FAST | {"steps": 1, "val_every": 1, "backbone": None}))
    # lr 0 keeps the weights where the transfer put them
    config = FinetuneConfig(**{**config.__dict__, "lr": 1e-12})
    result = finetune(synthetic_dataset, out, config, init=pretrained_run, cache_dir=cache_dir, progress=False)
    pre, _ = load_model(pretrained_run)
    assert result.transfer is not None and len(result.transfer.matched) > 0
    state = result.network.state_dict()
    for name, _ in result.transfer.matched:
        assert name.startswith(("backbone.encoder.", "backbone.bottleneck."))
        torch.testing.assert_close(state[name], pre[name], rtol=0, atol=1e-9)
    assert json.loads((out / "transfer.json").read_text(encoding="utf-8"))["mode"] == "encoder"
    _, meta = load_model(out)
    assert meta["init"] == str(pretrained_run) and meta["preprocessing"]["modality"] == "MRI"


def test_finetune_refuses_mismatched_checkpoint(synthetic_dataset, pretrained_run, cache_dir, tmp_path):
    other = BackboneConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
    with pytest.raises(CheckpointError, match="backbone differs"):
        finetune(synthetic_dataset, tmp_path / "ft", FinetuneConfig(labelled=2, **(FAST | {"backbone": other})), init=pretrained_run,
                 cache_dir=cache_dir, progress=False)
    with pytest.raises(CheckpointError, match="pretrained on MRI"):
        finetune(synthetic_dataset, tmp_path / "ft", FinetuneConfig(labelled=2, **FAST), init=pretrained_run, modality="CT",
                 cache_dir=cache_dir, progress=False)
    assert not (tmp_path / "ft").exists()


def test_evaluate_uses_recorded_test_split(synthetic_dataset, cache_dir, tmp_path):
    run = tmp_path / "ft"
    finetune(synthetic_dataset, run, FinetuneConfig(labelled=2, **FAST), cache_dir=cache_dir, progress=False)
    result = evaluate(run, synthetic_dataset, tmp_path / "m.json", cache_dir=cache_dir)
    split = json.loads((run / "split.json").read_text(encoding="utf-8"))
    assert [r["case_id"] for r in result["cases"]] == split["test"]
    written = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))
    assert written["mean_dice"] == pytest.approx(np.mean([d for r in result["cases"] for d in r["dice"].values()]))
    assert set(written["per_class"]) == {"left organ", "right organ"}
    with pytest.raises(VectorPoseError, match="already exists"):
        evaluate(run, synthetic_dataset, tmp_path / "m.json", cache_dir=cache_dir)
    assert evaluate(run, synthetic_dataset, None, all_cases=True, cache_dir=cache_dir)["num_cases"] == 6


def test_auto_patch_size():
    assert auto_patch_size([(35, 50, 30), (43, 59, 47), (40, 52, 40)], 16) == (48, 64, 48)
    assert auto_patch_size([(512, 512, 200)], 16) == (128, 128, 128)


def test_end_to_end_on_real_hippocampus(hippocampus, cache_dir, tmp_path):
    run = tmp_path / "ft"
    config = FinetuneConfig(steps=4, batch_size=2, labelled=4, val_every=4, log_every=2,
                            backbone=BackboneConfig(channels=(4, 8, 16, 32, 64), strides=(2, 2, 2, 2), num_res_units=1))
    result = finetune(hippocampus, run, config, cache_dir=cache_dir, progress=False)
    assert json.loads((run / "config.json").read_text(encoding="utf-8"))["patch_size"] == [48, 64, 48]
    assert len(result.split.test) == 42 and len(result.split.labelled) == 4
    metrics = evaluate(run, hippocampus, tmp_path / "metrics.json", cache_dir=cache_dir)
    assert metrics["num_cases"] == 42 and 0.0 <= metrics["mean_dice"] <= 1.0
    case = hippocampus / "imagesTr" / f"{result.split.test[0]}.nii.gz"
    [written] = predict(run, case, tmp_path / "pred")
    src, out = nib.load(str(case)), nib.load(str(written))
    assert out.shape == src.shape and np.allclose(out.affine, src.affine)
    assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1, 2}
    dicom = SHARED_DATA / "dicom_hippocampus_crops" / "Study1" / "13_HCropVolume"
    if dicom.is_dir():
        [written] = predict(run, dicom, tmp_path / "dicom")
        assert set(np.unique(np.asarray(nib.load(str(written)).dataobj))) <= {0, 1, 2}
