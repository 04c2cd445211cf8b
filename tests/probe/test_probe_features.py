"""Frozen encoders and pooled features: the encoder-only path equals the backbone's own bottleneck."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vectorpose.models.backbone import BackboneConfig, UNetBackbone
from vectorpose.models.pretext_network import PretextNetwork
from vectorpose.probe.features import bottleneck, load_encoder, pooled_features, random_encoder
from vectorpose.models.files import save_model

SMALL = BackboneConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1)


def test_bottleneck_equals_the_backbones_coarse_features():
    torch.manual_seed(0)
    for config in (SMALL, BackboneConfig(channels=(4, 8, 8, 16), strides=(2, 2, 2), num_res_units=0, norm="batch")):
        net = UNetBackbone(config).eval()
        x = torch.randn(3, 1, 16, 16, 16)
        with torch.no_grad():
            torch.testing.assert_close(bottleneck(net, x), net(x).coarse[0], rtol=0, atol=0)


def test_pooled_features_are_the_spatial_mean_in_eval_mode_without_gradients():
    torch.manual_seed(1)
    net = UNetBackbone(SMALL).train()
    x = torch.randn(5, 1, 16, 16, 16)
    features = pooled_features(net, x, batch_size=2)
    assert features.shape == (5, 16) and features.dtype.name == "float64"
    assert net.training  # mode restored
    net.eval()
    with torch.no_grad():
        expected = net(x).coarse[0].mean(dim=(2, 3, 4)).double().numpy()
    torch.testing.assert_close(torch.from_numpy(features), torch.from_numpy(expected), rtol=1e-6, atol=1e-6)
    # each crop's features do not depend on what else is in its batch
    torch.testing.assert_close(torch.from_numpy(pooled_features(net, x, batch_size=5)), torch.from_numpy(features), rtol=1e-5, atol=1e-6)


def test_random_encoder_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = random_encoder(SMALL, 0), random_encoder(SMALL, 0), random_encoder(SMALL, 1)
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, sc = (e.backbone.state_dict() for e in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())
    assert not a.backbone.training and not any(p.requires_grad for p in a.backbone.parameters())
    assert a.source is None and a.metadata is None


def test_load_encoder_reads_the_saved_backbone(tmp_path):
    from vectorpose.data.preprocessing import PreprocessingConfig
    from vectorpose.methods import get_method
    from vectorpose.training.pretrain import PretrainConfig, model_metadata

    torch.manual_seed(2)
    network = PretextNetwork(SMALL, True, True, True)
    config = PretrainConfig(steps=1, backbone=SMALL)
    save_model(tmp_path, network.state_dict(), model_metadata(config, get_method("vectorpose"), PreprocessingConfig(), 1))
    encoder = load_encoder(tmp_path, "saved")
    assert encoder.name == "saved" and encoder.metadata["step"] == 1 and encoder.source == tmp_path
    saved = network.backbone.state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in encoder.backbone.state_dict().items())
    assert not encoder.backbone.training and not any(p.requires_grad for p in encoder.backbone.parameters())


def test_grid_pooling_is_the_mean_of_each_octant():
    torch.manual_seed(2)
    net = UNetBackbone(SMALL).eval()
    x = torch.randn(3, 1, 16, 16, 16)
    with torch.no_grad():
        b = net(x).coarse[0].numpy()  # (N, C, 4, 4, 4) for this backbone at P = 16
    n, c, s = b.shape[0], b.shape[1], b.shape[2]
    h = s // 2
    # octant means by hand, channel-major: (c, i, j, k)
    expected = np.stack([b[:, :, i * h:(i + 1) * h, j * h:(j + 1) * h, k * h:(k + 1) * h].mean(axis=(2, 3, 4))
                         for i in range(2) for j in range(2) for k in range(2)], axis=2).reshape(n, c * 8)
    np.testing.assert_allclose(pooled_features(net, x, grid=2), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        pooled_features(net, x, grid=0)
