"""The nnU-Net backbone: the network a plans file describes, built by nnU-Net's own architecture package,
returning the features the VectorPOSE heads read; its last decoder features are exactly what nnU-Net's
own forward feeds to its segmentation layer."""

from __future__ import annotations

import json

import pytest
import torch

from nnunet_plans import hippocampus_plans, write_plans
from vectorpose.models.backbones import backbone_from_json
from vectorpose.models.nnunet_backbone import NnUNetBackbone, NnUNetBackboneConfig, PlansError
from vectorpose.models.pretext_network import PretextNetwork

pytest.importorskip("dynamic_network_architectures")

NARROW = (4, 8, 16, 32)


@pytest.mark.parametrize("network", ["PlainConvUNet", "ResidualEncoderUNet"])
@pytest.mark.parametrize("side", [16, 24])
def test_features_are_nnunets_own(network, side, tmp_path):
    plans = write_plans(tmp_path / "nnUNetPlans.json", hippocampus_plans(NARROW, network))
    config = NnUNetBackboneConfig.from_plans(plans)
    torch.manual_seed(0)
    backbone = NnUNetBackbone(config).eval()
    x = torch.randn(2, 1, side, side, side)
    with torch.no_grad():
        features = backbone(x)
        # nnU-Net's own forward ends in its segmentation layer applied to the last decoder stage
        expected = backbone.net(x)
        mine = backbone.net.decoder.seg_layers[-1](features.decoded)
    torch.testing.assert_close(mine, expected, rtol=0, atol=0)
    assert features.decoded.shape == (2, NARROW[0], side, side, side)
    assert [f.shape[1] for f in features.coarse] == list(config.coarse_channels) == [32, 16, 8]
    assert [f.shape[2] for f in features.coarse] == [side // 8, side // 4, side // 2]


def test_pretext_network_on_nnunet(tmp_path):
    config = NnUNetBackboneConfig.from_plans(write_plans(tmp_path / "p.json", hippocampus_plans(NARROW)))
    net = PretextNetwork(config, vector_head=True, restoration=True, boundary=True)
    out = net(torch.randn(2, 1, 16, 16, 16))
    assert out["vectors"].shape == (2, 9, 3) and out["restored"].shape == out["boundary"].shape == (2, 1, 16, 16, 16)
    # the state dict is nnU-Net's under backbone.net.
    names = [k for k in net.state_dict() if k.startswith("backbone.")]
    assert names and all(k.startswith("backbone.net.") for k in names)


def test_json_round_trip_and_inheritance(tmp_path):
    plans = write_plans(tmp_path / "p.json", hippocampus_plans(NARROW))
    config = NnUNetBackboneConfig.from_plans(plans)
    assert backbone_from_json(json.loads(json.dumps(config.to_json()))) == config
    assert config.nnunet_patch_size == (40, 56, 40) and config.total_stride == (8, 8, 8) and config.size_divisor == 8
    inherited = NnUNetBackboneConfig.from_plans(plans, "3d_lowres_like")
    assert inherited.arch_kwargs == config.arch_kwargs and inherited.configuration == "3d_lowres_like"


def test_anisotropic_strides_set_the_patch_rule(tmp_path):
    plans = hippocampus_plans(NARROW, strides=[[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2]])
    config = NnUNetBackboneConfig.from_plans(write_plans(tmp_path / "p.json", plans))
    assert config.total_stride == (8, 8, 4)
    config.check_patch_size(16)
    with pytest.raises(ValueError, match=r"patch 20 is not divisible .* per axis \[8, 8, 4\]"):
        config.check_patch_size(20)


def _edit(plans: dict, **kwargs) -> dict:
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"].update(kwargs)
    return plans


@pytest.mark.parametrize("plans, configuration, message", [
    (hippocampus_plans(NARROW), "3d_cascade_fullres", "no configuration '3d_cascade_fullres'; the plans have 2d, 3d_fullres"),
    (hippocampus_plans(NARROW), "2d", "is not 3D"),
    ({"plans_name": "x"}, "3d_fullres", "not an nnU-Net v2 plans file"),
    (_edit(hippocampus_plans(NARROW), nonlin="os.system"), "3d_fullres", "nonlin 'os.system' is not a class of"),
    (_edit(hippocampus_plans(NARROW), strides=[[2, 2, 2]] * 4), "3d_fullres", "first stage has stride (2, 2, 2)"),
    (_edit(hippocampus_plans(NARROW), n_stages=3), "3d_fullres", "cannot be built"),
])
def test_bad_plans_name_the_file(tmp_path, plans, configuration, message):
    path = write_plans(tmp_path / "p.json", plans)
    with pytest.raises(PlansError) as exc:
        NnUNetBackboneConfig.from_plans(path, configuration)
    assert str(exc.value).startswith(f"{path}: ") and message in str(exc.value), str(exc.value)


def test_missing_and_malformed_plans(tmp_path):
    with pytest.raises(PlansError, match="plans file not found"):
        NnUNetBackboneConfig.from_plans(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PlansError, match="malformed JSON"):
        NnUNetBackboneConfig.from_plans(tmp_path / "bad.json")
