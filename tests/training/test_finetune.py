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
from vectorpose.models.segmentation_network import SegmentationNetwork
from vectorpose.training.finetune import FinetuneConfig, SegmentationTask, finetune
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
    # the final model is kept: model.* holds the last step's weights, as last.* does
    assert meta["task"] == "segmentation" and meta["num_classes"] == 3 and meta["step"] == result.model_step == 4
    assert meta["val_dice"] == pytest.approx(rows[-1]["val/dice"])
    kept, last = load_model(out)[0], load_model(out / "last.safetensors")[0]
    assert all(torch.equal(kept[k], last[k]) for k in last)
    split = json.loads((out / "split.json").read_text(encoding="utf-8"))
    assert len(split["labelled"]) == 2 and not set(split["labelled"]) & set(split["test"])
    plan = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    assert plan["patch_size"] == [16, 16, 16] and plan["batch_size"] == 2 and plan["reasons"]


def test_automatic_batch_fills_the_cpu_budget(synthetic_dataset, cache_dir, tmp_path):
    # 4 x 48x64x48 voxels a step hold 144 patches of 16^3: the batch is capped at 8
    config = FinetuneConfig(labelled=2, **(FAST | {"steps": 1, "val_every": 1, "batch_size": None}))
    finetune(synthetic_dataset, tmp_path / "ft", config, cache_dir=cache_dir, progress=False)
    plan = json.loads((tmp_path / "ft" / "plan.json").read_text(encoding="utf-8"))
    assert plan["batch_size"] == 8 and plan["budget"] == {"patch": 64**3, "step": 4 * 48 * 64 * 48}


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


RECIPE = ("foreground_sampling", "dice_background", "warmup", "augmentation", "deep_supervision", "keep")


def test_config_written_before_a_setting_keeps_its_recipe():
    new = FinetuneConfig()
    assert [getattr(new, k) for k in RECIPE] == ["class", False, 0.05, "nnunet", True, "final"]
    assert FinetuneConfig.from_json(new.to_json()) == new
    legacy = FinetuneConfig.from_json({k: v for k, v in new.to_json().items() if k not in RECIPE})
    assert [getattr(legacy, k) for k in RECIPE] == ["voxel", True, 0.0, "light", False, "best"]
    # settings added whose default is what runs did before them read back as that default
    older = FinetuneConfig.from_json({k: v for k, v in new.to_json().items() if k not in ("optimizer", "schedule", "precision")})
    assert (older.optimizer, older.schedule, older.precision) == ("adamw", "cosine", "fp32")


@pytest.mark.parametrize("keep, step", [("final", 4), ("best", 2)])
def test_kept_model_is_the_final_or_the_best_validation_round(synthetic_dataset, cache_dir, tmp_path, monkeypatch, keep, step):
    import vectorpose.training.finetune as ft

    # validation rounds at steps 1..4 score these means: the best is step 2's, the final step 4's
    scores = iter([[0.5, 0.5], [0.9, 0.9], [0.3, 0.3], [0.1, 0.1]])
    monkeypatch.setattr(ft, "validation_class_dice", lambda *args: next(scores))
    out = tmp_path / keep
    result = finetune(synthetic_dataset, out, FinetuneConfig(labelled=2, keep=keep, **(FAST | {"val_every": 1})), cache_dir=cache_dir,
                      progress=False)
    _, meta = load_model(out)
    assert (meta["step"], meta["val_dice"]) == (step, {4: 0.1, 2: 0.9}[step])
    assert (result.model_step, result.best_step, result.best_dice) == (step, 2, 0.9)
    with pytest.raises(ValueError, match="keep must be one of"):
        FinetuneConfig(keep="last")


