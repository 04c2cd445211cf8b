"""``vectorpose probe`` end to end on the synthetic dataset, and its one-line errors."""

from __future__ import annotations

import json
import shutil

from cli_helpers import assert_one_line_error, run
from probe_helpers import probe_cache, tiny_run  # noqa: F401 (fixtures)


def test_probe_command_writes_json_markdown_and_png(tiny_run, synthetic_dataset, probe_cache, tmp_path, capsys):
    out = tmp_path / "report" / "probe.json"
    code, stdout, err = run(["probe", tiny_run, synthetic_dataset, "--out", out, "--crops", 2, "--cache", probe_cache,
                             "--device", "cpu", "--quiet"], capsys)
    assert code == 0, err
    payload = json.loads(out.read_text(encoding="utf-8"))
    assert [e["name"] for e in payload["encoders"]] == ["tiny", "random init"]
    assert payload["settings"]["crops_per_case"] == 2
    assert set(payload["split"]["fit"]).isdisjoint(payload["split"]["evaluation"])
    assert "| **tiny** (run)" in out.with_suffix(".md").read_text(encoding="utf-8")
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "random init" in stdout and str(out) in stdout


def test_probe_command_errors_are_one_line(tiny_run, synthetic_dataset, probe_cache, tmp_path, capsys):
    out = tmp_path / "probe.json"
    missing = tmp_path / "no_run"
    code, _, err = run(["probe", missing, synthetic_dataset, "--out", out, "--cache", probe_cache], capsys)
    assert_one_line_error(code, err, str(missing), "not found")
    assert code == 1 and not out.exists()

    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(next((synthetic_dataset / "imagesTr").iterdir()), one)
    code, _, err = run(["probe", tiny_run, one, "--out", out, "--modality", "MRI", "--cache", probe_cache, "--quiet"], capsys)
    assert_one_line_error(code, err, str(one), "at least 2 cases")
    assert code == 1 and not out.exists() and not out.with_suffix(".md").exists()

    out.write_text("earlier results")
    code, _, err = run(["probe", tiny_run, synthetic_dataset, "--out", out, "--cache", probe_cache, "--quiet"], capsys)
    assert_one_line_error(code, err, str(out), "--overwrite")
    assert code == 1 and out.read_text(encoding="utf-8") == "earlier results" and not out.with_suffix(".png").exists()
