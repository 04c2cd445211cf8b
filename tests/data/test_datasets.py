"""Tests for vectorpose.data.datasets: MSD / nnU-Net v2 folders, plain NIfTI folders, single files."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vectorpose.data.datasets import Case, Dataset, load_dataset, normalisation_for
from vectorpose.errors import DataError, DatasetError


def _write_nifti(path: Path, shape=(4, 5, 6), value: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full(shape, value, dtype=np.float32), np.eye(4)), path)
    return path


def _make_msd(root: Path, names=("a_001", "a_002"), modality=None, labels=None, extra=None) -> Path:
    training = []
    for n in names:
        _write_nifti(root / "imagesTr" / f"{n}.nii.gz")
        _write_nifti(root / "labelsTr" / f"{n}.nii.gz", value=0)
        training.append({"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"})
    meta = {"name": "tiny", "training": training, "numTraining": len(training)}
    if modality is not None:
        meta["modality"] = modality
    if labels is not None:
        meta["labels"] = labels
    meta.update(extra or {})
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


# --- MSD --------------------------------------------------------------------------------------


def test_synthetic_msd_dataset(synthetic_dataset: Path):
    ds = load_dataset(synthetic_dataset)
    meta = json.loads((synthetic_dataset / "dataset.json").read_text(encoding="utf-8"))
    assert isinstance(ds, Dataset)
    assert ds.root == synthetic_dataset
    assert len(ds.cases) == len(meta["training"]) == 6
    assert len(ds.labelled) == 6
    assert ds.modality == "MRI"
    assert ds.labels == {0: "background", 1: "left organ", 2: "right organ"}
    assert [c.case_id for c in ds.cases] == [f"synth_{i:03d}" for i in range(6)]
    for case, entry in zip(ds.cases, meta["training"]):
        assert case.image == (synthetic_dataset / entry["image"]).resolve()
        assert case.label == (synthetic_dataset / entry["label"]).resolve()
        assert case.image.is_file() and case.label.is_file()
        assert case.image.is_absolute()


def test_hand_made_msd_dataset(tmp_path: Path):
    root = _make_msd(tmp_path / "ds", names=("x_010", "x_002"), modality={"0": "CT"},
                     labels={"0": "background", "1": "liver", "2": "tumour"})
    ds = load_dataset(root)
    # order follows dataset.json, ids drop the extension
    assert [c.case_id for c in ds.cases] == ["x_010", "x_002"]
    assert [c.image.name for c in ds.cases] == ["x_010.nii.gz", "x_002.nii.gz"]
    assert all(c.label.parent.name == "labelsTr" for c in ds.cases)
    assert ds.modality == "CT"
    assert ds.labels == {0: "background", 1: "liver", 2: "tumour"}


def test_msd_entries_without_label_are_unlabelled(tmp_path: Path):
    root = tmp_path / "ds"
    _write_nifti(root / "imagesTr" / "u.nii.gz")
    _write_nifti(root / "imagesTr" / "l.nii.gz")
    _write_nifti(root / "labelsTr" / "l.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"training": [
        {"image": "imagesTr/u.nii.gz"},
        {"image": "imagesTr/l.nii.gz", "label": "labelsTr/l.nii.gz"},
    ]}))
    ds = load_dataset(root)
    assert [(c.case_id, c.label is not None) for c in ds.cases] == [("u", False), ("l", True)]
    assert [c.case_id for c in ds.labelled] == ["l"]
    assert ds.modality is None


@pytest.mark.parametrize(
    "declared, expected",
    [("MRI", "MRI"), ("CT", "CT"), ("ct", "CT"), ("T2", "MRI"), ("MR", "MRI"), ("FLAIR", "MRI"), (" Ct ", "CT")],
)
def test_modality_from_dataset_json(tmp_path: Path, declared: str, expected: str):
    ds = load_dataset(_make_msd(tmp_path / "ds", modality={"0": declared}))
    assert ds.modality == expected


@pytest.mark.parametrize("override, expected", [("CT", "CT"), ("ct", "CT"), ("T1", "MRI"), ("MRI", "MRI")])
@pytest.mark.parametrize("declared", [{"0": "MRI"}, {"0": "CT"}, None])
def test_modality_override(tmp_path: Path, declared, override: str, expected: str):
    root = _make_msd(tmp_path / "ds", modality=declared, labels={"0": "bg", "1": "fg"})
    ds = load_dataset(root, modality=override)
    assert ds.modality == expected
    # the override keeps everything else
    base = load_dataset(root)
    assert ds.cases == base.cases and ds.labels == base.labels == {0: "bg", 1: "fg"} and ds.root == base.root


def test_multi_channel_dataset_rejected(tmp_path: Path):
    root = _make_msd(tmp_path / "ds", modality={"0": "T1", "1": "T2"})
    with pytest.raises(DataError) as exc:
        load_dataset(root)
    assert exc.value.path == root / "dataset.json"


@pytest.mark.parametrize(
    "name, expected",
    [("CT", "CT"), ("ct", "CT"), ("  cT\n", "CT"), ("MRI", "MRI"), ("MR", "MRI"), ("T1", "MRI"),
     ("T2", "MRI"), ("FLAIR", "MRI"), ("ADC", "MRI")],
)
def test_normalisation_for(name: str, expected: str):
    assert normalisation_for(name) == expected


@pytest.mark.parametrize("name", ["", "   "])
def test_normalisation_for_rejects_empty(name: str):
    with pytest.raises(ValueError):
        normalisation_for(name)


# --- nnU-Net v2 -------------------------------------------------------------------------------


def test_nnunet_v2_folder(tmp_path: Path):
    root = tmp_path / "Dataset001_Tiny"
    for cid in ("case_b", "case_a", "liver_7"):
        _write_nifti(root / "imagesTr" / f"{cid}_0000.nii.gz")
        _write_nifti(root / "labelsTr" / f"{cid}.nii.gz", value=0)
    _write_nifti(root / "imagesTr" / "nolabel_0000.nii.gz")  # image without label
    (root / "imagesTr" / "README.txt").write_text("not an image")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "liver": 1, "tumour": 2},
        "numTraining": 4,
        "file_ending": ".nii.gz",
    }))
    ds = load_dataset(root)
    assert ds.modality == "CT"
    assert ds.labels == {0: "background", 1: "liver", 2: "tumour"}
    by_id = {c.case_id: c for c in ds.cases}
    assert sorted(by_id) == ["case_a", "case_b", "liver_7", "nolabel"]
    for cid in ("case_a", "case_b", "liver_7"):
        assert by_id[cid].image == (root / "imagesTr" / f"{cid}_0000.nii.gz").resolve()
        assert by_id[cid].label == (root / "labelsTr" / f"{cid}.nii.gz").resolve()
    assert by_id["nolabel"].label is None
    assert len(ds.labelled) == 3


def test_nnunet_v2_empty_images_folder(tmp_path: Path):
    root = tmp_path / "ds"
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {"background": 0}}))
    with pytest.raises(DataError) as exc:
        load_dataset(root)
    assert exc.value.path == root


# --- plain folders and single files -------------------------------------------------------------


def test_plain_folder_recursive(tmp_path: Path):
    root = tmp_path / "scans"
    files = {
        "top.nii.gz": root / "top.nii.gz",
        "p1/scan.nii.gz": root / "p1" / "scan.nii.gz",
        "p2/scan.nii.gz": root / "p2" / "scan.nii.gz",
        "p2/deep/er/scan.nii": root / "p2" / "deep" / "er" / "scan.nii",
        "p3/UPPER.NII.GZ": root / "p3" / "UPPER.NII.GZ",
    }
    for p in files.values():
        _write_nifti(p)
    # things that must be ignored
    (root / "notes.txt").write_text("x")
    (root / "p1" / "scan.nii.gz.bak").write_bytes(b"x")
    (root / "p1" / ".hidden.nii.gz").write_bytes(b"x")
    (root / "p1" / "image.png").write_bytes(b"\x89PNG")
    (root / "p1" / "a_folder.nii.gz").mkdir()

    ds = load_dataset(root)
    assert ds.modality is None and ds.labels == {} and ds.labelled == ()
    assert sorted(c.image for c in ds.cases) == sorted(p.resolve() for p in files.values())
    ids = [c.case_id for c in ds.cases]
    assert len(set(ids)) == len(ids) == 5
    assert {"top", "UPPER"} <= set(ids)
    assert sum(i.endswith("scan") for i in ids) == 3
    assert all(c.label is None for c in ds.cases)


def test_plain_folder_modality_override(tmp_path: Path):
    _write_nifti(tmp_path / "d" / "a.nii.gz")
    assert load_dataset(tmp_path / "d", modality="ct").modality == "CT"


def test_plain_folder_ids_unique_even_with_dash_suffix_names(tmp_path: Path):
    root = tmp_path / "scans"
    for rel in ("a/x.nii.gz", "b/x.nii.gz", "c/x-1.nii.gz"):
        _write_nifti(root / rel)
    ids = [c.case_id for c in load_dataset(root).cases]
    assert len(set(ids)) == 3, ids


@pytest.mark.parametrize("name, cid", [("one.nii.gz", "one"), ("two.nii", "two"), ("case_0000.nii.gz", "case")])
def test_single_file(tmp_path: Path, name: str, cid: str):
    path = _write_nifti(tmp_path / "sub" / name)
    ds = load_dataset(path)
    assert ds.root == path.parent
    assert ds.cases == (Case(cid, path.resolve(), None),)
    assert ds.modality is None
    assert load_dataset(path, modality="CT").modality == "CT"


def test_single_non_nifti_file(tmp_path: Path):
    path = tmp_path / "image.png"
    path.write_bytes(b"\x89PNG")
    with pytest.raises(DataError) as exc:
        load_dataset(path)
    assert exc.value.path == path


# --- errors --------------------------------------------------------------------------------------


def test_empty_folder(tmp_path: Path):
    root = tmp_path / "empty"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "readme.txt").write_text("nothing here")
    with pytest.raises(DataError) as exc:
        load_dataset(root)
    assert exc.value.path == root
    assert str(root) in str(exc.value)


def test_missing_path(tmp_path: Path):
    path = tmp_path / "does_not_exist"
    with pytest.raises(DataError) as exc:
        load_dataset(path)
    assert exc.value.path == path


@pytest.mark.parametrize("text", ["{not json", '{"training": [', "", "[1, 2, 3]", '"a string"'])
def test_malformed_dataset_json(tmp_path: Path, text: str):
    root = _make_msd(tmp_path / "ds")
    (root / "dataset.json").write_text(text)
    with pytest.raises(DataError) as exc:
        load_dataset(root)
    assert exc.value.path == root / "dataset.json"
    assert "dataset.json" in str(exc.value)


@pytest.mark.parametrize(
    "entry",
    [{"label": "./labelsTr/a_001.nii.gz"}, {"image": ""}, {"image": 3}, "imagesTr/a_001.nii.gz"],
)
def test_invalid_training_entry(tmp_path: Path, entry):
    root = _make_msd(tmp_path / "ds")
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    meta["training"].append(entry)
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError) as exc:
        load_dataset(root)
    assert [p.path for p in exc.value.problems] == [root / "dataset.json"]


def test_missing_files_all_reported_at_once(tmp_path: Path):
    root = _make_msd(tmp_path / "ds", names=("a_001", "a_002", "a_003", "a_004"))
    gone_image = root / "imagesTr" / "a_002.nii.gz"
    gone_label = root / "labelsTr" / "a_004.nii.gz"
    gone_image.unlink()
    gone_label.unlink()
    with pytest.raises(DatasetError) as exc:
        load_dataset(root)
    missing = {p.path for p in exc.value.problems}
    assert missing == {gone_image.resolve(), gone_label.resolve()}
    assert all(isinstance(p, DataError) for p in exc.value.problems)
    msg = str(exc.value)
    assert str(gone_image.resolve()) in msg and str(gone_label.resolve()) in msg
    assert len(msg.splitlines()) == 2


def test_missing_image_and_label_of_one_case_both_reported(tmp_path: Path):
    root = _make_msd(tmp_path / "ds", names=("a_001", "a_002"))
    gone = [root / "imagesTr" / "a_002.nii.gz", root / "labelsTr" / "a_002.nii.gz"]
    for p in gone:
        p.unlink()
    with pytest.raises(DatasetError) as exc:
        load_dataset(root)
    assert {p.path for p in exc.value.problems} == {p.resolve() for p in gone}


# --- real data ---------------------------------------------------------------------------------


def test_real_hippocampus_dataset(hippocampus: Path):
    ds = load_dataset(hippocampus)
    assert len(ds.cases) == 208
    assert len(ds.labelled) == 208
    assert ds.modality == "MRI"
    assert set(ds.labels) == {0, 1, 2}
    ids = [c.case_id for c in ds.cases]
    assert len(set(ids)) == 208
    assert all(i.startswith("hippocampus_") for i in ids)
    for c in ds.cases:
        assert c.image.is_file() and c.label.is_file()
        assert c.image.name == c.label.name
        assert c.image.parent.name == "imagesTr" and c.label.parent.name == "labelsTr"


# --- NRRD, MetaImage and DICOM scans ----------------------------------------------------------


def _write_itk(path: Path, shape=(4, 5, 6)) -> Path:
    from scan_formats import write_scan

    return write_scan(path, np.ones(shape, dtype=np.float32), np.eye(4))


def _write_series(folder: Path) -> Path:
    from scan_formats import write_dicom_series

    return write_dicom_series(folder, np.ones((4, 5, 3), dtype=np.int16))


def test_plain_folder_finds_every_format_and_dicom_series(tmp_path: Path):
    root = tmp_path / "scans"
    _write_nifti(root / "a.nii.gz")
    _write_itk(root / "b.nrrd")
    _write_itk(root / "sub" / "c.mha")
    _write_itk(root / "sub" / "d.mhd")  # its d.zraw is data, not a case
    _write_itk(root / "sub" / "e.nhdr")
    _write_series(root / "patient1" / "series7")
    _write_series(root / "patient2" / "series7")  # the same series name twice: ids take the folder path
    (root / "patient2" / "notes.txt").write_text("not a scan")
    _write_itk(root / ".hidden" / "f.nrrd")
    ds = load_dataset(root)
    found = {c.case_id: c.image for c in ds.cases}
    assert found == {
        "a": (root / "a.nii.gz").resolve(), "b": (root / "b.nrrd").resolve(), "c": (root / "sub" / "c.mha").resolve(),
        "d": (root / "sub" / "d.mhd").resolve(), "e": (root / "sub" / "e.nhdr").resolve(),
        "patient1__series7": (root / "patient1" / "series7").resolve(), "patient2__series7": (root / "patient2" / "series7").resolve(),
    }


def test_dicom_series_folder_is_one_case(tmp_path: Path):
    folder = _write_series(tmp_path / "series")
    ds = load_dataset(folder)
    assert [(c.case_id, c.image) for c in ds.cases] == [("series", folder.resolve())]


@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".mha", ".mhd"])
def test_single_itk_file(tmp_path: Path, suffix: str):
    path = _write_itk(tmp_path / f"case_0000{suffix}")
    assert load_dataset(path).cases == (Case("case", path.resolve(), None),)


def test_msd_entries_may_name_any_format(tmp_path: Path):
    root = tmp_path / "msd"
    _write_itk(root / "imagesTr" / "x.nrrd")
    _write_itk(root / "labelsTr" / "x.mha")
    _write_series(root / "imagesTr" / "y")
    training = [{"image": "./imagesTr/x.nrrd", "label": "./labelsTr/x.mha"}, {"image": "./imagesTr/y"},
                {"image": "./imagesTr/z.nrrd", "label": "./labelsTr/z.nrrd"}]
    (root / "dataset.json").write_text(json.dumps({"training": training}))
    with pytest.raises(DatasetError) as exc:
        load_dataset(root)
    assert [p.path.name for p in exc.value.problems] == ["z.nrrd", "z.nrrd"]
    (root / "dataset.json").write_text(json.dumps({"training": training[:2]}))
    ds = load_dataset(root)
    assert ds.cases == (Case("x", (root / "imagesTr" / "x.nrrd").resolve(), (root / "labelsTr" / "x.mha").resolve()),
                        Case("y", (root / "imagesTr" / "y").resolve(), None))


@pytest.mark.parametrize("ending", [".nrrd", ".mha", None])
def test_nnunet_v2_folder_of_another_file_ending(tmp_path: Path, ending):
    root = tmp_path / "Dataset001"
    suffix = ending or ".mha"
    for cid in ("c1", "c2"):
        _write_itk(root / "imagesTr" / f"{cid}_0000{suffix}")
    _write_itk(root / "labelsTr" / f"c1{suffix}")
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "x": 1}, "numTraining": 2}
    if ending:
        meta["file_ending"] = ending
    (root / "dataset.json").write_text(json.dumps(meta))
    ds = load_dataset(root)
    assert [(c.case_id, c.label.name if c.label else None) for c in ds.cases] == [("c1", f"c1{suffix}"), ("c2", None)]
    assert ds.modality == "CT"
