"""Bad input through every command: a non-zero exit, one line naming the file and the problem, and
nothing written. Each problem is run through every command that reads that kind of input."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cli_helpers import assert_one_line_error, run
from vectorpose.cli import main

LABELS = {"0": "background", "1": "anterior", "2": "posterior"}
SIDE = 24
TINY_NET = ["--channels", "4,8,16", "--quiet"]
COMMANDS = ("pretrain", "finetune", "evaluate", "predict", "benchmark")


def write(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def scan(seed: int, side: int = SIDE) -> np.ndarray:
    return np.random.default_rng(seed).normal(100.0, 20.0, (side,) * 3).astype(np.float32)


def label_map(side: int = SIDE) -> np.ndarray:
    label = np.zeros((side,) * 3, dtype=np.uint8)
    c = side // 2
    label[c - 4:c, c - 3:c + 3, c - 3:c + 3] = 1
    label[c:c + 4, c - 3:c + 3, c - 3:c + 3] = 2
    return label


def labelled_dataset(root: Path, cases: int = 7, side: int = SIDE) -> Path:
    """An MSD folder of ``cases`` good labelled MRI cases (7 give 2 test, 1 validation, 4 training cases)."""
    training = []
    for i in range(cases):
        write(root / "imagesTr" / f"case_{i:03d}.nii.gz", scan(i, side))
        write(root / "labelsTr" / f"case_{i:03d}.nii.gz", label_map(side))
        training.append({"image": f"./imagesTr/case_{i:03d}.nii.gz", "label": f"./labelsTr/case_{i:03d}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "MRI"}, "labels": LABELS, "training": training}))
    return root


@dataclass
class Problem:
    """A dataset with one defect. ``make(root)`` returns ``(data, culprit)``: what to pass, and the path
    the error must name (predict is given the culprit file itself); ``extra`` adds options per command."""

    make: Callable[[Path], tuple[Path, Path]]
    needle: str
    commands: tuple[str, ...]
    extra: dict[str, list[str]] = field(default_factory=dict)


def broken(file: str, damage: Callable[[Path], None]) -> Callable[[Path], tuple[Path, Path]]:
    """A good dataset whose ``file`` (relative to its root) is then damaged; the culprit is that file."""
    def make(root: Path) -> tuple[Path, Path]:
        data = labelled_dataset(root / "data")
        culprit = data / file
        damage(culprit)
        return data, culprit

    return make


def broken_image(damage: Callable[[Path], None]) -> Callable[[Path], tuple[Path, Path]]:
    return broken("imagesTr/case_003.nii.gz", damage)


def broken_label(damage: Callable[[Path], None]) -> Callable[[Path], tuple[Path, Path]]:
    return broken("labelsTr/case_004.nii.gz", damage)


def not_nifti(path: Path) -> None:
    path.write_bytes(gzip.compress(b"this is not a nifti header" * 20))


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flat_2d(path: Path) -> None:
    write(path, scan(3)[:, :, 0])


def series_4d(path: Path) -> None:
    write(path, np.stack([scan(3)] * 2, axis=-1))


def with_value(value: float) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        array = scan(3)
        array[5, 6, 7] = value
        write(path, array)

    return damage


def with_voxel_size(size: float) -> Callable[[Path], None]:
    """The scan with the header's second voxel size (pixdim[2], bytes 84-87 of a NIfTI-1 header) set to ``size``."""
    def damage(path: Path) -> None:
        write(path, scan(3))
        header = bytearray(gzip.decompress(path.read_bytes()))
        header[84:88] = np.float32(size).tobytes()
        path.write_bytes(gzip.compress(bytes(header)))

    return damage


def huge_header(path: Path) -> None:
    """A header that claims 2000³ voxels (32 GB of float32) in front of a few bytes of data."""
    header = nib.Nifti1Header()
    header.set_data_shape((2000, 2000, 2000))
    header.set_data_dtype(np.float32)
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 64))


def fractional_label(path: Path) -> None:
    write(path, label_map().astype(np.float32) * 0.5)


def constant(path: Path) -> None:
    write(path, np.full((SIDE,) * 3, 42.0, dtype=np.float32))


def label_shape(path: Path) -> None:
    write(path, label_map(SIDE + 2))


def label_affine(path: Path) -> None:
    write(path, label_map(), np.diag([2.0, 2.0, 2.0, 1.0]))


