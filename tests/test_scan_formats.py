"""NRRD, MetaImage and DICOM scans through every command: real data end to end, and bad files ending
in the same one-line errors as bad NIfTI files (exit 1, the file named, no traceback, nothing written)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import assert_one_line_error, run
from conftest import SHARED_DATA
from scan_formats import convert_nifti, write_dicom_series, write_scan
from test_bad_input import COMMANDS, LABELS, TINY_NET, command_line, label_map, scan, segmentation_model  # noqa: F401 (fixture)
from vectorpose.data.io import load_image

DICOM = SHARED_DATA / "dicom_hippocampus_crops"
# image and label formats of the real cases, in turn
FORMATS = [(".nrrd", ".mha"), (".mha", ".nrrd"), (".mhd", ".nhdr")]
# the label map predict writes for each image format
PREDICTED = {".nrrd": ".nrrd", ".mha": ".mha", ".mhd": ".mha"}


def real_cases(hippocampus: Path) -> list[str]:
    return sorted(p.name[: -len(".nii.gz")] for p in (hippocampus / "imagesTr").glob("*.nii.gz"))[:7]


def real_dataset(hippocampus: Path, root: Path) -> Path:
    """Seven real labelled cases as an MSD folder, images and labels in NRRD and MetaImage, mixed."""
    training = []
    for i, case in enumerate(real_cases(hippocampus)):
        image_suffix, label_suffix = FORMATS[i % 3]
        image = convert_nifti(hippocampus / "imagesTr" / f"{case}.nii.gz", root / "imagesTr" / f"{case}{image_suffix}")
        label = convert_nifti(hippocampus / "labelsTr" / f"{case}.nii.gz", root / "labelsTr" / f"{case}{label_suffix}")
        training.append({"image": str(image.relative_to(root)), "label": str(label.relative_to(root))})
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "MRI"}, "labels": LABELS, "training": training}))
    return root


@pytest.mark.skipif(not DICOM.is_dir(), reason="DICOM data absent")
def test_pretrain_on_real_dicom_series(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run(["pretrain", DICOM, "--modality", "MRI", "--out", out, "--cache", tmp_path / "cache", "--steps", "2",
                             "--batch", "2", "--patch", "16", *TINY_NET], capsys)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert sorted(config["cases"]) == ["11_HCropVolume", "13_HCropVolume", "14_HCropVolume"]
    assert (out / "model.safetensors").is_file()


def test_finetune_evaluate_predict_on_real_nrrd_and_metaimage(hippocampus, tmp_path, capsys):
    import SimpleITK as sitk

    data = real_dataset(hippocampus, tmp_path / "data")
    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    code, _, err = run(["finetune", data, "--out", run_dir, "--cache", cache, "--steps", "2", "--batch", "2", "--patch", "16",
                        "--val-every", "2", *TINY_NET], capsys)
    assert code == 0, err
    split = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))
    assert len(split["test"]) == 2
    code, stdout, err = run(["evaluate", run_dir, data, "--cache", cache, "--out", tmp_path / "metrics.json"], capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert sorted(row["case_id"] for row in metrics["cases"]) == sorted(split["test"])

    # predict: one output per scan, in the input's own format and on its own grid
    code, stdout, err = run(["predict", run_dir, data / "imagesTr", tmp_path / "pred"], capsys)
    assert code == 0, err
    cases = real_cases(hippocampus)
    sources = [data / "imagesTr" / f"{case}{FORMATS[i % 3][0]}" for i, case in enumerate(cases)]
    outputs = [tmp_path / "pred" / f"{case}{PREDICTED[FORMATS[i % 3][0]]}" for i, case in enumerate(cases)]
    assert sorted((tmp_path / "pred").iterdir()) == sorted(outputs)
    for source, out in zip(sources, outputs):
        labels, ref = sitk.ReadImage(str(out)), sitk.ReadImage(str(source))
        assert labels.GetPixelID() == sitk.sitkUInt8 and labels.GetSize() == ref.GetSize()
        assert labels.GetOrigin() == ref.GetOrigin() and labels.GetSpacing() == ref.GetSpacing()
        assert labels.GetDirection() == ref.GetDirection()
        assert set(np.unique(sitk.GetArrayFromImage(labels))) <= {0, 1, 2}

    # an OUTPUT file name chooses the format: a NIfTI label map of an NRRD scan lands on the same voxels
    nrrd = sources[0]
    code, _, err = run(["predict", run_dir, nrrd, tmp_path / "one.nii.gz"], capsys)
    assert code == 0, err
    as_nifti, geometry = load_image(tmp_path / "one.nii.gz")
    as_nrrd, nrrd_geometry = load_image(outputs[0])
    np.testing.assert_array_equal(as_nifti, as_nrrd)
    assert geometry.shape == nrrd_geometry.shape and geometry.axcodes == nrrd_geometry.axcodes
    np.testing.assert_allclose(geometry.affine, nrrd_geometry.affine, atol=1e-6)


# --- bad files ---------------------------------------------------------------------------------


def itk_dataset(root: Path, cases: int = 7) -> Path:
    """Like test_bad_input's labelled dataset, with NRRD images and MetaImage labels."""
    training = []
    for i in range(cases):
        write_scan(root / "imagesTr" / f"case_{i:03d}.nrrd", scan(i), np.eye(4))
        write_scan(root / "labelsTr" / f"case_{i:03d}.mha", label_map(), np.eye(4))
        training.append({"image": f"./imagesTr/case_{i:03d}.nrrd", "label": f"./labelsTr/case_{i:03d}.mha"})
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "MRI"}, "labels": LABELS, "training": training}))
    return root


