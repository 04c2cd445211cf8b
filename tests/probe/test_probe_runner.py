"""run_probe end to end on the synthetic dataset: rows, split, determinism, compare runs, refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from vectorpose import ProbeConfig, run_probe
from vectorpose.errors import DataError, VectorPoseError
from vectorpose.errors import CheckpointError
from vectorpose.models.backbone import BackboneConfig
from vectorpose.models.dynunet_backbone import DynUNetBackboneConfig
from vectorpose.pretext.sample import PretextConfig
from vectorpose.training.pretrain import PretrainConfig, pretrain
from probe_helpers import probe_cache, tiny_run  # noqa: F401 (fixtures)


@pytest.mark.parametrize("kwargs, message", [
    ({"crops_per_case": 0}, "crops_per_case"), ({"fit_share": 1.0}, "fit_share"), ({"max_cases": 1}, "max_cases"),
    ({"logistic_c": 0.0}, "logistic_c"), ({"device": "gpu"}, "device"), ({"batch_size": 0}, "batch_size"),
])
def test_config_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ProbeConfig(**kwargs)


def test_probe_rows_split_and_labels(tiny_run, synthetic_dataset, probe_cache, tmp_path):
    # a compare run: the same model under another name, with another patch side in its metadata
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    meta = json.loads((other / "model.json").read_text(encoding="utf-8"))
    meta["patch_size"] = meta["pretext"]["patch_size"] = 8
    (other / "model.json").write_text(json.dumps(meta))

    config = ProbeConfig(crops_per_case=3, seed=5, device="cpu")
    result = run_probe(tiny_run, synthetic_dataset, config, compare=[other], cache_dir=probe_cache)
    assert [(e.name, e.role) for e in result.encoders] == [("tiny", "run"), ("random init", "random init"), ("other", "compare")]
    assert [e.patch_size for e in result.encoders] == [16, 16, 8]
    ids = sorted(p.name.split(".")[0] for p in (synthetic_dataset / "imagesTr").iterdir())
    assert sorted(result.fit_cases + result.evaluation_cases) == ids and not set(result.fit_cases) & set(result.evaluation_cases)
    assert result.crops == {"fit": 3 * len(result.fit_cases), "evaluation": 3 * len(result.evaluation_cases)}
    for e in result.encoders:
        assert e.features == 16 * config.grid**3 and len(e.position.r2_per_target) == 3
        assert e.orientation.classes == 48 and e.up.classes == 6
        assert 0.0 <= e.orientation.accuracy <= 1.0 and 0.0 <= e.up.accuracy <= 1.0
        assert np.isfinite([e.position.r2, e.scale.r2]).all()
    assert result.row("tiny").method == "vectorpose" and result.row("random init").source is None
    payload = json.loads(json.dumps(result.to_json()))  # everything is JSON
    assert payload["split"]["fit"] == list(result.fit_cases) and len(payload["orientations"]) == 48
    assert payload["settings"]["seed"] == 5 and "scikit-learn" in payload["versions"]

    again = run_probe(tiny_run, synthetic_dataset, config, cache_dir=probe_cache)
    assert again.encoders[:2] == result.encoders[:2]  # the same numbers from the same seed

    few = run_probe(tiny_run, synthetic_dataset, ProbeConfig(crops_per_case=2, max_cases=3, device="cpu"), cache_dir=probe_cache)
    assert len(few.fit_cases) + len(few.evaluation_cases) == 3
    with pytest.raises(DataError, match="at least 2 crops on each side"):
        run_probe(tiny_run, synthetic_dataset, ProbeConfig(crops_per_case=1, max_cases=3), cache_dir=probe_cache)


def test_refusals(tiny_run, synthetic_dataset, probe_cache, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        run_probe(tmp_path / "missing", synthetic_dataset, cache_dir=probe_cache)
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(next((synthetic_dataset / "imagesTr").iterdir()), one)
    with pytest.raises(DataError, match="at least 2 cases"):
        run_probe(tiny_run, one, modality="MRI", cache_dir=probe_cache)
    with pytest.raises(VectorPoseError, match="pretrained on MRI data"):
        run_probe(tiny_run, one, modality="CT", cache_dir=probe_cache)
    wide = tmp_path / "wide"
    pretrain(synthetic_dataset, wide, PretrainConfig(steps=1, batch_size=1, backbone=BackboneConfig(channels=(4, 8, 8), strides=(2, 2), num_res_units=0),
                                                     pretext=PretextConfig(patch_size=16)), cache_dir=probe_cache, progress=False)
    with pytest.raises(VectorPoseError, match="must share a backbone shape"):
        run_probe(tiny_run, synthetic_dataset, compare=[wide], cache_dir=probe_cache)
    dynunet = tmp_path / "dynunet"
    pretrain(synthetic_dataset, dynunet, PretrainConfig(steps=1, batch_size=1, backbone=DynUNetBackboneConfig.for_patch(16, (4, 8, 16)),
                                                        pretext=PretextConfig(patch_size=16)), cache_dir=probe_cache, progress=False)
    for run, compare in ((dynunet, []), (tiny_run, [dynunet])):
        with pytest.raises(VectorPoseError, match=f"{dynunet}: pretrained with the dynunet backbone; the probe reads"):
            run_probe(run, synthetic_dataset, compare=compare, cache_dir=probe_cache)