def undeclared_label(path: Path) -> None:
    label = label_map()
    label[0, 0, 0] = 5
    write(path, label)


def empty_dataset(root: Path) -> tuple[Path, Path]:
    data = root / "data"
    (data / "imagesTr").mkdir(parents=True)
    (data / "dataset.json").write_text(json.dumps({"modality": {"0": "MRI"}, "labels": LABELS, "training": []}))
    return data, data


def malformed_json(root: Path) -> tuple[Path, Path]:
    data = labelled_dataset(root / "data")
    (data / "dataset.json").write_text('{"modality": {"0": "MRI"}, "training": [')
    return data, data / "dataset.json"


def missing_file(root: Path) -> tuple[Path, Path]:
    data = labelled_dataset(root / "data")
    culprit = data / "labelsTr" / "case_002.nii.gz"
    culprit.unlink()
    return data, culprit


def good_data(root: Path) -> tuple[Path, Path]:
    data = labelled_dataset(root / "data")
    return data, data


def small_volumes(root: Path) -> tuple[Path, Path]:
    data = labelled_dataset(root / "data", side=12)
    return data, data


def empty_folder(root: Path) -> tuple[Path, Path]:
    (root / "empty").mkdir()
    return root / "empty", root / "empty"


def dicom_series(folder: Path, uid: str, slices: int = 4) -> None:
    import SimpleITK as sitk

    volume = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 1000, (slices, 16, 16)).astype(np.int16))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(slices):
        image = volume[:, :, z]
        for tag, value in (("0020|000d", "1.2.826.0.1.3680043.2.1125.1"), ("0020|000e", uid), ("0008|0060", "MR"),
                           ("0020|0032", f"0\\0\\{z}"), ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0020|0013", str(z + 1))):
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{uid[-1]}_{z}.dcm"))
        writer.Execute(image)


def mixed_dicom_series(root: Path) -> tuple[Path, Path]:
    folder = root / "dicom"
    folder.mkdir()
    for uid in ("1.2.826.0.1.3680043.2.1125.11", "1.2.826.0.1.3680043.2.1125.12"):
        dicom_series(folder, uid)
    return folder, folder


IMAGE_COMMANDS = COMMANDS
LABEL_COMMANDS = ("finetune", "evaluate", "benchmark")
DATASET_COMMANDS = ("pretrain", "finetune", "evaluate", "benchmark")

PROBLEMS = {
    "not NIfTI": Problem(broken_image(not_nifti), "not a NIfTI image", IMAGE_COMMANDS),
    "truncated": Problem(broken_image(truncated), "unreadable", IMAGE_COMMANDS),
    "2D image": Problem(broken_image(flat_2d), "expected a 3D image, got 2D", IMAGE_COMMANDS),
    "4D image": Problem(broken_image(series_4d), "expected a 3D image, got 4D", IMAGE_COMMANDS),
    "NaN": Problem(broken_image(with_value(np.nan)), "NaN or infinite", IMAGE_COMMANDS),
    "infinite": Problem(broken_image(with_value(np.inf)), "NaN or infinite", IMAGE_COMMANDS),
    "constant image": Problem(broken_image(constant), "constant intensity", IMAGE_COMMANDS),
    "zero voxel size": Problem(broken_image(with_voxel_size(0.0)), "voxel size (1.0, 0.0, 1.0) in the header", IMAGE_COMMANDS),
    "negative voxel size": Problem(broken_image(with_voxel_size(-2.0)), "voxel size (1.0, -2.0, 1.0) in the header", IMAGE_COMMANDS),
    "huge header": Problem(broken_image(huge_header), "the header claims (2000, 2000, 2000)", IMAGE_COMMANDS),
    "non-integer label": Problem(broken_label(fractional_label), "non-integer values", LABEL_COMMANDS),
    "label shape": Problem(broken_label(label_shape), "label shape (26, 26, 26) differs from image shape (24, 24, 24)", LABEL_COMMANDS),
    "label affine": Problem(broken_label(label_affine), "label affine differs", LABEL_COMMANDS),
    "undeclared label": Problem(broken_label(undeclared_label), "label values [5] are not declared in dataset.json", LABEL_COMMANDS),
    "empty dataset": Problem(empty_dataset, "lists no training cases", DATASET_COMMANDS),
    "malformed dataset.json": Problem(malformed_json, "malformed JSON", DATASET_COMMANDS),
    "missing file": Problem(missing_file, "not found", DATASET_COMMANDS),
    "fraction with no case": Problem(good_data, "label fraction 0.1 of 4 training cases gives no labelled case", ("finetune", "benchmark"),
                                     {"finetune": ["--label-fraction", "0.1"], "benchmark": ["--fractions", "0.1"]}),
    # the benchmark's recipe pretrains on 32-voxel patches: its smallest crops (16) fit no 12-voxel volume
    "patch larger than every volume": Problem(small_volumes, "larger than every volume", ("pretrain", "finetune", "benchmark"),
                                              {"pretrain": ["--patch", "32"], "finetune": ["--patch", "32"]}),
    "empty folder": Problem(empty_folder, "no DICOM series found", ("predict",)),
    "mixed DICOM series": Problem(mixed_dicom_series, "2 DICOM series in one folder", ("predict",)),
}
CASES = [pytest.param(name, command, id=f"{name}-{command}") for name, p in PROBLEMS.items() for command in p.commands]


@pytest.fixture(scope="module")
def segmentation_model(tmp_path_factory) -> Path:
    """A one-step fine-tuned model on good data of the same kind, for evaluate and predict."""
    root = tmp_path_factory.mktemp("model")
    data = labelled_dataset(root / "data")
    args = ["finetune", data, "--out", root / "run", "--steps", "1", "--batch", "1", "--patch", "16", "--val-every", "1",
            "--cache", root / "cache", *TINY_NET]
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert not exc.code
    return root / "run"


def command_line(command: str, data: Path, out: Path, cache: Path, model: Path | None, extra: list[str]) -> list:
    if command == "pretrain":
        return ["pretrain", data, "--out", out, "--cache", cache, "--steps", "1", "--batch", "1", "--patch", "16", *TINY_NET, *extra]
    if command == "finetune":
        return ["finetune", data, "--out", out, "--cache", cache, "--steps", "1", "--batch", "1", "--patch", "16", *TINY_NET, *extra]
    if command == "evaluate":
        return ["evaluate", model, data, "--all", "--cache", cache, "--out", out, *extra]
    if command == "predict":
        return ["predict", model, data, out, *extra]
    return ["benchmark", data, "--out", out, "--methods", "scratch,vectorpose", "--fractions", "1", "--seeds", "1", "--pretrain-steps", "1",
            "--finetune-steps", "1", "--cache", cache, "--quiet", *extra]


def outputs_left(out: Path) -> list[Path]:
    return [out] if out.exists() else []


@pytest.mark.parametrize("name,command", CASES)
def test_bad_input_ends_in_one_line_and_writes_nothing(name, command, segmentation_model, tmp_path, capsys):
    problem = PROBLEMS[name]
    data, culprit = problem.make(tmp_path)
    if command == "predict" and culprit.is_file():
        data = culprit  # predict reads the scan itself
    out = tmp_path / ("metrics.json" if command == "evaluate" else "result")
    args = command_line(command, data, out, tmp_path / "cache", segmentation_model, problem.extra.get(command, []))
    code, stdout, err = run(args, capsys)
    assert_one_line_error(code, err, str(culprit.resolve() if culprit.exists() else culprit), problem.needle)
    assert code == 1
    assert outputs_left(out) == []
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("command", COMMANDS)
def test_output_that_holds_results_is_refused_and_kept(command, segmentation_model, tmp_path, capsys):
    data = labelled_dataset(tmp_path / "data")
    if command == "predict":
        out = tmp_path / "pred"
        out.mkdir()
        (out / "case_000.nii.gz").write_bytes(b"earlier result")
        data, kept = data / "imagesTr", out / "case_000.nii.gz"
    elif command == "evaluate":
        out = kept = tmp_path / "metrics.json"
        out.write_text('{"earlier": "result"}')
    else:
        out = tmp_path / "result"
        out.mkdir()
        kept = out / "notes.txt"
        kept.write_text("earlier result")
    before = kept.read_bytes()
    code, _, err = run(command_line(command, data, out, tmp_path / "cache", segmentation_model, []), capsys)
    assert_one_line_error(code, err, str(out), "already")
    assert kept.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == [kept.name] if out.is_dir() else True


def test_every_problem_of_a_dataset_is_listed_at_once(tmp_path, capsys):
    data = labelled_dataset(tmp_path / "data")
    with_value(np.nan)(data / "imagesTr" / "case_001.nii.gz")
    label_shape(data / "labelsTr" / "case_005.nii.gz")
    not_nifti(data / "imagesTr" / "case_006.nii.gz")
    code, _, err = run(command_line("finetune", data, tmp_path / "run", tmp_path / "cache", None, []), capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 3 and all(l.startswith("error: ") for l in lines), err
    assert {l.split(":")[1].strip() for l in lines} == {
        str((data / p).resolve()) for p in ("imagesTr/case_001.nii.gz", "labelsTr/case_005.nii.gz", "imagesTr/case_006.nii.gz")}
    assert not (tmp_path / "run").exists()


def test_predict_leaves_no_output_when_one_scan_of_many_fails(segmentation_model, tmp_path, capsys):
    """Outputs are put in place only after every scan succeeded: a bad third scan leaves nothing."""
    scans = tmp_path / "scans"
    for i in range(3):
        write(scans / f"s{i}.nii.gz", scan(i))
    constant(scans / "s2.nii.gz")
    code, _, err = run(["predict", segmentation_model, scans, tmp_path / "pred"], capsys)
    assert_one_line_error(code, err, str(scans / "s2.nii.gz"), "constant")
    assert not (tmp_path / "pred").exists()


def test_pretraining_ignores_broken_label_maps(tmp_path, capsys):
    """Pretraining reads images only, so a bad label map is no reason to stop it."""
    data = labelled_dataset(tmp_path / "data")
    label_shape(data / "labelsTr" / "case_004.nii.gz")
    # --test-fraction 0: every case is read, the broken one included
    code, _, err = run(command_line("pretrain", data, tmp_path / "run", tmp_path / "cache", None, ["--test-fraction", "0"]), capsys)
    assert code == 0, err
    assert len(json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))["cases"]) == 7


