"""The U-Net backbone, heads and pretext network: shapes, names, validation."""

from __future__ import annotations

import pytest
import torch

from vectorpose.models.backbone import BackboneConfig, UNetBackbone
from vectorpose.models.heads import VectorHead, VoxelHead
from vectorpose.models.pretext_network import PretextNetwork

SMALL = BackboneConfig(channels=(4, 8, 16, 32), strides=(2, 2, 2), num_res_units=1)


@pytest.mark.parametrize("config,size", [(SMALL, (16, 24, 8)), (BackboneConfig(), (32, 32, 48))])
def test_feature_shapes(config, size):
    torch.manual_seed(0)
    features = UNetBackbone(config)(torch.randn(2, 1, *size))
    assert features.decoded.shape == (2, config.channels[0], *size)
    for f, c in zip(features.coarse, config.coarse_channels):
        assert f.shape[:2] == (2, c)
    # coarse to fine: the bottleneck is the smallest map
    assert features.coarse[0].shape[2:] == tuple(s // config.size_divisor for s in size)
    for finer, coarser in zip(features.coarse[1:], features.coarse[:2]):
        assert finer.shape[2:] == tuple(2 * s for s in coarser.shape[2:])


def test_parts_are_named_for_transfer():
    names = UNetBackbone(SMALL).state_dict().keys()
    assert all(n.startswith(("encoder.", "bottleneck.", "decoder.")) for n in names)
    assert {n.split(".")[1] for n in names if n.startswith("encoder.")} == {"0", "1", "2"}
    assert set(UNetBackbone(SMALL).encoder_parameter_names()) == {n for n in names if not n.startswith("decoder.")}


def test_rejects_indivisible_input():
    with pytest.raises(ValueError, match="divisible by 8"):
        UNetBackbone(SMALL)(torch.zeros(1, 1, 16, 16, 12))


@pytest.mark.parametrize(
    "kwargs",
    [dict(channels=(4, 8)), dict(strides=(2, 2)), dict(channels=(4, 0, 8, 16)), dict(norm="group"), dict(dropout=1.0), dict(num_res_units=-1)],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        BackboneConfig(**({"channels": (4, 8, 16, 32), "strides": (2, 2, 2)} | kwargs))


def test_config_json_round_trip():
    assert BackboneConfig.from_json(SMALL.to_json()) == SMALL


def test_vector_head_ranges():
    head = VectorHead(in_channels=12, hidden=16)
    out = head((torch.randn(3, 4, 2, 2, 2) * 50, torch.randn(3, 4, 4, 4, 4), torch.randn(3, 4, 8, 8, 8)))
    assert out.shape == (3, 9, 3)
    assert (out[..., :2] >= 0).all() and (out[..., :2] <= 1).all() and (out[..., 2].abs() <= 1).all()


def test_vector_head_sees_which_octant_a_feature_is_in():
    # the same feature values, moved to the opposite octant, must reach the MLP differently
    head = VectorHead(in_channels=3, hidden=8, dropout=0.0).eval()
    levels = [torch.zeros(1, 1, n, n, n) for n in (2, 4, 8)]
    moved = [torch.zeros(1, 1, n, n, n) for n in (2, 4, 8)]
    for a, b in zip(levels, moved):
        h = a.shape[-1] // 2
        a[..., :h, :h, :h] = 1.0
        b[..., h:, h:, h:] = 1.0
    assert a.mean() == b.mean()  # a global mean could not tell them apart
    assert not torch.allclose(head(levels), head(moved))


def test_vector_head_rejects_bad_arguments():
    for kwargs in (dict(in_channels=0), dict(in_channels=4, grid=0), dict(in_channels=4, dropout=1.0)):
        with pytest.raises(ValueError):
            VectorHead(**kwargs)


@pytest.mark.parametrize("vector,restoration,boundary,keys", [(True, True, True, {"vectors", "restored", "boundary"}), (True, False, False, {"vectors"}), (False, True, True, {"restored", "boundary"}), (False, True, False, {"restored"})])
def test_pretext_network_outputs(vector, restoration, boundary, keys):
    net = PretextNetwork(SMALL, vector, restoration, boundary)
    out = net(torch.randn(2, 1, 16, 16, 16))
    assert set(out) == keys
    for k in keys - {"vectors"}:
        assert out[k].shape == (2, 1, 16, 16, 16) and 0 <= out[k].min() and out[k].max() <= 1


def test_pretext_network_rejects_boundary_without_restoration():
    with pytest.raises(ValueError):
        PretextNetwork(SMALL, True, False, True)
    with pytest.raises(ValueError):
        VoxelHead(0, 2)
