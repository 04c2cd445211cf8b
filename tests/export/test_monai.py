"""Export to MONAI, checked with MONAI itself: a freshly built ``monai.networks.nets.DynUNet(**args)``
loads the exported state dict (``strict=True`` for a fine-tuned run) and computes the logits of the
run's own segmentation network, loaded the way ``predict`` loads it; a pretraining run leaves out
exactly the output layer. Also the command line of ``--backbone dynunet`` and ``export --to monai``."""

from __future__ import annotations

import json
import re

import pytest
import torch
from monai.networks.nets import DynUNet
from safetensors.torch import load_file
from torch import nn

from cli_helpers import assert_one_line_error, run
from conftest import ROOT
from vectorpose.inference.predictor import load_segmenter
from vectorpose.training.pretrain import load_pretext_network

FAST = ["--steps", "2", "--batch", "2", "--patch", "16", "--quiet"]
OUTPUT_BLOCK = ["output_block.conv.conv.bias", "output_block.conv.conv.weight"]


@pytest.fixture(scope="module")
def dynunet_runs(synthetic_dataset, tmp_path_factory):
    """A two-step ``--backbone dynunet`` pretraining run, a two-step fine-tuning from it, and both exports."""
    root = tmp_path_factory.mktemp("dynunet")
    cache = root / "cache"
    commands = [
        ["pretrain", synthetic_dataset, "--out", root / "pre", "--cache", cache, "--backbone", "dynunet", "--channels", "4,8,16",
         "--log-every", "1", *FAST],
        ["finetune", synthetic_dataset, "--out", root / "ft", "--init", root / "pre", "--transfer", "all", "--val-every", "1",
         "--cache", cache, *FAST],
        ["export", root / "pre", root / "pre-monai", "--to", "monai"],
        ["export", root / "ft", root / "ft-monai.safetensors", "--to", "monai"],
    ]
    from vectorpose.cli import main

    for command in commands:
        try:
            main([str(a) for a in command])
        except SystemExit as exc:
            assert not exc.code, command
    return root


