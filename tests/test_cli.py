"""The command line end to end: real pretraining runs, reload checks, --skip-bad and --debug, and crafted pickles.

Every kind of bad input through every command is in ``test_bad_input.py``.
"""

from __future__ import annotations

import gzip
import shutil
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cli_helpers import assert_one_line_error, run
from vectorpose.cli import main
from vectorpose.training.resume import load_resume_state
from vectorpose.training.pretrain import load_pretext_network

FAST = ["--steps", "3", "--batch", "2", "--patch", "16", "--channels", "4,8,16", "--log-every", "1", "--quiet"]


def assert_reload_gives_same_outputs(run_dir: Path, patch: int = 16) -> None:
    """The safetensors model, rebuilt from its metadata alone, equals the weights in the resume state."""
    network, meta = load_pretext_network(run_dir)
    reference, _ = load_pretext_network(run_dir)
    reference.load_state_dict(load_resume_state(run_dir / "resume.pt")["network"])
    x = torch.randn(2, 1, patch, patch, patch, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = network(x), reference(x)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert meta["step"] == 3


def test_pretrain_on_synthetic_data(synthetic_dataset, cache_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run(["pretrain", synthetic_dataset, "--out", out, "--cache", cache_dir, *FAST], capsys)
    assert code == 0, err
    assert f"pretrained model written to {out / 'model.safetensors'}" in stdout
    assert_reload_gives_same_outputs(out)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["modality"] == "MRI" and len(config["cases"]) == 6 - 2  # ceil(0.2 * 6) test cases held out
    # a second run into the same folder is refused and leaves it untouched
    before = (out / "model.safetensors").read_bytes()
    code, _, err = run(["pretrain", synthetic_dataset, "--out", out, "--cache", cache_dir, *FAST], capsys)
    assert_one_line_error(code, err, str(out), "--resume", "--overwrite")
    assert (out / "model.safetensors").read_bytes() == before


def test_mae_pretrain_then_finetune_from_it(synthetic_dataset, cache_dir, tmp_path, capsys):
    """pretrain --method mae, then finetune --init: the encoder starts from (and, frozen, ends at) the mae weights."""
    pre, ft = tmp_path / "mae", tmp_path / "ft"
    code, _, err = run(["pretrain", synthetic_dataset, "--method", "mae", "--mask-block", "8", "--mask-ratio", "0.75", "--out", pre,
                        "--cache", cache_dir, *FAST], capsys)
    assert code == 0, err
    assert_reload_gives_same_outputs(pre)
    saved = json.loads((pre / "config.json").read_text(encoding="utf-8"))["pretrain"]
    assert saved["method"] == "mae" and saved["masking"] == {"block_size": 8, "ratio": 0.75}
    rows = [json.loads(line) for line in (pre / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(set(r) >= {"rec", "total"} and "vp" not in r and np.isfinite(r["rec"]) for r in rows)
    code, _, err = run(["finetune", synthetic_dataset, "--init", pre, "--out", ft, "--labeled", "2", "--steps", "3", "--batch", "2",
                        "--patch", "16", "--freeze-steps", "3", "--val-every", "3", "--cache", cache_dir, "--quiet"], capsys)
    assert code == 0, err
    matched = [name for name, _ in json.loads((ft / "transfer.json").read_text(encoding="utf-8"))["matched"]]
    assert any(name.startswith("backbone.encoder.") for name in matched)
    pretrained, finetuned = load_file(pre / "model.safetensors"), load_file(ft / "model.safetensors")
    for name in matched:
        assert torch.equal(pretrained[name], finetuned[name]), name


def test_pretrain_on_real_hippocampus(hippocampus, cache_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run(["pretrain", hippocampus, "--out", out, "--cache", cache_dir, *FAST], capsys)
    assert code == 0, err
    assert_reload_gives_same_outputs(out)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["modality"] == "MRI" and len(config["cases"]) == 208 - 42  # ceil(0.2 * 208) test cases held out
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(np.isfinite(r["total"]) for r in rows)


def test_resume_through_cli(synthetic_dataset, cache_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["pretrain", synthetic_dataset, "--out", out, "--cache", cache_dir, *FAST]
    assert run(args, capsys)[0] == 0
    code, _, err = run([*args, "--resume", "--steps", "5"], capsys)
    assert code == 0, err
    assert load_resume_state(out / "resume.pt")["step"] == 5


def write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return path


def good() -> np.ndarray:
    return np.random.default_rng(0).random((20, 20, 20)).astype(np.float32)


def unreadable(root: Path) -> tuple[Path, Path]:
    bad = root / "scans" / "broken.nii.gz"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(gzip.compress(b"this is not a nifti header" * 10))
    write(root / "scans" / "fine.nii.gz", good())
    return root / "scans", bad


def test_skip_bad_leaves_out_broken_files(tmp_path, cache_dir, capsys):
    data, bad = unreadable(tmp_path)
    code, stdout, err = run(["pretrain", data, "--out", tmp_path / "run", "--cache", cache_dir, "--modality", "MRI", "--skip-bad", *FAST], capsys)
    assert code == 0, err
    assert f"skipped: {bad.resolve()}" in stdout
    assert json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))["cases"] == ["fine"]


def test_debug_shows_traceback(tmp_path, cache_dir, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run(["--debug", "pretrain", tmp_path / "empty", "--out", tmp_path / "run", "--cache", cache_dir, *FAST], capsys)
    assert code == 1 and "Traceback" in err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--patch", "18"], "multiple of"),
        (["--method", "simclr"], "unknown method"),
        (["--channels", "a,b"], "comma-separated integers"),
        (["--scale-range", "1.5"], "2 comma-separated"),
        (["--method", "mae", "--mask-block", "5"], "must divide the patch size 16"),
        (["--method", "mae", "--mask-ratio", "1"], "mask ratio must lie in (0, 1)"),
    ],
)
def test_bad_options_are_usage_errors(args, message, synthetic_dataset, tmp_path, capsys):
    code, _, err = run(["pretrain", synthetic_dataset, "--out", tmp_path / "run", *FAST, *args], capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_modality_is_required_for_plain_folders(tmp_path, cache_dir, capsys):
    write(tmp_path / "scans" / "a.nii.gz", good())
    code, _, err = run(["pretrain", tmp_path / "scans", "--out", tmp_path / "run", "--cache", cache_dir, *FAST], capsys)
    assert_one_line_error(code, err, "--modality")


def test_synth_command(tmp_path, capsys):
    code, stdout, _ = run(["synth", tmp_path / "d", "--cases", "3"], capsys)
    assert code == 0 and len(list((tmp_path / "d" / "imagesTr").glob("*.nii.gz"))) == 3
    code, _, err = run(["synth", tmp_path / "d", "--cases", "3"], capsys)
    assert_one_line_error(code, err, str(tmp_path / "d"), "--overwrite")


class Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def trained_runs(synthetic_dataset, tmp_path_factory):
    """A tiny pretraining run and a tiny fine-tuning run, made through the CLI."""
    root = tmp_path_factory.mktemp("runs")
    cache = root / "cache"
    for args in (["pretrain", synthetic_dataset, "--out", root / "pre", "--steps", "2", "--batch", "2", "--patch", "16",
                  "--channels", "4,8,16", "--cache", cache, "--quiet"],
                 ["finetune", synthetic_dataset, "--out", root / "seg", "--labeled", "2", "--steps", "2", "--batch", "1",
                  "--patch", "16", "--channels", "4,8,16", "--val-every", "2", "--cache", cache, "--quiet"]):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            assert not exc.code, args
    return root / "pre", root / "seg", cache


@pytest.mark.parametrize("command", ["finetune --init", "evaluate", "predict", "benchmark --pretrained", "pretrain --resume",
                                     "finetune --resume"])
def test_pickle_payload_never_runs(command, trained_runs, synthetic_dataset, tmp_path, capsys):
    """Every place that accepts a model file (or, with --resume, resume state) refuses a crafted pickle without running it."""
    pre, seg, cache = trained_runs
    resuming = command.endswith("--resume")
    source = {"finetune --init": pre, "benchmark --pretrained": pre, "pretrain --resume": pre, "evaluate": seg, "predict": seg,
              "finetune --resume": seg}[command]
    evil = tmp_path / "evil"
    shutil.copytree(source, evil)
    marker = tmp_path / "pwned"
    torch.save({"payload": Payload(marker)}, evil / ("resume.pt" if resuming else "model.safetensors"))
    image = next((synthetic_dataset / "imagesTr").iterdir())
    args = {
        "finetune --init": ["finetune", synthetic_dataset, "--out", tmp_path / "ft", "--init", evil, "--labeled", "2", "--steps", "1",
                            "--patch", "16", "--cache", cache, "--quiet"],
        "evaluate": ["evaluate", evil, synthetic_dataset, "--cache", cache],
        "predict": ["predict", evil, image, tmp_path / "pred"],
        "benchmark --pretrained": ["benchmark", synthetic_dataset, "--out", tmp_path / "bench", "--methods", "scratch,vectorpose", "--fractions", "1",
                                   "--pretrained", f"vectorpose={evil}", "--cache", cache, "--quiet"],
        "pretrain --resume": ["pretrain", synthetic_dataset, "--out", evil, "--resume", "--steps", "3", "--batch", "2", "--patch", "16",
                              "--channels", "4,8,16", "--cache", cache, "--quiet"],
        "finetune --resume": ["finetune", synthetic_dataset, "--out", evil, "--resume", "--labeled", "2", "--steps", "3", "--batch", "1",
                              "--patch", "16", "--channels", "4,8,16", "--val-every", "2", "--cache", cache, "--quiet"],
    }[command]
    code, _, err = run(args, capsys)
    assert_one_line_error(code, err, str(evil))
    assert not marker.exists()
    assert not (tmp_path / "pred").exists() and not (tmp_path / "ft").exists()


def test_pretrain_speed_options_run_on_the_cpu(synthetic_dataset, cache_dir, tmp_path, capsys):
    """bf16 autocast and channels-last are for CUDA but must not break a CPU run; weights stay float32."""
    out = tmp_path / "run"
    code, _, err = run(["pretrain", synthetic_dataset, "--out", out, "--cache", cache_dir, *FAST, "--amp", "bf16", "--channels-last",
                       "--boundary-in", "device"], capsys)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text(encoding="utf-8"))["speed"] == {"amp": "bf16", "channels_last": True, "compile": False, "boundary_in": "device"}
    network, _ = load_pretext_network(out)
    assert all(p.dtype == torch.float32 for p in network.parameters())


def _conv_output_sizes(network: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    """Spatial sizes of every 3D convolution's output, in the order the forward pass runs them."""
    sizes = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[2:])))
             for m in network.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    with torch.no_grad():
        network(x)
    for h in hooks:
        h.remove()
    return sizes


@pytest.mark.parametrize("backbone,down,up", [("unet", 0, 1), ("dynunet", 2, 3)])
def test_finetune_backbone_choice(backbone, down, up, synthetic_dataset, cache_dir, tmp_path, capsys):
    """Convolutions with a full-resolution output, before the first halving (``down``) and at the end before the 1x1x1
    head (``up``, the up-sampling that lands there included): nnU-Net's plain U-Net (dynunet) has two on the way down and
    an up-sampling and two on the way up; the default U-Net only its last up-sampling."""
    from vectorpose.inference.predictor import load_segmenter

    out = tmp_path / backbone
    code, _, err = run(["finetune", synthetic_dataset, "--out", out, "--labeled", "2", "--steps", "2", "--batch", "1", "--patch", "16",
                        "--backbone", backbone, "--channels", "4,8,16", "--val-every", "2", "--no-deep-supervision", "--cache", cache_dir,
                        "--quiet"], capsys)
    assert code == 0, err
    saved = json.loads((out / "model.json").read_text(encoding="utf-8"))["backbone"]
    assert saved["channels"] == [4, 8, 16]
    assert saved["strides"] == ([1, 2, 2] if backbone == "dynunet" else [2, 2])
    sizes = _conv_output_sizes(load_segmenter(out).network, torch.zeros(1, 1, 16, 16, 16))
    assert sizes[-1] == (16, 16, 16)  # the head
    leading = next(i for i, s in enumerate(sizes) if s != (16, 16, 16))
    trailing = next(i for i, s in enumerate(reversed(sizes[:-1])) if s != (16, 16, 16))
    assert (leading, trailing) == (down, up)


def test_finetune_dynunet_needs_three_levels(synthetic_dataset, tmp_path, capsys):
    code, _, err = run(["finetune", synthetic_dataset, "--out", tmp_path / "run", "--backbone", "dynunet", "--channels", "4,8"], capsys)
    assert code == 2 and "at least 3 levels" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, expected", [
    (["b", "d", "--shard", "1/2", "--quiet"], ["b", "d", "--quiet"]),
    (["b", "--shard=0/3", "d"], ["b", "d"]),
    (["b", "--shards", "x"], ["b", "--shards", "x"]),
    (["b"], ["b"]),
])
def test_without_option(args, expected):
    from vectorpose.cli import without_option

    assert without_option(args, "--shard") == expected
