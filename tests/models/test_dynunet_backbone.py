"""The DynUNet backbone: MONAI's own DynUNet, run block by block; its decoded features are exactly what
DynUNet's own (recursive) forward feeds its output layer, its state dict is DynUNet's under ``net.``
with each tensor once, and its layout for a patch follows nnU-Net's planning rule."""

from __future__ import annotations

import json

import pytest
import torch
from monai.networks.nets import DynUNet

from vectorpose.models.backbones import backbone_from_json, build_backbone
from vectorpose.models.dynunet_backbone import DynUNetBackbone, DynUNetBackboneConfig
from vectorpose.models.pretext_network import PretextNetwork
from vectorpose.models.segmentation_network import SegmentationNetwork
from vectorpose.training.transfer import transfer_weights

SMALL = DynUNetBackboneConfig(channels=(4, 8, 16, 32), strides=(1, 2, 2, 2))


@pytest.mark.parametrize("config", [SMALL, DynUNetBackboneConfig(channels=(3, 6, 12), strides=(1, 2, 2), kernel_sizes=(3, 5, 3),
                                                                 res_block=True)])
@pytest.mark.parametrize("size", [(16, 16, 16), (8, 24, 16)])
def test_features_are_dynunets_own(config, size):
    torch.manual_seed(0)
    backbone = DynUNetBackbone(config).eval()
    x = torch.randn(2, 1, *size)
    with torch.no_grad():
        features = backbone(x)
        # DynUNet's forward runs its skip_layers recursion; its output layer is the identity here
        expected = backbone.net(x)
    torch.testing.assert_close(features.decoded, expected, rtol=0, atol=0)
    d = config.size_divisor
    assert features.decoded.shape == (2, config.channels[0], *size)
    assert [f.shape[1] for f in features.coarse] == list(config.coarse_channels)
    assert [tuple(f.shape[2:]) for f in features.coarse] == [tuple(s * k // d for s in size) for k in (1, 2, 4)]


def test_segmentation_head_is_dynunets_output_block():
    torch.manual_seed(0)
    network = SegmentationNetwork(SMALL, 3).eval()
    monai = DynUNet(**SMALL.monai_args(out_channels=3)).eval()
    own = {k[len("backbone.net."):]: v for k, v in network.state_dict().items() if k.startswith("backbone.net.")}
    own.update({"output_block.conv.conv.weight": network.head.conv.weight, "output_block.conv.conv.bias": network.head.conv.bias})
    missing, unexpected = monai.load_state_dict(own, strict=False)
    assert not unexpected and all(k.startswith("skip_layers.") for k in missing)  # the same tensors reached again
    x = torch.randn(1, 1, 16, 8, 16)
    with torch.no_grad():
        torch.testing.assert_close(monai(x), network(x), rtol=0, atol=0)


def test_state_dict_holds_each_tensor_once_and_round_trips():
    torch.manual_seed(0)
    backbone = DynUNetBackbone(SMALL)
    state = backbone.state_dict()
    assert state and all(k.startswith("net.") and not k.startswith("net.skip_layers.") for k in state)
    assert not any(k.startswith("net.output_block.") for k in state)  # the task head is the last layer
    assert len({t.data_ptr() for t in state.values()}) == len(state)
    torch.manual_seed(1)
    other = DynUNetBackbone(SMALL)
    other.load_state_dict(state)
    for name, tensor in other.net.state_dict().items():  # skip_layers.* filled from the first name
        assert torch.equal(tensor, backbone.net.state_dict()[name]), name
    assert set(backbone.encoder_parameter_names()) == {k for k in state if not k.startswith("net.upsamples.")}


def test_networks_and_transfer_on_dynunet():
    net = PretextNetwork(SMALL, vector_head=True, restoration=True, boundary=True)
    out = net(torch.randn(2, 1, 16, 16, 16))
    assert out["vectors"].shape == (2, 9, 3) and out["restored"].shape == out["boundary"].shape == (2, 1, 16, 16, 16)
    segmentation = SegmentationNetwork(SMALL, 2)
    report = transfer_weights(segmentation, net.state_dict(), "encoder")
    assert {n for n, _ in report.matched} == {"backbone." + n for n in segmentation.backbone.encoder_parameter_names()}
    assert {n for n, _ in transfer_weights(segmentation, net.state_dict(), "all").matched} == {
        n for n in segmentation.state_dict() if n.startswith("backbone.")}


def test_json_round_trip():
    config = DynUNetBackboneConfig(channels=(4, 8, 16), strides=(1, 1, 2), kernel_sizes=(3, 3, 5), res_block=True, norm="batch", dropout=0.1)
    saved = json.loads(json.dumps(config.to_json()))
    assert saved["kind"] == "dynunet" and backbone_from_json(saved) == config
    assert config.size_divisor == 2 and config.coarse_channels == (16, 8, 4)
    assert isinstance(build_backbone(config), DynUNetBackbone)
    # the arguments survive JSON and build MONAI's class
    DynUNet(**json.loads(json.dumps(config.monai_args(out_channels=2))))


@pytest.mark.parametrize("patch, channels, levels", [
    (32, (16, 32, 64, 128, 256), (16, 32, 64, 128)),   # 32 -> 16 -> 8 -> 4: a fourth halving would give 2
    (64, (16, 32, 64, 128, 256), (16, 32, 64, 128, 256)),
    (48, (8, 16, 32, 64, 128), (8, 16, 32, 64)),        # 48 / 16 = 3 < 4
    (20, (8, 16, 32, 64), (8, 16, 32)),                 # 20 / 8 is no integer
    (128, (4, 8, 16), (4, 8, 16)),                      # --channels caps the depth
])
def test_layout_for_a_patch(patch, channels, levels):
    config = DynUNetBackboneConfig.for_patch(patch, channels)
    assert config.channels == levels
    assert config.strides == (1,) + (2,) * (len(levels) - 1) and config.kernel_sizes == (3,) * len(levels)


def test_patch_too_small_for_three_levels():
    with pytest.raises(ValueError, match="patch 12 allows 1 halving"):
        DynUNetBackboneConfig.for_patch(12, (4, 8, 16))


@pytest.mark.parametrize("kwargs, message", [
    ({"channels": (4, 8), "strides": (1, 2)}, "at least 3 levels"),
    ({"channels": (4, 0, 8), "strides": (1, 2, 2)}, "channels must be positive"),
    ({"channels": (4, 8, 16), "strides": (1, 2)}, "strides needs one entry per level"),
    ({"channels": (4, 8, 16), "strides": (2, 2, 2)}, "first stride must be 1"),
    ({"channels": (4, 8, 16), "strides": (1, 0, 2)}, "strides must be 1 or 2"),
    ({"channels": (4, 8, 16), "strides": (1, 2, 2), "kernel_sizes": (3, 2, 3)}, "odd and positive"),
    ({"channels": (4, 8, 16), "strides": (1, 2, 3)}, "strides must be 1 or 2"),
    ({"channels": (4, 8, 16), "strides": (1, 2, 2), "norm": "group"}, "norm must be one of instance, batch"),
    ({"channels": (4, 8, 16), "strides": (1, 2, 2), "dropout": 1.0}, "dropout must lie in"),
    ({"channels": (4, 8, 16), "strides": (1, 2, 2), "in_channels": 0}, "in_channels must be positive"),
    ({"channels": (4, 8, 16), "strides": (1, 2, 2), "res_block": "yes"}, "res_block must be true or false"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DynUNetBackboneConfig(**kwargs)


def test_rejects_indivisible_input():
    with pytest.raises(ValueError, match="divisible by 8"):
        DynUNetBackbone(SMALL)(torch.randn(1, 1, 16, 12, 16))
