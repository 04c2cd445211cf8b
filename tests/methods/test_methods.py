"""The registered methods: which terms each trains, and the loss they compute against a direct formula."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vectorpose.losses.vector import vector_loss
from vectorpose.methods import METHODS, PretextMethod, get_method
from vectorpose.models.backbone import BackboneConfig
from vectorpose.pretext.boundary import boundary_target

SMALL = BackboneConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
TERMS = {"vectorpose": {"vp", "rec", "boundary"}, "vp": {"vp"}, "bfr": {"rec", "boundary"}, "genesis": {"rec"}}


def test_registry_holds_the_baselines_and_the_ablations():
    assert set(METHODS) == {"scratch", "genesis", "mae", "vp", "bfr", "vectorpose"}
    assert not get_method("scratch").pretrains
    assert all(get_method(m).pretrains for m in TERMS)


@pytest.mark.parametrize("name", sorted(TERMS))
def test_loss_terms_match_a_direct_computation(name):
    torch.manual_seed(0)
    method = get_method(name)
    network = method.build_network(SMALL)
    batch = {"input": torch.randn(2, 1, 16, 16, 16), "clean": torch.rand(2, 1, 16, 16, 16), "vectors": torch.rand(2, 9, 3)}
    outputs = network(batch["input"])
    terms = method.losses(outputs, batch)
    assert set(terms) - {"total", "vp_r", "vp_theta", "vp_phi"} == TERMS[name]
    expected = torch.zeros(())
    if "vp" in TERMS[name]:
        expected = expected + vector_loss(outputs["vectors"], batch["vectors"])["total"]
    if "rec" in TERMS[name]:
        expected = expected + F.l1_loss(outputs["restored"], batch["clean"])
    if "boundary" in TERMS[name]:
        expected = expected + F.l1_loss(outputs["boundary"], boundary_target(batch["clean"]))
    torch.testing.assert_close(terms["total"], expected)


def test_mae_scores_the_hidden_voxels_only():
    """mae: the restoration head, and the squared error on hidden voxels (a NumPy computation), blind to the visible ones."""
    torch.manual_seed(0)
    method = get_method("mae")
    assert method.masked_input and method.reconstruction_weight == 1.0 and not (method.vector_weight or method.boundary_weight)
    network = method.build_network(SMALL)
    mask = torch.zeros(2, 1, 16, 16, 16, dtype=torch.bool)
    mask[0, :, :8] = True
    mask[1, :, :, 4:12] = True
    batch = {"input": torch.randn(2, 1, 16, 16, 16), "clean": torch.rand(2, 1, 16, 16, 16), "vectors": torch.rand(2, 9, 3), "mask": mask}
    outputs = network(batch["input"])
    assert set(outputs) == {"restored"}
    terms = method.losses(outputs, batch)
    assert set(terms) == {"rec", "total"}
    restored, clean, hidden = outputs["restored"].detach().numpy(), batch["clean"].numpy(), mask.numpy()
    expected = ((restored[hidden] - clean[hidden]).astype(np.float64) ** 2).mean()
    assert terms["rec"].item() == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(terms["total"], terms["rec"])
    # a different restoration of the visible voxels leaves the loss unchanged
    changed = {"restored": torch.where(mask, outputs["restored"], 1.0 - outputs["restored"])}
    torch.testing.assert_close(method.losses(changed, batch)["total"], terms["total"], rtol=0, atol=0)


def test_scratch_has_no_network():
    with pytest.raises(ValueError, match="no pretext network"):
        get_method("scratch").build_network(SMALL)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(vector_weight=-1.0), ">= 0"),
        (dict(), "no loss term"),
        (dict(boundary_weight=1.0), "needs the reconstruction term"),
        (dict(pretrains=False, reconstruction_weight=1.0), "does not pretrain"),
        (dict(vector_weight=1.0, masked_input=True), "masked input needs the reconstruction term"),
        (dict(pretrains=False, masked_input=True), "masks no input"),
    ],
)
def test_method_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PretextMethod("custom", "a test method", **kwargs)


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match="genesis"):
        get_method("simclr")
