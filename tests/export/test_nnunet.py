"""Export to nnU-Net, checked with nnU-Net itself: the network nnU-Net's trainer builds from the plans
loads the exported file through nnU-Net's own ``load_pretrained_weights``, and every tensor it
transfers equals the pretrained one."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from cli_helpers import assert_one_line_error, run
from nnunet_plans import hippocampus_plans, write_plans
from vectorpose.export.nnunet import read_nnunet_weights

pytest.importorskip("nnunetv2")

FAST = ["--steps", "2", "--batch", "2", "--patch", "16", "--log-every", "1", "--quiet"]


@pytest.fixture(scope="module")
def nnunet_run(synthetic_dataset, tmp_path_factory):
    """A two-step pretraining run on the full-width Hippocampus 3d_fullres plan, and its export."""
    root = tmp_path_factory.mktemp("nnunet")
    plans = write_plans(root / "nnUNetPlans.json", hippocampus_plans())
    args = ["pretrain", synthetic_dataset, "--out", root / "run", "--cache", root / "cache", "--backbone", "nnunet", "--plans", plans, *FAST]
    from vectorpose.cli import main

    for command in (args, ["export", root / "run", root / "pretrained.pth", "--to", "nnunet"]):
        try:
            main([str(a) for a in command])
        except SystemExit as exc:
            assert not exc.code
    return root, plans


def nnunet_network(plans, num_classes: int = 3):
    """The network nnU-Net's trainer builds for ``plans`` (3d_fullres, deep supervision on, He init)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(str(plans))
    return nnUNetTrainer.build_network_architecture(manager, manager.get_configuration("3d_fullres"), 1, num_classes,
                                                    enable_deep_supervision=True)


def test_nnunet_loads_every_pretrained_tensor(nnunet_run):
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    root, plans = nnunet_run
    pretrained = {k[len("backbone.net."):]: v for k, v in load_file(str(root / "run" / "model.safetensors")).items()
                  if k.startswith("backbone.net.")}
    torch.manual_seed(1)
    network = nnunet_network(plans)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    load_pretrained_weights(network, str(root / "pretrained.pth"))
    after = network.state_dict()
    # nnU-Net reaches some tensors under several names; the safetensors file keeps the first of each
    first: dict[int, str] = {}
    for key, tensor in network.state_dict(keep_vars=True).items():
        first.setdefault(id(tensor), key)
    stored = {key: first[id(tensor)] for key, tensor in network.state_dict(keep_vars=True).items()}
    transferred = [k for k in after if ".seg_layers." not in k]
    assert len(transferred) > 100 and any(k.startswith("decoder.encoder.") for k in transferred)
    assert {stored[k] for k in transferred} == set(pretrained) - {k for k in pretrained if ".seg_layers." in k}
    for key in transferred:
        assert torch.equal(after[key], pretrained[stored[key]]), key
    changed = [k for k in transferred if not torch.equal(before[k], after[k])]
    assert any("weight" in k for k in changed)  # the weights really came from the file
    for key in after:  # segmentation layers: nnU-Net's own, at its initialisation
        if ".seg_layers." in key:
            assert torch.equal(after[key], before[key]), key
    # the pretrained network was trained: its weights left their initialisation
    meta = json.loads((root / "run" / "model.json").read_text(encoding="utf-8"))
    assert meta["step"] == 2 and meta["backbone"]["kind"] == "nnunet"


def test_export_holds_plain_tensors_only(nnunet_run):
    root, _ = nnunet_run
    raw = torch.load(root / "pretrained.pth", map_location="cpu", weights_only=True)
    assert list(raw) == ["network_weights"]
    weights = read_nnunet_weights(root / "pretrained.pth")
    assert weights and all(type(v) is torch.Tensor for v in weights.values())
    assert not any(".seg_layers." in k for k in weights)


def test_export_refuses_existing_output_and_unet_runs(nnunet_run, synthetic_dataset, tmp_path, capsys):
    root, _ = nnunet_run
    before = (root / "pretrained.pth").read_bytes()
    code, _, err = run(["export", root / "run", root / "pretrained.pth", "--to", "nnunet"], capsys)
    assert_one_line_error(code, err, str(root / "pretrained.pth"), "already exists")
    assert (root / "pretrained.pth").read_bytes() == before
    code, _, err = run(["pretrain", synthetic_dataset, "--out", tmp_path / "unet", "--cache", tmp_path / "cache", "--channels", "4,8,16",
                        *FAST], capsys)
    assert code == 0, err
    code, _, err = run(["export", tmp_path / "unet", tmp_path / "out.pth", "--to", "nnunet"], capsys)
    assert_one_line_error(code, err, str(tmp_path / "unet"), "--backbone nnunet")
    assert not (tmp_path / "out.pth").exists()


def test_finetune_of_an_nnunet_run_is_refused_in_one_line(nnunet_run, synthetic_dataset, tmp_path, capsys):
    root, _ = nnunet_run
    code, _, err = run(["finetune", synthetic_dataset, "--out", tmp_path / "ft", "--init", root / "run", "--steps", "1",
                        "--cache", tmp_path / "cache"], capsys)
    assert_one_line_error(code, err, str(root / "run"), "does not fine-tune", "export")
    assert not (tmp_path / "ft").exists()


def test_resume_rebuilds_the_nnunet_network(nnunet_run, synthetic_dataset, tmp_path, capsys):
    root, plans = nnunet_run
    import shutil

    shutil.copytree(root / "run", tmp_path / "run")
    args = ["pretrain", synthetic_dataset, "--out", tmp_path / "run", "--cache", root / "cache", "--backbone", "nnunet", "--plans", plans,
            *FAST]
    args[args.index("--steps") + 1] = "3"
    code, _, err = run([*args, "--resume"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "model.json").read_text(encoding="utf-8"))["step"] == 3


@pytest.mark.parametrize("args, message", [
    (["--patch", "20"], "not divisible by the nnU-Net network's total stride per axis [8, 8, 8]"),
    (["--configuration", "3d_cascade_fullres"], "no configuration '3d_cascade_fullres'"),
])
def test_bad_nnunet_settings(args, message, nnunet_run, synthetic_dataset, tmp_path, capsys):
    _, plans = nnunet_run
    code, _, err = run(["pretrain", synthetic_dataset, "--out", tmp_path / "run", "--backbone", "nnunet", "--plans", plans, *FAST, *args],
                       capsys)
    assert code in (1, 2) and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
