"""Atomic writes under disk faults: a clear error naming the file, the old content kept, no debris."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from disk_faults import fill, read_only, small_disk

from vectorpose.data.io import ImageGeometry, load_nifti, save_label_map
from vectorpose.errors import OutputError
from vectorpose.data.preprocessing import PreprocessingConfig
from vectorpose.models.backbone import BackboneConfig
from vectorpose.models.files import load_model, save_model
from vectorpose.training.resume import load_resume_state, save_resume_state
from vectorpose.utils.files import atomic_write, remove_stale_temporaries, write_json

GEOMETRY = ImageGeometry(affine=tuple(tuple(float(v) for v in r) for r in np.eye(4)), shape=(8, 8, 8), axcodes=("R", "A", "S"),
                         canonical_affine=tuple(tuple(float(v) for v in r) for r in np.eye(4)), canonical_shape=(8, 8, 8),
                         spacing=(1.0, 1.0, 1.0))
META = {"task": "pretext", "method": "vectorpose", "backbone": BackboneConfig().to_json(), "heads": {}, "patch_size": 16,
        "preprocessing": PreprocessingConfig().to_json(), "step": 1}


def weights(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((64, 64), value)}


# name -> (write version k into folder, read back the version held in folder)
WRITERS = {
    "json": (lambda d, k: write_json(d / "a.json", {"version": k}), lambda d: __import__("json").loads((d / "a.json").read_text(encoding="utf-8"))["version"]),
    "safetensors": (lambda d, k: save_model(d, weights(k), {**META, "step": k}), lambda d: int(load_model(d)[0]["w"][0, 0])),
    "resume state": (lambda d, k: save_resume_state(d / "resume.pt", {"step": k, "w": weights(k)["w"]}),
                     lambda d: load_resume_state(d / "resume.pt")["step"]),
    "label map": (lambda d, k: save_label_map(d / "a.nii.gz", np.full((8, 8, 8), k, np.uint8), GEOMETRY),
                  lambda d: int(load_nifti(d / "a.nii.gz")[0][0, 0, 0])),
}


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".")]


@pytest.mark.parametrize("writer", list(WRITERS))
def test_unwritable_folder_keeps_the_previous_file(writer, tmp_path):
    write, read = WRITERS[writer]
    folder = tmp_path / "run"
    folder.mkdir()
    write(folder, 1)
    with read_only(folder) as reason:
        with pytest.raises(OutputError) as info:
            write(folder, 2)
    assert str(folder) in str(info.value) and reason in str(info.value)
    assert read(folder) == 1
    assert leftovers(folder) == []


@pytest.mark.parametrize("writer", list(WRITERS))
def test_full_disk_keeps_the_previous_file(writer, tmp_path):
    write, read = WRITERS[writer]
    with small_disk(tmp_path / "disk", 512) as folder:
        write(folder, 1)
        fill(folder)
        with pytest.raises(OutputError) as info:
            write(folder, 2)
        assert str(folder) in str(info.value) and "no space left on device" in str(info.value).lower()
        assert read(folder) == 1
        assert leftovers(folder) == []


def test_failed_write_callback_leaves_nothing(tmp_path):
    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(OutputError, match=r"a\.txt: cannot write \(No space left on device\)"):
        atomic_write(tmp_path / "a.txt", half_then_fail)
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "old" and leftovers(tmp_path) == []


def test_sigkill_mid_write_leaves_old_file_and_a_temporary_that_is_cleared(tmp_path):
    """A process killed while writing leaves the old file whole; its temporary is removed later."""
    target = tmp_path / "state.bin"
    target.write_bytes(b"old")
    script = (f"import time; from pathlib import Path; from vectorpose.utils.files import atomic_write\n"
              f"def slow(tmp):\n    tmp.write_bytes(b'new-but-unfinished')\n    print('writing', flush=True)\n    time.sleep(60)\n"
              f"atomic_write(Path({str(target)!r}), slow)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert target.read_bytes() == b"old"
    stale = leftovers(tmp_path)
    assert len(stale) == 1 and stale[0].name.startswith(".state.bin.") and stale[0].suffix == ".tmp"
    assert remove_stale_temporaries(tmp_path) == stale
    assert leftovers(tmp_path) == [] and target.read_bytes() == b"old"


@pytest.fixture
def umask():
    """Set the process umask for a test, and restore it."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_file_mode_follows_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    path = write_json(tmp_path / "a.json", {})
    assert stat.S_IMODE(path.stat().st_mode) == mode
    plain = tmp_path / "plain"  # what open() gives, for comparison
    plain.write_text("")
    assert stat.S_IMODE(plain.stat().st_mode) == mode


@pytest.mark.parametrize("writer", WRITERS)
def test_replaced_file_keeps_its_mode(tmp_path, umask, writer):
    write, read = WRITERS[writer]
    write(tmp_path, 1)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    for p in written:
        p.chmod(0o640)
    write(tmp_path, 2)
    assert read(tmp_path) == 2
    assert {stat.S_IMODE(p.stat().st_mode) for p in written} == {0o640}


@pytest.mark.parametrize("age_s, older_than_s, removed", [(0, 0, True), (10, 5, True), (1, 5, False), (100, 0, True)])
def test_remove_stale_temporaries_by_age(tmp_path, age_s, older_than_s, removed):
    tmp = tmp_path / "sub" / ".state.bin.abc.tmp"
    tmp.parent.mkdir()
    tmp.write_bytes(b"x")
    kept = tmp_path / "state.tmp"  # not hidden: not one of atomic_write's
    kept.write_bytes(b"y")
    then = time.time() - age_s
    os.utime(tmp, (then, then))
    assert remove_stale_temporaries(tmp_path, older_than_s) == ([tmp] if removed else [])
    assert tmp.exists() != removed and kept.exists()


def test_remove_stale_temporaries_rejects_negative_age(tmp_path):
    with pytest.raises(ValueError, match="older_than_s"):
        remove_stale_temporaries(tmp_path, -1)


def test_label_map_round_trip_uncompressed_name(tmp_path):
    path = save_label_map(tmp_path / "b.nii", np.ones((8, 8, 8), np.uint8), GEOMETRY)
    assert nib.load(str(path)).get_fdata().sum() == 512 and path.read_bytes()[:4] != b"\x1f\x8b\x08\x00"