def damaged(file: str, damage: Callable[[Path], None]) -> Callable[[Path], tuple[Path, Path]]:
    def make(root: Path) -> tuple[Path, Path]:
        data = itk_dataset(root / "data")
        damage(data / file)
        return data, data / file

    return make


def garbage(path: Path) -> None:
    path.write_bytes(b"this is not an image" * 40)


def truncated(path: Path) -> None:
    write_scan(path, scan(3), np.eye(4), compress=False)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flat(path: Path) -> None:
    write_scan(path, scan(3)[:, :, :1], np.eye(4))
    import SimpleITK as sitk

    sitk.WriteImage(sitk.ReadImage(str(path))[:, :, 0], str(path))


def nan_voxel(path: Path) -> None:
    array = scan(3)
    array[5, 6, 7] = np.nan
    write_scan(path, array, np.eye(4))


def label_shape(path: Path) -> None:
    write_scan(path, label_map(26), np.eye(4))


def label_spacing(path: Path) -> None:
    write_scan(path, label_map(), np.diag([2.0, 2.0, 2.0, 1.0]))


def two_series(root: Path) -> tuple[Path, Path]:
    """A plain folder whose one DICOM folder holds two series: pretraining must refuse it."""
    data = root / "data"
    for i in range(2):
        write_scan(data / f"scan_{i}.nrrd", scan(i), np.eye(4))
    folder = data / "dicom"
    write_dicom_series(folder, scan(5).astype(np.int16), uid="1.2.826.0.1.3680043.2.1125.21")
    for p in folder.iterdir():
        p.rename(folder / f"a_{p.name}")
    write_dicom_series(folder, scan(6).astype(np.int16), uid="1.2.826.0.1.3680043.2.1125.22")
    return data, folder


IMAGE = "imagesTr/case_003.nrrd"
LABEL = "labelsTr/case_004.mha"
PROBLEMS = {
    "not NRRD": (damaged(IMAGE, garbage), "not a NRRD image", COMMANDS),
    "truncated": (damaged(IMAGE, truncated), "unreadable", COMMANDS),
    "2D image": (damaged(IMAGE, flat), "expected a 3D image, got 2D", COMMANDS),
    "NaN": (damaged(IMAGE, nan_voxel), "NaN or infinite", COMMANDS),
    "label shape": (damaged(LABEL, label_shape), "label shape (26, 26, 26) differs from image shape (24, 24, 24)",
                    ("finetune", "evaluate", "benchmark")),
    "label spacing": (damaged(LABEL, label_spacing), "label affine differs", ("finetune", "evaluate", "benchmark")),
    "two DICOM series": (two_series, "2 DICOM series in one folder", ("pretrain", "predict")),
}
CASES = [pytest.param(name, command, id=f"{name}-{command}") for name, (_, _, commands) in PROBLEMS.items() for command in commands]


@pytest.mark.parametrize("name,command", CASES)
def test_bad_scan_ends_in_one_line_and_writes_nothing(name, command, segmentation_model, tmp_path, capsys):  # noqa: F811
    make, needle, _ = PROBLEMS[name]
    data, culprit = make(tmp_path)
    if command == "predict":
        data = culprit  # predict reads the scan itself
    extra = ["--modality", "MRI"] if command == "pretrain" and not (data / "dataset.json").exists() else []
    out = tmp_path / ("metrics.json" if command == "evaluate" else "result")
    code, _, err = run(command_line(command, data, out, tmp_path / "cache", segmentation_model, extra), capsys)
    assert_one_line_error(code, err, str(culprit.resolve()), needle)
    assert code == 1
    assert not out.exists()
    assert not list(tmp_path.rglob("*.tmp"))
