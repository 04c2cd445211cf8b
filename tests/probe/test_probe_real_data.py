"""The probe API on a few real Hippocampus MRI cases (skips when ../shared/data is absent)."""

from __future__ import annotations

import numpy as np
import pytest

from vectorpose import ProbeConfig, run_probe
from vectorpose.models.backbone import BackboneConfig
from vectorpose.pretext.sample import PretextConfig
from vectorpose.training.pretrain import PretrainConfig, pretrain

pytestmark = pytest.mark.slow


def test_probe_on_hippocampus_cases(hippocampus, tmp_path):
    # six real scans in a plain folder (links, nothing copied): pretrain a tiny run on them, then probe it
    data = tmp_path / "hippo"
    data.mkdir()
    for image in sorted((hippocampus / "imagesTr").glob("hippocampus_*.nii.gz"))[:6]:
        (data / image.name).symlink_to(image)
    run = tmp_path / "run"
    config = PretrainConfig(steps=2, batch_size=2, backbone=BackboneConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1),
                            pretext=PretextConfig(patch_size=16))
    pretrain(data, run, config, modality="MRI", cache_dir=tmp_path / "cache", progress=False)

    result = run_probe(run, data, ProbeConfig(crops_per_case=3, device="cpu"), cache_dir=tmp_path / "cache")
    assert len(result.fit_cases) == len(result.evaluation_cases) == 3
    assert set(result.fit_cases).isdisjoint(result.evaluation_cases)
    assert [e.role for e in result.encoders] == ["run", "random init"]
    for e in result.encoders:
        assert e.preprocessing["modality"] == "MRI" and e.patch_size == 16
        assert np.isfinite([e.position.r2, e.scale.r2, *e.position.r2_per_target]).all()
        assert 0.0 <= e.orientation.accuracy <= 1.0 and 0.0 <= e.up.accuracy <= 1.0
