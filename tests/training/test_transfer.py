"""Weight transfer: moved tensors are bit-identical, the rest untouched, mismatches refused."""

from __future__ import annotations

import pytest
import torch

from vectorpose.methods import get_method
from vectorpose.models.backbone import BackboneConfig
from vectorpose.models.segmentation_network import SegmentationNetwork
from vectorpose.errors import CheckpointError
from vectorpose.training.transfer import check_compatible, transfer_weights

SMALL = BackboneConfig(channels=(4, 8, 16, 32), strides=(2, 2, 2), num_res_units=1)


def pretrained_state():
    torch.manual_seed(1)
    return get_method("vectorpose").build_network(SMALL).state_dict()


@pytest.mark.parametrize("mode,prefixes", [("encoder", ("backbone.encoder.", "backbone.bottleneck.")), ("all", ("backbone.",))])
def test_transferred_tensors_are_identical_and_others_untouched(mode, prefixes):
    torch.manual_seed(2)
    net = SegmentationNetwork(SMALL, 3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    source = pretrained_state()
    report = transfer_weights(net, source, mode)
    after = net.state_dict()
    moved = {k for k in after if k.startswith(prefixes)}
    assert {n for n, _ in report.matched} == moved
    for k, v in after.items():
        if k in moved:
            assert torch.equal(v, source[k]), k
        else:
            assert torch.equal(v, before[k]), k
    assert all(n.startswith(("head.",)) or n.startswith("backbone.decoder.") for n, _ in report.missing)
    assert any("pretext head" in why for _, _, why in report.skipped)
    assert "matched" in report.summary()


def test_shape_mismatch_is_reported_not_loaded():
    net = SegmentationNetwork(SMALL, 2)
    source = pretrained_state()
    key = "backbone.encoder.0.conv.unit0.conv.weight"
    source[key] = torch.zeros(3, 3, 3, 3, 3)
    report = transfer_weights(net, source, "encoder")
    assert any(n == key and "shape differs" in why for n, _, why in report.skipped)
    assert not torch.equal(net.state_dict()[key][:3, :3], source[key])


def test_nothing_matching_is_refused():
    with pytest.raises(CheckpointError, match="no pretrained tensor"):
        transfer_weights(SegmentationNetwork(SMALL, 2), {"foo.weight": torch.zeros(1)}, "encoder")
    with pytest.raises(ValueError):
        transfer_weights(SegmentationNetwork(SMALL, 2), pretrained_state(), "decoder")


def test_incompatible_checkpoints_are_refused():
    meta = {"backbone": SMALL.to_json(), "preprocessing": {"modality": "MRI"}}
    check_compatible("m", meta, SMALL.to_json(), {"modality": "MRI"})
    other = BackboneConfig(channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=1).to_json()
    with pytest.raises(CheckpointError, match="backbone differs.*channels"):
        check_compatible("m", meta, other, {"modality": "MRI"})
    with pytest.raises(CheckpointError, match="preprocessing"):
        check_compatible("m", meta, SMALL.to_json(), {"modality": "CT"})