def missing_path(root: Path) -> tuple[Path, Path]:
    return root / "nowhere", root / "nowhere"


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_input_path(command, segmentation_model, tmp_path, capsys):
    data, culprit = missing_path(tmp_path)
    out = tmp_path / ("metrics.json" if command == "evaluate" else "result")
    code, _, err = run(command_line(command, data, out, tmp_path / "cache", segmentation_model, []), capsys)
    assert_one_line_error(code, err, str(culprit), "no such file or folder")
    assert outputs_left(out) == []


@pytest.mark.parametrize("command", ["finetune --init", "evaluate", "predict", "benchmark --pretrained"])
def test_missing_model(command, tmp_path, capsys):
    data = labelled_dataset(tmp_path / "data")
    model, out = tmp_path / "no-model", tmp_path / "result"
    args = {
        "finetune --init": command_line("finetune", data, out, tmp_path / "cache", None, ["--init", model]),
        "evaluate": command_line("evaluate", data, out, tmp_path / "cache", model, []),
        "predict": command_line("predict", data / "imagesTr" / "case_000.nii.gz", out, tmp_path / "cache", model, []),
        "benchmark --pretrained": command_line("benchmark", data, out, tmp_path / "cache", None, ["--pretrained", f"vectorpose={model}"]),
    }[command]
    code, _, err = run(args, capsys)
    assert_one_line_error(code, err, str(model), "model file not found")
    assert outputs_left(out) == []