def read_spec(path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_finetuned_export_computes_the_runs_logits(dynunet_runs):
    spec = read_spec(dynunet_runs / "ft-monai.json")
    assert spec["class"] == "monai.networks.nets.DynUNet" and "missing_weights" not in spec
    assert spec["args"]["out_channels"] == 3 and spec["args"]["filters"] == [4, 8, 16] and spec["args"]["strides"] == [1, 2, 2]
    meta = json.loads((dynunet_runs / "ft" / "model.json").read_text(encoding="utf-8"))
    assert spec["labels"] == meta["labels"] and spec["preprocessing"] == meta["preprocessing"]
    torch.manual_seed(5)  # the exported values, not this initialisation, must decide the output
    monai = DynUNet(**spec["args"])
    monai.load_state_dict(load_file(str(dynunet_runs / "ft-monai.safetensors")), strict=True)
    own = load_segmenter(dynunet_runs / "ft").network
    x = torch.randn(2, 1, 16, 24, 8)
    with torch.no_grad():
        torch.testing.assert_close(monai.eval()(x), own(x), rtol=0, atol=0)


def test_pretraining_export_leaves_out_the_output_layer(dynunet_runs):
    spec = read_spec(dynunet_runs / "pre-monai.json")
    assert spec["missing_args"] == ["out_channels"] and "out_channels" not in spec["args"]
    assert spec["missing_weights"] == OUTPUT_BLOCK and spec["source"]["task"] == "pretext"
    monai = DynUNet(**spec["args"], out_channels=3)
    missing, unexpected = monai.load_state_dict(load_file(str(dynunet_runs / "pre-monai.safetensors")), strict=False)
    assert sorted(missing) == OUTPUT_BLOCK and unexpected == []
    # without its output layer, MONAI's forward gives the pretrained backbone's decoded features
    monai.output_block = nn.Identity()
    network, _ = load_pretext_network(dynunet_runs / "pre")
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(monai.eval()(x), network.backbone.eval()(x).decoded, rtol=0, atol=0)


def test_readme_lines_load_the_export(dynunet_runs):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Use the weights in MONAI"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) == 4
    namespace: dict = {}
    exec(code.replace("runs/dyn-ft10-monai", str(dynunet_runs / "ft-monai")), namespace)
    assert isinstance(namespace["net"], DynUNet) and namespace["net"].out_channels == 3


def test_finetuning_transfers_the_dynunet(dynunet_runs):
    report = json.loads((dynunet_runs / "ft" / "transfer.json").read_text(encoding="utf-8"))
    matched = {name for name, _ in report["matched"]}
    assert any(n.startswith("backbone.net.upsamples.") for n in matched) and any(n.startswith("backbone.net.input_block.") for n in matched)
    assert all(n.startswith("head.") for n, _ in report["missing"])


def test_export_refuses_existing_outputs(dynunet_runs, capsys):
    before = {p: p.read_bytes() for p in (dynunet_runs / "ft-monai.safetensors", dynunet_runs / "ft-monai.json")}
    code, _, err = run(["export", dynunet_runs / "ft", dynunet_runs / "ft-monai", "--to", "monai"], capsys)
    assert_one_line_error(code, err, "ft-monai.safetensors", "already exists", "--overwrite")
    assert all(p.read_bytes() == content for p, content in before.items())
    code, out, err = run(["export", dynunet_runs / "ft", dynunet_runs / "ft-monai", "--to", "monai", "--overwrite"], capsys)
    assert code == 0 and "ft-monai.json" in out, err


def test_export_of_a_unet_run_or_no_run_is_refused(synthetic_dataset, tmp_path, capsys):
    code, _, err = run(["pretrain", synthetic_dataset, "--out", tmp_path / "unet", "--cache", tmp_path / "cache", "--channels", "4,8,16",
                        *FAST], capsys)
    assert code == 0, err
    code, _, err = run(["export", tmp_path / "unet", tmp_path / "out", "--to", "monai"], capsys)
    assert_one_line_error(code, err, str(tmp_path / "unet"), "export to MONAI needs", "--backbone dynunet")
    code, _, err = run(["export", tmp_path / "none", tmp_path / "out", "--to", "monai"], capsys)
    assert_one_line_error(code, err, "model file not found")
    assert list(tmp_path.glob("out*")) == []


def test_patch_too_small_for_dynunet_is_a_usage_error(synthetic_dataset, tmp_path, capsys):
    code, _, err = run(["pretrain", synthetic_dataset, "--out", tmp_path / "run", "--backbone", "dynunet", *FAST, "--patch", "12"], capsys)
    assert code == 2 and "patch 12 allows 1 halving" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_levels_the_patch_leaves_out_are_named(synthetic_dataset, tmp_path, capsys):
    # --method nope fails after the backbone is laid out, so nothing trains; 24 is no multiple of the U-Net's 16
    code, _, err = run(["pretrain", synthetic_dataset, "--out", tmp_path / "run", "--backbone", "dynunet", "--channels", "4,8,16,32",
                        "--method", "nope", *FAST, "--patch", "24"], capsys)
    assert code == 2 and "note: --patch 24 fits 3 dynunet levels; using channels 4,8,16 of 4,8,16,32" in err
    assert "unknown method 'nope'" in err


def test_finetuning_from_scratch_takes_a_dynunet_from_the_config_file(synthetic_dataset, tmp_path, capsys):
    settings = {"finetune": {"backbone": {"kind": "dynunet", "channels": [4, 8, 16], "strides": [1, 2, 2]}}}
    (tmp_path / "dyn.json").write_text(json.dumps(settings), encoding="utf-8")
    code, _, err = run(["finetune", synthetic_dataset, "--config", tmp_path / "dyn.json", "--out", tmp_path / "ft", "--cache",
                        tmp_path / "cache", "--val-every", "1", *FAST], capsys)
    assert code == 0, err
    code, _, err = run(["export", tmp_path / "ft", tmp_path / "ft-monai", "--to", "monai"], capsys)
    assert code == 0, err
    assert read_spec(tmp_path / "ft-monai.json")["args"]["filters"] == [4, 8, 16]
