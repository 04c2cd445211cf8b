"""A tiny pretraining run on the synthetic dataset, for the probe's runner and CLI tests (imported by them: a
conftest.py here would shadow the top-level one, which other tests import as ``conftest``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vectorpose.models.backbone import BackboneConfig
from vectorpose.pretext.sample import PretextConfig
from vectorpose.training.pretrain import PretrainConfig, pretrain

TINY_BACKBONE = BackboneConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1)


@pytest.fixture(scope="session")
def probe_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("probe_cache")


@pytest.fixture(scope="session")
def tiny_run(synthetic_dataset, probe_cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("probe_runs") / "tiny"
    config = PretrainConfig(steps=3, batch_size=2, log_every=1, backbone=TINY_BACKBONE, pretext=PretextConfig(patch_size=16))
    pretrain(synthetic_dataset, out, config, cache_dir=probe_cache, progress=False)
    return out