def test_benchmark_lists_problems_of_both_datasets_at_once(tmp_path, capsys):
    data = labelled_dataset(tmp_path / "data")
    external = labelled_dataset(tmp_path / "external", cases=2)
    with_value(np.inf)(data / "imagesTr" / "case_002.nii.gz")
    undeclared_label(external / "labelsTr" / "case_001.nii.gz")
    not_nifti(external / "imagesTr" / "case_000.nii.gz")
    out = tmp_path / "result"
    code, _, err = run(command_line("benchmark", data, out, tmp_path / "cache", None, ["--test-data", external]), capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 2, err  # label values are checked once every file reads
    assert str((data / "imagesTr" / "case_002.nii.gz").resolve()) in lines[0] and "infinite" in lines[0]
    assert str((external / "imagesTr" / "case_000.nii.gz").resolve()) in lines[1] and "NIfTI" in lines[1]
    assert not out.exists()


def test_benchmark_notes_file_missing(tmp_path, capsys):
    data = labelled_dataset(tmp_path / "data")
    out = tmp_path / "result"
    code, _, err = run(command_line("benchmark", data, out, tmp_path / "cache", None, ["--notes", tmp_path / "notes.md"]), capsys)
    assert_one_line_error(code, err, str(tmp_path / "notes.md"))
    assert not out.exists()
