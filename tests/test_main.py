"""``python -m vectorpose`` and ``--version``, run as a user runs them: in a fresh interpreter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import vectorpose
from conftest import ROOT


def python_m(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # the package as this test run imports it (installed or from src/), not a copy elsewhere
    env["PYTHONPATH"] = os.pathsep.join([str(Path(vectorpose.__file__).parents[1]), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "vectorpose", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_version_matches_the_package_metadata(tmp_path):
    declared = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.MULTILINE).group(1)
    done = python_m("--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"vectorpose, version {declared}"
    assert vectorpose.__version__ == declared


def test_python_m_runs_the_command_line(tmp_path):
    done = python_m("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for command in ("pretrain", "finetune", "evaluate", "predict", "benchmark"):
        assert re.search(rf"^\s+{command}\s", done.stdout, re.MULTILINE), done.stdout


def test_python_m_errors_are_one_line(tmp_path):
    """Errors go through the same wrapper as the ``vectorpose`` script: exit 1, one line, no traceback."""
    done = python_m("pretrain", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: {tmp_path / 'nowhere'}: no such file or folder"
    assert not (tmp_path / "run").exists()
