"""A checkpoint that cannot be written (read-only folder, full disk) stops the run with one clear line,
leaves the previous checkpoint usable, and --resume then ends bit for bit where an unfaulted run ends."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run
from disk_faults import fill, read_only, small_disk
from safetensors.torch import load_file

from vectorpose.training import finetune as finetune_module, pretrain as pretrain_module
from vectorpose.models.files import load_model
from vectorpose.training.resume import load_resume_state

STEPS = 8
ARGS = {
    "pretrain": ["--checkpoint-every", "2", "--log-every", "1"],
    "finetune": ["--labeled", "2", "--val-every", "2"],
}
MODULES = {"pretrain": pretrain_module, "finetune": finetune_module}
FINAL = {"pretrain": "model.safetensors", "finetune": "last.safetensors"}


def command(name: str, data: Path, out: Path, cache: Path, *extra: str) -> list:
    return [name, data, "--out", out, "--cache", cache, "--steps", str(STEPS), "--batch", "2", "--patch", "16", "--channels", "4,8,16",
            "--quiet", *ARGS[name], *extra]


def fault_at_step(monkeypatch, module, step: int, fault) -> ExitStack:
    """Enter ``fault`` (a context manager) just before the run saves the checkpoint of ``step``."""
    stack = ExitStack()
    real = module.save_model

    def save_model(directory, state, metadata, name="model"):
        if metadata["step"] == step and not stack._exit_callbacks:
            stack.enter_context(fault)
        return real(directory, state, metadata, name=name)

    monkeypatch.setattr(module, "save_model", save_model)
    return stack


def assert_same_weights(a: Path, b: Path) -> None:
    x, y = load_file(a), load_file(b)
    assert x.keys() == y.keys()
    for key in x:
        assert (x[key] == y[key]).all(), key


@pytest.mark.parametrize("name", ["pretrain", "finetune"])
def test_read_only_run_folder_then_resume_is_bit_exact(name, synthetic_dataset, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    assert run(command(name, synthetic_dataset, tmp_path / "reference", cache), capsys)[0] == 0

    out = tmp_path / "run"
    out.mkdir()
    with fault_at_step(monkeypatch, MODULES[name], 4, read_only(out)):
        code, _, err = run(command(name, synthetic_dataset, out, cache), capsys)
    assert_one_line_error(code, err, str(out), "cannot write", f"the checkpoint of step 2 in {out} is intact", "--resume")
    assert load_resume_state(out / "resume.pt")["step"] == 2
    assert load_model(out / FINAL[name])[1]["step"] == 2
    assert not [p for p in out.rglob("*.tmp")]

    monkeypatch.undo()
    code, _, err = run(command(name, synthetic_dataset, out, cache, "--resume"), capsys)
    assert code == 0, err
    assert_same_weights(tmp_path / "reference" / FINAL[name], out / FINAL[name])


def test_full_disk_while_pretraining(synthetic_dataset, tmp_path, capsys):
    """On a real, filled file system: one line saying the disk is full, and the last checkpoint intact."""
    cache = tmp_path / "cache"
    with small_disk(tmp_path / "disk", 4096) as disk:
        out = disk / "run"
        assert run(command("pretrain", synthetic_dataset, out, cache, "--steps", "2"), capsys)[0] == 0
        fill(disk)
        code, _, err = run(command("pretrain", synthetic_dataset, out, cache, "--resume", "--steps", "4"), capsys)
        assert_one_line_error(code, err, str(out), "cannot write", "o space left on device")
        assert load_resume_state(out / "resume.pt")["step"] == 2 and load_model(out)[1]["step"] == 2
        (disk / "filler").unlink()
        code, _, err = run(command("pretrain", synthetic_dataset, out, cache, "--resume", "--steps", "4"), capsys)
        assert code == 0, err
        assert load_model(out)[1]["step"] == 4
