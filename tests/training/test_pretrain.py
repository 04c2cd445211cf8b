"""The pretraining loop through the Python API: outputs, reload, resume and the run folder rules."""

from __future__ import annotations

import json

import pytest
import torch

from vectorpose.data.datasets import load_dataset
from vectorpose.data.splits import make_split
from vectorpose.errors import VectorPoseError
from vectorpose.models.backbone import BackboneConfig
from vectorpose.pretext.masking import MaskingConfig
from vectorpose.pretext.sample import PretextConfig
from vectorpose.training.resume import load_resume_state
from vectorpose.training.pretrain import PretrainConfig, load_pretext_network, pretrain
from vectorpose.training.speed import SpeedOptions

TINY = dict(batch_size=2, log_every=2, backbone=BackboneConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1), pretext=PretextConfig(patch_size=16))


@pytest.mark.parametrize("method", ["vectorpose", "vp", "bfr", "genesis", "mae"])
def test_pretrain_writes_a_reloadable_run(synthetic_dataset, cache_dir, tmp_path, method):
    out = tmp_path / "run"
    result = pretrain(synthetic_dataset, out, PretrainConfig(method=method, steps=4, **TINY), cache_dir=cache_dir, progress=False)
    for name in ("model.safetensors", "model.json", "config.json", "metrics.jsonl", "resume.pt"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    expected_terms = {"vectorpose": {"vp", "rec", "boundary"}, "vp": {"vp"}, "bfr": {"rec", "boundary"}, "genesis": {"rec"},
                      "mae": {"rec"}}[method]
    assert expected_terms <= set(rows[0]) and not ({"vp", "rec", "boundary"} - expected_terms) & set(rows[0])

    reloaded, meta = load_pretext_network(out)
    assert meta["method"] == method and meta["step"] == 4 and meta["preprocessing"]["modality"] == "MRI"
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        a, b = result.network(x), reloaded(x)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_where_the_boundary_is_made_does_not_change_training(synthetic_dataset, cache_dir, tmp_path):
    """The workers (the CPU default) and the training process make the same target, bit for bit."""
    weights = {}
    for place in ("workers", "device"):
        config = PretrainConfig(steps=3, workers=1, **TINY)
        result = pretrain(synthetic_dataset, tmp_path / place, config, cache_dir=cache_dir, progress=False,
                          speed=SpeedOptions(boundary_in=place))
        weights[place] = result.network.state_dict()
        assert json.loads((tmp_path / place / "config.json").read_text(encoding="utf-8"))["speed"]["boundary_in"] == place
    for name, value in weights["workers"].items():
        assert torch.equal(value, weights["device"][name]), name


def test_losses_fall_on_synthetic_data(synthetic_dataset, cache_dir, tmp_path):
    config = PretrainConfig(steps=60, lr=3e-3, **(TINY | {"log_every": 10, "batch_size": 4}))
    pretrain(synthetic_dataset, tmp_path / "run", config, cache_dir=cache_dir, progress=False)
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    first, last = rows[0], rows[-1]
    print({k: (round(first[k], 4), round(last[k], 4)) for k in ("vp", "rec", "boundary")})
    # every term falls; whether VP learns more than a constant is tested in test_vector_learning.py
    assert last["vp"] < first["vp"]
    assert last["rec"] < first["rec"]


def test_mae_loss_falls_on_synthetic_data(synthetic_dataset, cache_dir, tmp_path):
    """The hidden-voxel error falls below its level at the start, averaged over log windows (single batches are noisy)."""
    config = PretrainConfig(method="mae", steps=60, lr=3e-3, **(TINY | {"log_every": 10, "batch_size": 4}))
    pretrain(synthetic_dataset, tmp_path / "run", config, cache_dir=cache_dir, progress=False)
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    rec = [r["rec"] for r in rows]
    print([round(r, 4) for r in rec])
    assert len(rec) == 6 and set(rows[0]) >= {"rec", "total"} and "vp" not in rows[0]
    assert sum(rec[-2:]) / 2 < 0.7 * rec[0]


def test_mae_masks_the_crops_it_trains_on(synthetic_dataset, cache_dir, tmp_path):
    """Only mae draws masks, with its settings; config.json records them for mae alone."""
    from vectorpose.data.preprocessing import PreprocessingConfig, preprocess_dataset
    from vectorpose.data.datasets import load_dataset
    from vectorpose.training.pretrain import rank_dataset

    volumes, _ = preprocess_dataset(load_dataset(synthetic_dataset), PreprocessingConfig(modality="MRI"), cache_dir)
    mae = PretrainConfig(method="mae", masking=MaskingConfig(block_size=8, ratio=0.75), **TINY)
    sample = rank_dataset(volumes, mae, 0)[3]
    assert sample["mask"].shape == (1, 16, 16, 16) and sample["mask"].sum() == 6 * 8**3  # round(0.75 * 8) blocks of 8^3
    assert "mask" not in rank_dataset(volumes, PretrainConfig(method="genesis", **TINY), 0)[3]
    assert mae.to_json()["masking"] == {"block_size": 8, "ratio": 0.75}
    assert "masking" not in PretrainConfig(method="genesis", masking=MaskingConfig(block_size=8), **TINY).to_json()


def test_resume_continues_to_more_steps(synthetic_dataset, cache_dir, tmp_path):
    out = tmp_path / "run"
    pretrain(synthetic_dataset, out, PretrainConfig(steps=2, **TINY), cache_dir=cache_dir, progress=False)
    with pytest.raises(VectorPoseError, match="already holds results"):
        pretrain(synthetic_dataset, out, PretrainConfig(steps=4, **TINY), cache_dir=cache_dir, progress=False)
    with pytest.raises(VectorPoseError, match="differ from the saved run.*lr"):
        pretrain(synthetic_dataset, out, PretrainConfig(steps=4, lr=0.5, **TINY), cache_dir=cache_dir, resume=True, progress=False)
    pretrain(synthetic_dataset, out, PretrainConfig(steps=4, **TINY), cache_dir=cache_dir, resume=True, progress=False)
    assert load_resume_state(out / "resume.pt")["step"] == 4
    assert [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()] == [2, 4]


def test_overwrite_replaces_and_resume_needs_state(synthetic_dataset, cache_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("user results")
    with pytest.raises(VectorPoseError, match="already holds results"):
        pretrain(synthetic_dataset, out, PretrainConfig(steps=1, **TINY), cache_dir=cache_dir, progress=False)
    assert (out / "precious.txt").read_text(encoding="utf-8") == "user results"
    with pytest.raises(VectorPoseError, match="nothing to resume"):
        pretrain(synthetic_dataset, out, PretrainConfig(steps=1, **TINY), cache_dir=cache_dir, resume=True, progress=False)
    pretrain(synthetic_dataset, out, PretrainConfig(steps=1, **TINY), cache_dir=cache_dir, overwrite=True, progress=False)
    assert not (out / "precious.txt").exists()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(method="simclr"), "unknown method"),
        (dict(steps=0), "steps"),
        (dict(pretext=PretextConfig(patch_size=18)), "multiple of 4"),
        (dict(method="vp", loss_weights={"rec": 2.0}), "no 'rec' term"),
        (dict(device="tpu"), "device"),
        (dict(method="scratch"), "trains no pretext task"),
        (dict(method="mae", masking=MaskingConfig(block_size=5)), "must divide the patch size 16"),
        (dict(method="mae", masking=MaskingConfig(block_size=4, ratio=0.001)), "hides 0 of the 64 blocks"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PretrainConfig(**(TINY | kwargs))


def test_config_json_round_trip():
    config = PretrainConfig(method="bfr", loss_weights={"boundary": 0.5}, **TINY)
    assert PretrainConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
    config = PretrainConfig(method="mae", loss_weights={"rec": 2.0}, masking=MaskingConfig(block_size=8, ratio=0.7), **TINY)
    assert PretrainConfig.from_json(json.loads(json.dumps(config.to_json()))) == config


def test_a_mask_block_that_fits_no_patch_is_fine_for_methods_that_do_not_mask():
    PretrainConfig(method="vectorpose", masking=MaskingConfig(block_size=5), **TINY)


def test_pretraining_never_reads_the_cases_fine_tuning_tests_on(synthetic_dataset, cache_dir, tmp_path):
    labelled = [c.case_id for c in load_dataset(synthetic_dataset).labelled]
    for split_seed in (0, 1):
        out = tmp_path / f"held-out-{split_seed}"
        pretrain(synthetic_dataset, out, PretrainConfig(steps=1, split_seed=split_seed, **TINY), cache_dir=cache_dir, progress=False)
        read = set(json.loads((out / "config.json").read_text(encoding="utf-8"))["cases"])
        test = set(make_split(labelled, split_seed=split_seed).test)  # what finetune and benchmark test on
        assert len(test) == 2 and not read & test and read | test == set(labelled)
    out = tmp_path / "every-scan"
    pretrain(synthetic_dataset, out, PretrainConfig(steps=1, test_fraction=0.0, **TINY), cache_dir=cache_dir, progress=False)
    assert set(json.loads((out / "config.json").read_text(encoding="utf-8"))["cases"]) == set(labelled)
    # a run from before the setting existed read every scan, and reads back so
    saved = PretrainConfig(steps=1, **TINY).to_json()
    del saved["split_seed"], saved["test_fraction"]
    assert PretrainConfig.from_json(saved).test_fraction == 0.0
