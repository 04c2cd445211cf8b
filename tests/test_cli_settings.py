"""``--config FILE``: a run's config.json reruns it bit for bit, flags override it, bad files are one-line errors;
the options and their defaults are the configuration dataclasses' own."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from cli_helpers import assert_one_line_error, run
from vectorpose.benchmark.runner import BenchmarkConfig
from vectorpose.cli import cli
from vectorpose.cli_settings import ConfigFile, Settings
from vectorpose.errors import VectorPoseError
from vectorpose.probe.runner import ProbeConfig
from vectorpose.pretext.masking import MaskingConfig
from vectorpose.pretext.sample import PretextConfig
from vectorpose.training.finetune import FinetuneConfig
from vectorpose.training.pretrain import PretrainConfig

PRETRAIN = ["--steps", "3", "--batch", "2", "--patch", "16", "--channels", "4,8,16", "--log-every", "1", "--quiet",
            "--lr", "0.003", "--scale-range", "0.75,1.25", "--flip-prob", "0.25", "--vp-weight", "2"]
FINETUNE = ["--labeled", "2", "--steps", "4", "--batch", "1", "--patch", "16", "--channels", "4,8,16", "--val-every", "2", "--log-every", "1", "--quiet",
            "--lr", "0.005", "--foreground-prob", "0.5"]


def config_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "config.json").read_text(encoding="utf-8"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert wa[key].equal(wb[key]), key


def test_options_carry_the_dataclass_defaults():
    """Each option named after a field of a configuration class has that field's default (found by field name here)."""
    expected = {}
    classes = {"pretrain": (PretrainConfig, PretextConfig, MaskingConfig), "finetune": (FinetuneConfig,),
               "benchmark": (BenchmarkConfig,), "probe": (ProbeConfig,)}
    for command, group in classes.items():
        for cls in group:
            for f in dataclasses.fields(cls):
                if f.metadata.get("help"):
                    flag = f.metadata.get("flag") or f.name.replace("_", "-")
                    expected[(command, flag if isinstance(flag, str) else flag[0])] = f.default
    assert len(expected) >= 40
    for (command, flag), default in expected.items():
        param = next(p for p in cli.commands[command].params if f"--{flag}" in p.opts)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        assert param.default == shown, (command, flag)


def test_finetune_config_reruns_the_run_bit_for_bit(synthetic_dataset, cache_dir, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    code, _, err = run(["finetune", synthetic_dataset, "--out", first, "--cache", cache_dir, *FINETUNE], capsys)
    assert code == 0, err
    # no DATA and no flag: everything comes from the run's own config.json
    code, _, err = run(["finetune", "--config", first / "config.json", "--out", second, "--cache", cache_dir, "--quiet"], capsys)
    assert code == 0, err
    assert config_of(second) == config_of(first)
    assert_same_weights(first, second)
    assert (first / "split.json").read_text(encoding="utf-8") == (second / "split.json").read_text(encoding="utf-8")


def test_pretrain_config_reruns_the_run_bit_for_bit(synthetic_dataset, cache_dir, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    code, _, err = run(["pretrain", synthetic_dataset, "--out", first, "--cache", cache_dir, *PRETRAIN], capsys)
    assert code == 0, err
    code, _, err = run(["pretrain", "--config", first / "config.json", "--out", second, "--cache", cache_dir, "--quiet"], capsys)
    assert code == 0, err
    a, b = config_of(first), config_of(second)
    assert a["pretrain"] == b["pretrain"] and a["cases"] == b["cases"] and a["data"] == b["data"]
    assert a["pretrain"]["loss_weights"] == {"vp": 2.0} and a["pretrain"]["pretext"]["scale_range"] == [0.75, 1.25]
    assert_same_weights(first, second)


def test_flags_override_the_file(synthetic_dataset, cache_dir, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    code, _, err = run(["finetune", synthetic_dataset, "--out", first, "--cache", cache_dir, *FINETUNE], capsys)
    assert code == 0, err
    code, _, err = run(["finetune", "--config", first / "config.json", "--out", second, "--cache", cache_dir, "--quiet",
                        "--steps", "2", "--label-fraction", "0.5"], capsys)
    assert code == 0, err
    a, b = config_of(first)["finetune"], config_of(second)["finetune"]
    # --label-fraction replaces the file's --labeled, as the two say the same thing
    assert (b["steps"], b["label_fraction"], b["labelled"]) == (2, 0.5, None)
    assert {k: v for k, v in a.items() if k not in ("steps", "label_fraction", "labelled")} == \
        {k: v for k, v in b.items() if k not in ("steps", "label_fraction", "labelled")}


def test_a_partial_settings_file(synthetic_dataset, cache_dir, tmp_path, capsys):
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"steps": 2, "batch_size": 1, "pretext": {"patch_size": 16, "corruption": {"paint_prob": 0.0}},
                                    "backbone": {"channels": [4, 8, 16]}}), encoding="utf-8")
    out = tmp_path / "run"
    code, _, err = run(["pretrain", synthetic_dataset, "--config", settings, "--out", out, "--cache", cache_dir, "--quiet"], capsys)
    assert code == 0, err
    saved = config_of(out)["pretrain"]
    assert (saved["steps"], saved["batch_size"], saved["pretext"]["patch_size"]) == (2, 1, 16)
    assert saved["pretext"]["corruption"]["paint_prob"] == 0.0
    assert saved["pretext"]["corruption"]["shuffle_prob"] == PretextConfig().corruption.shuffle_prob
    assert saved["backbone"]["channels"] == [4, 8, 16] and saved["lr"] == PretrainConfig().lr


