"""Safe model files: safetensors + validated JSON, resume state through weights_only loading."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from vectorpose.data.preprocessing import PreprocessingConfig
from vectorpose.models.backbone import BackboneConfig
from vectorpose.errors import CheckpointError
from vectorpose.models.files import load_model, save_model
from vectorpose.training.resume import load_resume_state, save_resume_state

META = {
    "task": "pretext",
    "method": "vectorpose",
    "backbone": BackboneConfig(channels=(4, 8, 16), strides=(2, 2)).to_json(),
    "heads": {"vector": True},
    "patch_size": 16,
    "preprocessing": PreprocessingConfig(modality="MRI").to_json(),
    "step": 3,
}


class Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_model_round_trip(tmp_path):
    state = {"a.weight": torch.randn(3, 4), "b.bias": torch.arange(5.0)}
    save_model(tmp_path, state, META)
    loaded, meta = load_model(tmp_path)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    assert meta["step"] == 3 and meta["versions"]["torch"] == torch.__version__
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda m: m.pop("backbone"), "lacks 'backbone'"),
        (lambda m: m.update(step="3"), "'step' has the wrong type"),
        (lambda m: m.update(format="other"), "not a VectorPOSE model"),
        (lambda m: m.update(evil=1), "unknown keys"),
        (lambda m: m["backbone"].pop("channels"), "'backbone' is malformed"),
        (lambda m: m["backbone"].update(channels="many"), "'backbone' is malformed"),
        (lambda m: m["preprocessing"].update(ct_window=[5, 1]), "'preprocessing' is malformed"),
    ],
)
def test_metadata_is_validated(tmp_path, change, message):
    save_model(tmp_path, {"w": torch.zeros(1)}, META)
    meta = json.loads((tmp_path / "model.json").read_text(encoding="utf-8"))
    change(meta)
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=message):
        load_model(tmp_path)


def test_pickle_disguised_as_model_is_refused(tmp_path):
    save_model(tmp_path, {"w": torch.zeros(1)}, META)
    marker = tmp_path / "pwned"
    (tmp_path / "model.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_model(tmp_path)
    assert not marker.exists()


def test_resume_state_round_trip_and_pickle_refused(tmp_path):
    state = {"step": 7, "network": {"w": torch.randn(2)}, "torch_rng": torch.get_rng_state(), "opt": {"lr": 0.1, "betas": (0.9, 0.99)}}
    path = save_resume_state(tmp_path / "resume.pt", state)
    back = load_resume_state(path)
    assert back["step"] == 7 and torch.equal(back["network"]["w"], state["network"]["w"])
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"step": 1, "payload": Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match="refused or unreadable"):
        load_resume_state(evil)
    assert not marker.exists()


def test_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        load_resume_state(tmp_path / "resume.pt")
