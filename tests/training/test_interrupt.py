"""SIGTERM / SIGINT stop a run at a step boundary with its state saved; after those or a SIGKILL,
--resume ends bit for bit where the uninterrupted run ends (CPU)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from vectorpose.cli import main
from vectorpose.training.resume import load_resume_state

STEPS = 40
COMMON = ["--steps", str(STEPS), "--batch", "2", "--patch", "16", "--channels", "4,8,16", "--quiet"]
ARGS = {
    "pretrain": ["--checkpoint-every", "1000", "--log-every", "1"],
    "finetune": ["--labeled", "2", "--val-every", "15"],  # logs every 10 steps
}
FIRST_LOG = {"pretrain": 3, "finetune": 10}


def cli(command: str, data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [command, str(data), "--out", str(out), "--cache", str(cache), *COMMON, *ARGS[command], *extra]


def last_logged_step(out: Path) -> int:
    try:
        lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (OSError, ValueError, KeyError):
        return 0


def stop_midway(command: str, data: Path, out: Path, cache: Path, signum: int, *extra: str) -> tuple[int, str]:
    """Start ``command`` in a child process, send it ``signum`` once it has logged ``FIRST_LOG`` steps;
    its exit code and standard error."""
    proc = subprocess.Popen([sys.executable, "-c", "from vectorpose.cli import main; main()", *cli(command, data, out, cache, *extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while last_logged_step(out) < FIRST_LOG[command] and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_and_resume_is_bit_exact(command, signum, synthetic_dataset, tmp_path):
    cache = tmp_path / "cache"
    reference = tmp_path / "reference"
    main(cli(command, synthetic_dataset, reference, cache))

    out = tmp_path / "stopped"
    code, err = stop_midway(command, synthetic_dataset, out, cache, signum)
    assert code == 128 + signum, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"stopped by {signal.Signals(signum).name}" in lines[0] and "--resume" in lines[0], err
    stopped_at = load_resume_state(out / "resume.pt")["step"]
    assert FIRST_LOG[command] <= stopped_at < STEPS

    main(cli(command, synthetic_dataset, out, cache, "--resume"))
    name = "model.safetensors" if command == "pretrain" else "last.safetensors"
    a, b = load_file(reference / name), load_file(out / name)
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] == b[key]).all(), key


def test_sgd_and_polynomial_decay_resume_bit_exact(synthetic_dataset, tmp_path):
    """The momentum buffers and the schedule's position come back from resume.pt as AdamW's state does."""
    cache, nnunet = tmp_path / "cache", ["--optimizer", "sgd", "--schedule", "poly", "--lr", "0.01"]
    reference = tmp_path / "reference"
    main(cli("finetune", synthetic_dataset, reference, cache, *nnunet))
    out = tmp_path / "stopped"
    code, err = stop_midway("finetune", synthetic_dataset, out, cache, signal.SIGTERM, *nnunet)
    assert code == 128 + signal.SIGTERM, err
    assert load_resume_state(out / "resume.pt")["step"] < STEPS
    main(cli("finetune", synthetic_dataset, out, cache, *nnunet, "--resume"))
    a, b = load_file(reference / "last.safetensors"), load_file(out / "last.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_at_a_random_step_then_resume_is_bit_exact(seed, synthetic_dataset, tmp_path):
    """SIGKILL gives no chance to save: the last checkpoint must be intact and resume from it exactly."""
    cache = tmp_path / "cache"
    every = ["--checkpoint-every", "4", "--log-every", "1"]
    common = ["--steps", str(STEPS), "--batch", "2", "--patch", "16", "--channels", "4,8,16", "--quiet", "--cache", str(cache), *every]
    reference = tmp_path / "reference"
    main(["pretrain", str(synthetic_dataset), "--out", str(reference), *common])

    kill_after = int(np.random.default_rng(seed).integers(5, STEPS - 5))
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", "from vectorpose.cli import main; main()", "pretrain", str(synthetic_dataset),
                             "--out", str(out), *common], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while last_logged_step(out) < kill_after and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    saved = load_resume_state(out / "resume.pt")["step"]
    assert saved % 4 == 0 and 4 <= saved < STEPS
    # what a kill inside atomic_write leaves (tests/utils/test_files.py shows it happen): --resume clears it
    stale = out / ".resume.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")

    main(["pretrain", str(synthetic_dataset), "--out", str(out), "--resume", *common])
    assert not stale.exists()
    a, b = load_file(reference / "model.safetensors"), load_file(out / "model.safetensors")
    for key in a:
        assert (a[key] == b[key]).all(), key
