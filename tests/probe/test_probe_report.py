"""The probe's JSON, markdown table and PNG, and the refusal of existing outputs."""

from __future__ import annotations

import json

import pytest

from vectorpose.errors import VectorPoseError
from vectorpose.probe.fit import ClassifierScore, RegressionScore
from vectorpose.probe.report import check_outputs, format_table, markdown, output_paths, write_report
from vectorpose.probe.runner import EncoderScores, ProbeConfig, ProbeResult


def _row(name: str, role: str, value: float) -> EncoderScores:
    return EncoderScores(name=name, role=role, source=None, method=None if role != "run" else "vectorpose", step=7, patch_size=16,
                         scale_range=(0.5, 1.5), preprocessing={"modality": "MRI"}, features=16,
                         position=RegressionScore(value, (value, value, value), 1.0), scale=RegressionScore(value / 2, (value / 2,), 10.0),
                         orientation=ClassifierScore(0.5, 1 / 48, 0.03, 48), up=ClassifierScore(0.75, 1 / 6, 0.25, 6, converged=False))


@pytest.fixture
def result() -> ProbeResult:
    return ProbeResult(run="runs/a", data="/data", config=ProbeConfig(), fit_cases=("c1", "c2"), evaluation_cases=("c3",),
                       crops={"fit": 16, "evaluation": 8}, encoders=(_row("a", "run", 0.9), _row("random init", "random init", 0.1)),
                       seconds=3.0, versions={"vectorpose": "x"})


def test_markdown_and_terminal_tables(result):
    text = markdown(result)
    assert "| **a** (run) · vectorpose, step 7, P = 16 | 0.900 | 0.450 | 0.500 | 0.750 | 0.900 / 0.900 / 0.900 |" in text
    assert "| random init | 0.100 | 0.050 | 0.500 | 0.750 |" in text
    assert "1/48 = 0.021" in text and "1/6 = 0.167" in text and "0.030 (orientation) and 0.250 (up)" in text
    assert "max_iter" in text  # an unconverged probe is said so
    lines = format_table(result).splitlines()
    assert len(lines) == 4 and lines[1].split()[:2] == ["a", "0.900"]


def test_write_report_writes_three_files_and_refuses_to_replace_them(result, tmp_path):
    out = tmp_path / "probe.json"
    paths = write_report(result, out)
    assert paths == output_paths(out) == (out, tmp_path / "probe.md", tmp_path / "probe.png")
    assert json.loads(out.read_text(encoding="utf-8"))["encoders"][0]["position"]["r2"] == 0.9
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(paths[2]).ndim == 3  # a readable image
    before = out.read_text(encoding="utf-8")
    for existing in paths:
        other = tmp_path / "fresh.json"
        for p in output_paths(other):
            p.unlink(missing_ok=True)
        existing_twin = output_paths(other)[paths.index(existing)]
        existing_twin.write_text("old")
        with pytest.raises(VectorPoseError, match="already exists; pass --overwrite"):
            write_report(result, other)
        assert existing_twin.read_text(encoding="utf-8") == "old"
    write_report(result, out, overwrite=True)
    assert out.read_text(encoding="utf-8") == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_outputs_that_cannot_be_used(tmp_path):
    with pytest.raises(VectorPoseError, match="must not end in .md"):
        check_outputs(tmp_path / "x.md", overwrite=True)
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(VectorPoseError, match="is a folder"):
        check_outputs(tmp_path / "folder.json", overwrite=True)