@pytest.mark.parametrize("content, message", [
    (None, "configuration file not found"),
    ("{not json", "malformed JSON"),
    ("[1, 2]", "JSON object"),
    ('{"pretrain": {"stepz": 3}}', "unknown setting 'stepz'"),
    ('{"pretext": {"patch": 16}}', "unknown setting 'pretext.patch'"),
    ('{"steps": "many"}', "invalid settings"),
])
def test_bad_config_files_are_one_line_errors(content, message, synthetic_dataset, tmp_path, capsys):
    path = tmp_path / "settings.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    out = tmp_path / "run"
    code, _, err = run(["pretrain", synthetic_dataset, "--config", path, "--out", out, "--quiet"], capsys)
    assert_one_line_error(code, err, str(path), message)
    assert not out.exists()


@pytest.mark.parametrize("file_content, given", [
    ({"masking": {"block_size": 6}}, {("method",): "mae", ("pretext", "patch_size"): 48}),
    ({"pretext": {"patch_size": 48}}, {("method",): "mae", ("masking", "block_size"): 6}),
    ({}, {("method",): "mae", ("pretext", "patch_size"): 48, ("masking", "block_size"): 6}),
    ({"method": "mae", "masking": {"block_size": 6, "ratio": 0.5}, "pretext": {"patch_size": 48}}, {}),
])
def test_settings_that_depend_on_each_other_are_checked_together(file_content, given, tmp_path):
    """Block 6 fits patch 48 but not the default 32: whichever of file and flags brings which, only the result is checked."""
    file = ConfigFile(tmp_path / "settings.json", {"pretrain": file_content})
    config = Settings(PretrainConfig, file, "pretrain", given).build()
    assert (config.method, config.pretext.patch_size, config.masking.block_size) == ("mae", 48, 6)


def test_a_mae_run_reruns_from_its_config(synthetic_dataset, cache_dir, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    code, _, err = run(["pretrain", synthetic_dataset, "--out", first, "--cache", cache_dir, "--method", "mae", "--mask-ratio", "0.75",
                        *PRETRAIN[:-2]], capsys)
    assert code == 0, err
    code, _, err = run(["pretrain", "--config", first / "config.json", "--out", second, "--cache", cache_dir, "--quiet"], capsys)
    assert code == 0, err
    assert config_of(first)["pretrain"] == config_of(second)["pretrain"]
    assert config_of(second)["pretrain"]["masking"] == {"block_size": 4, "ratio": 0.75}
    assert_same_weights(first, second)


def test_data_is_needed_from_somewhere(tmp_path, capsys):
    code, _, err = run(["finetune", "--out", tmp_path / "run"], capsys)
    assert code == 2 and "DATA" in err


def test_commands_without_settings_classes_take_their_options_from_the_file(tmp_path, capsys):
    settings = tmp_path / "synth.json"
    settings.write_text(json.dumps({"cases": 2, "seed": 3, "out": str(tmp_path / "ignored")}), encoding="utf-8")
    code, stdout, err = run(["synth", tmp_path / "data", "--config", settings], capsys)
    assert code == 0, err
    assert "wrote 2 synthetic cases" in stdout
    assert not (tmp_path / "ignored").exists()  # where results go is never read from a file
    code, stdout, err = run(["synth", tmp_path / "data3", "--config", settings, "--cases", "3"], capsys)
    assert code == 0 and "wrote 3 synthetic cases" in stdout, err


def test_a_benchmark_recipe_gives_back_its_configuration(tmp_path):
    config = BenchmarkConfig(methods=("scratch", "mae"), fractions=(0.1,), pretrain_steps=7, finetune_steps=9, val_every=3,
                             split_seed=2, transfer="all", pretrain_seed=4)
    saved = {"data": "somewhere", "recipe": config.recipe()}
    rebuilt = Settings(BenchmarkConfig, ConfigFile(tmp_path / "benchmark.json", saved), "recipe",
                       {("methods",): ("scratch", "mae"), ("fractions",): (0.1,)}).build()
    assert rebuilt.recipe() == config.recipe() and rebuilt.methods == config.methods
    assert BenchmarkConfig.from_json(config.to_json()) == config


def test_a_settings_file_changes_a_benchmark_recipe_key_by_key(tmp_path):
    """A benchmark's nested recipes in a settings file are today's defaults with the keys it gives; under a
    saved benchmark's "recipe" key they are read whole, settings added since at the values such runs had."""
    file = ConfigFile(tmp_path / "settings.json", {"finetuning": {"precision": "bf16"}, "pretraining": {"lr": 0.01}})
    config = Settings(BenchmarkConfig, file, "recipe", {}).build()
    assert config.finetuning == dataclasses.replace(FinetuneConfig(), precision="bf16")
    assert config.pretraining == dataclasses.replace(PretrainConfig(), lr=0.01)
    old = {k: v for k, v in FinetuneConfig().to_json().items() if k not in ("keep", "warmup")}  # a recipe from before both
    saved = ConfigFile(tmp_path / "benchmark.json", {"data": "somewhere", "recipe": {"finetuning": old}})
    config = Settings(BenchmarkConfig, saved, "recipe", {}).build()
    assert (config.finetuning.keep, config.finetuning.warmup) == ("best", 0.0)
    file = ConfigFile(tmp_path / "settings.json", {"finetuning": {"precison": "bf16"}})
    with pytest.raises(VectorPoseError, match="unknown setting 'finetuning.precison'"):
        Settings(BenchmarkConfig, file, "recipe", {}).build()


def test_two_ways_to_say_one_thing_are_refused_together(synthetic_dataset, tmp_path, capsys):
    code, _, err = run(["finetune", synthetic_dataset, "--out", tmp_path / "run", "--labeled", "2", "--label-fraction", "0.5"], capsys)
    assert code == 2 and "not both" in err and not (tmp_path / "run").exists()