def test_learning_rate_warms_up_then_follows_a_cosine(synthetic_dataset, cache_dir, tmp_path):
    config = FinetuneConfig(labelled=2, **(FAST | {"steps": 20, "log_every": 1, "val_every": 20, "batch_size": 1}), warmup=0.25, lr=1e-3)
    finetune(synthetic_dataset, tmp_path / "ft", config, cache_dir=cache_dir, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    # the rate logged at step s is the one the next step uses: s/5 of the peak during the 5 warm-up steps, then
    # half a cosine period over the remaining 15
    expected = [1e-3 * (s / 5 if s < 5 else 0.5 * (1 + np.cos(np.pi * (s - 5) / 15))) for s in range(1, 21)]
    assert [r["step"] for r in rows] == list(range(1, 21))
    np.testing.assert_allclose([r["lr"] for r in rows], expected, rtol=1e-9, atol=1e-15)


def test_sgd_with_a_polynomial_decay_as_nnunet(synthetic_dataset, cache_dir, tmp_path, monkeypatch):
    import vectorpose.training.finetune as ft

    made = []
    real = ft.make_optimizer
    monkeypatch.setattr(ft, "make_optimizer", lambda groups, config: made.append(real(groups, config)) or made[-1])
    config = FinetuneConfig(labelled=2, **(FAST | {"steps": 20, "log_every": 1, "val_every": 20, "batch_size": 1}), warmup=0.25, lr=1e-2,
                            optimizer="sgd", schedule="poly")
    finetune(synthetic_dataset, tmp_path / "ft", config, cache_dir=cache_dir, progress=False)
    [optimizer] = made
    assert isinstance(optimizer, torch.optim.SGD)
    assert all(g["momentum"] == 0.99 and g["nesterov"] and g["weight_decay"] == config.weight_decay for g in optimizer.param_groups)
    rows = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    # s/5 of the peak during the 5 warm-up steps, then (1 - (s - 5) / 15) ** 0.9 down to 0 at step 20
    expected = [1e-2 * (s / 5 if s < 5 else (1 - (s - 5) / 15) ** 0.9) for s in range(1, 21)]
    np.testing.assert_allclose([r["lr"] for r in rows], expected, rtol=1e-9, atol=1e-15)
    saved = json.loads((tmp_path / "ft" / "config.json").read_text(encoding="utf-8"))["finetune"]
    assert (saved["optimizer"], saved["schedule"]) == ("sgd", "poly")
    for bad, match in ((dict(optimizer="adam"), "optimizer must be one of"), (dict(schedule="step"), "schedule must be one of"),
                       (dict(weight_decay=-1.0), "weight_decay must be >= 0")):
        with pytest.raises(ValueError, match=match):
            FinetuneConfig(**bad)


def numpy_dice_ce(logits: np.ndarray, label: np.ndarray, dice_background: bool) -> float:
    """Batch Dice (sums over the batch and the voxels, one score per class; smoothing 1e-5 in both terms)
    over the chosen classes, plus the mean cross-entropy; ``logits`` ``(B, C, ...)``, ``label`` ``(B, ...)``."""
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.stack([(label == c) for c in range(logits.shape[1])], 1).astype(np.float64)
    classes = range(logits.shape[1]) if dice_background else range(1, logits.shape[1])
    dice = np.mean([1 - (2 * (p[:, c] * onehot[:, c]).sum() + 1e-5) / (p[:, c].sum() + onehot[:, c].sum() + 1e-5) for c in classes])
    return float(dice - np.mean(np.log((p * onehot).sum(1))))


@pytest.mark.parametrize("dice_background", [False, True])
def test_loss_against_a_numpy_dice_and_cross_entropy(tmp_path, dice_background):
    torch.manual_seed(0)
    network = SegmentationNetwork(SMALL, 3)
    task = SegmentationTask(tmp_path, network, [], 0, [], (8, 8, 8), 3, torch.device("cpu"), lambda **_: {}, dice_background, ["a", "b"], "final", 1)
    image = torch.randn(2, 1, 8, 8, 8)
    label = torch.randint(0, 3, (2, 1, 8, 8, 8))
    loss = float(task.losses({"image": image, "label": label}, step=1)["dice_ce"].detach())
    with torch.no_grad():
        logits = network(image).double().numpy()
    assert loss == pytest.approx(numpy_dice_ce(logits, label.numpy()[:, 0], dice_background), rel=1e-5)


@pytest.mark.parametrize("precision, conv_dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_bf16_step_convolves_in_bfloat16_and_keeps_the_loss_close(tmp_path, precision, conv_dtype):
    torch.manual_seed(0)
    network = SegmentationNetwork(SMALL, 3)
    task = SegmentationTask(tmp_path, network, [], 0, [], (8, 8, 8), 3, torch.device("cpu"), lambda **_: {}, False, ["a", "b"], "final", 1,
                            precision)
    seen = []
    conv = next(m for m in network.modules() if isinstance(m, torch.nn.Conv3d))
    conv.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    image = torch.randn(2, 1, 8, 8, 8)
    label = torch.randint(0, 3, (2, 1, 8, 8, 8))
    loss = task.losses({"image": image, "label": label}, step=1)["dice_ce"]
    assert seen == [conv_dtype] and loss.dtype == torch.float32
    with torch.no_grad():
        logits = network(image).double().numpy()
    # the float64 reference; bfloat16 keeps 8 bits of mantissa, so about 2 significant digits
    assert float(loss.detach()) == pytest.approx(numpy_dice_ce(logits, label.numpy()[:, 0], False), rel=1e-5 if precision == "fp32" else 2e-2)
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in network.parameters())


def test_precision_must_be_known():
    with pytest.raises(ValueError, match="precision"):
        FinetuneConfig(precision="fp16")


def test_deep_supervision_loss_against_strided_labels(tmp_path):
    # the default U-Net has decoder levels at 1/8, 1/4, 1/2 and 1: deep supervision adds 1/2 and 1/4
    torch.manual_seed(0)
    backbone = BackboneConfig(channels=(4, 8, 16, 32, 64))
    network = SegmentationNetwork(backbone, 3, deep_supervision=True)
    task = SegmentationTask(tmp_path, network, [], 0, [], (32, 32, 32), 3, torch.device("cpu"), lambda **_: {}, False, ["a", "b"], "final", 1)
    image = torch.randn(2, 1, 32, 32, 32)
    label = torch.randint(0, 3, (2, 1, 32, 32, 32))
    loss = float(task.losses({"image": image, "label": label}, step=1)["dice_ce"].detach())
    with torch.no_grad():
        full, half, quarter = (o.double().numpy() for o in network.forward_levels(image))
    assert full.shape[2:] == (32, 32, 32) and half.shape[2:] == (16, 16, 16) and quarter.shape[2:] == (8, 8, 8)
    y = label.numpy()[:, 0]
    # nearest neighbour at half size takes voxel 2i + 1 (the centre of each 2³ block rounds up), at a quarter 4i + 2
    terms = [numpy_dice_ce(full, y, False), numpy_dice_ce(half, y[:, 1::2, 1::2, 1::2], False),
             numpy_dice_ce(quarter, y[:, 2::4, 2::4, 2::4], False)]
    assert loss == pytest.approx((terms[0] + terms[1] / 2 + terms[2] / 4) / 1.75, rel=1e-5)


def test_deep_supervision_layers_stay_out_of_model_files(synthetic_dataset, cache_dir, tmp_path):
    backbone = BackboneConfig(channels=(4, 8, 16, 32), strides=(2, 2, 2), num_res_units=1)
    config = FinetuneConfig(labelled=2, **(FAST | {"backbone": backbone}))
    result = finetune(synthetic_dataset, tmp_path / "ft", config, cache_dir=cache_dir, progress=False)
    assert len(result.network.deep_heads) == 1  # levels 1/4, 1/2, 1: the 1/2 level
    state, _ = load_model(tmp_path / "ft")
    assert not any(k.startswith("deep_heads.") for k in state) and "head.conv.weight" in state
    assert SegmentationNetwork(backbone, 3).load_state_dict(state) is not None


@pytest.mark.parametrize("labels, given, expected", [
    ({0: "background", 1: "Anterior", 2: "Posterior"}, None, (0,)),
    ({0: "background", 1: "liver", 2: "right kidney", 3: "left kidney"}, None, ()),
    ({0: "background", 1: "Kidney_Left"}, None, ()),
    ({0: "background", 1: "RightKidney"}, None, ()),
    ({0: "background", 1: "Left-Amygdala"}, None, ()),
    ({0: "background", 1: "cleft"}, None, (0,)),            # a word that merely contains "left"
    ({0: "background", 1: "left organ"}, (0, 2), (0, 2)),   # given axes are kept
])
def test_left_right_mirroring_only_without_sided_labels(labels, given, expected):
    from vectorpose.training.finetune import mirrored_axes

    assert mirrored_axes(FinetuneConfig(flip_axes=given), labels) == expected


def test_validation_dice_leaves_out_volumes_without_the_class(monkeypatch):
    """Class 2 is in neither the first volume's label map nor its prediction: that volume does not
    score it, so class 2's Dice is the second volume's alone; a class no volume scores is NaN."""
    import vectorpose.training.finetune as ft

    class Volume:
        def __init__(self, label, pred):
            self._label, self.pred = label, pred

        def image(self):
            return self.pred  # the stub "network" below returns its input as the prediction

        def label(self):
            return self._label

    def numpy_dice(a, b):
        return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())

    rng = np.random.default_rng(0)
    shape = (6, 6, 6)
    first_ref, first_pred = rng.integers(0, 2, shape), rng.integers(0, 2, shape)  # classes 0 and 1 only
    second_ref, second_pred = rng.integers(0, 3, shape), rng.integers(0, 3, shape)
    monkeypatch.setattr(ft, "predict_labels", lambda network, image, patch, device: image)
    dice = ft.validation_class_dice(None, [Volume(first_ref, first_pred), Volume(second_ref, second_pred)], None, 4, "cpu")
    expected_1 = (numpy_dice(first_ref == 1, first_pred == 1) + numpy_dice(second_ref == 1, second_pred == 1)) / 2
    assert dice[0] == pytest.approx(expected_1)
    assert dice[1] == pytest.approx(numpy_dice(second_ref == 2, second_pred == 2))
    assert np.isnan(dice[2])
