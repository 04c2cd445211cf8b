import json
import os
import shutil
import signal
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from vectorpose.benchmark import runner
from vectorpose.benchmark.runner import (BenchmarkConfig, cell_dir, earlier_sittings_s, parse_shard, pretraining_state,
                                         resolve_preprocessing, run_benchmark, sittings_s)
from vectorpose.data.synthetic import LABELS
from vectorpose.benchmark.stats import paired_difference, summarise_values
from vectorpose.errors import TrainingStopped, VectorPoseError
from vectorpose.models.backbone import BackboneConfig
from vectorpose.pretext.masking import MaskingConfig
from vectorpose.pretext.sample import PretextConfig
from vectorpose.training.finetune import FinetuneConfig, SegmentationTask
from vectorpose.training.pretrain import PretrainConfig
from vectorpose.training.resume import load_resume_state

SMALL = BackboneConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1)


def tiny(**overrides) -> BenchmarkConfig:
    settings = dict(
        methods=("scratch", "vectorpose"), fractions=(0.4, 1.0), seeds=2, pretrain_steps=3, finetune_steps=2, val_every=2,
        device="cpu", pretraining=PretrainConfig(batch_size=2, backbone=SMALL, pretext=PretextConfig(patch_size=16), device="cpu"),
        finetuning=FinetuneConfig(batch_size=1, patch_size=(16, 16, 16), log_every=1, device="cpu"),
    )
    return BenchmarkConfig(**(settings | overrides))


@pytest.fixture(scope="module")
def benchmark_data(tmp_path_factory):
    from vectorpose.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("bench")
    return make_synthetic_dataset(root / "data", num_cases=10, seed=1), make_synthetic_dataset(root / "external", num_cases=2, seed=7)


class Counter:
    """Counts the calls of a training function while still running it."""

    def __init__(self, monkeypatch, name):
        self.calls = 0
        real = getattr(runner, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(runner, name, counted)


@pytest.fixture(scope="module")
def finished(benchmark_data, tmp_path_factory):
    data, external = benchmark_data
    out = tmp_path_factory.mktemp("run") / "bench"
    run = run_benchmark(data, out, tiny(), test_data=external, cache_dir=out.parent / "cache", progress=False, command="vectorpose benchmark test")
    return data, external, out, run


def test_writes_every_cell_and_output(finished):
    _, _, out, run = finished
    assert (run.trained_cells, run.trained_pretraining) == (8, 1)
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    keys = {(c["method"], c["fraction"], c["seed"]) for c in results["cells"]}
    assert keys == {(m, f, s) for m in ("scratch", "vectorpose") for f in (0.4, 1.0) for s in (0, 1)}
    for cell in results["cells"]:
        for score in ("test", "external"):
            assert 0 <= cell[score]["mean_dice"] <= 1
            assert set(cell[score]["per_class"]) == set(LABELS.values()) - {"background"}
        assert cell["external"]["num_cases"] == 2
        assert cell["finetune_s"] > 0 and cell["labelled"] >= 1
        assert (cell["init"] is None) == (cell["method"] == "scratch")
    # nested labelled subsets: the same seed sees more cases at a larger fraction
    labelled = {(c["fraction"], c["seed"]): c["labelled"] for c in results["cells"]}
    assert labelled[(0.4, 0)] < labelled[(1.0, 0)]
    for name in ("report.md", "dice_vs_labels.png", "gain_over_scratch.png", "dice_vs_labels_external.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "dice_vs_labels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "vectorpose benchmark test" in report and "Paired difference to `scratch`" in report


def test_statistics_in_results_match_the_cells(finished):
    _, _, out, _ = finished
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    cells = results["cells"]
    for f in (0.4, 1.0):
        dice = {m: {c["seed"]: c["test"]["mean_dice"] for c in cells if c["method"] == m and c["fraction"] == f} for m in ("scratch", "vectorpose")}
        s = results["statistics"]["test"]["summary"][f"vectorpose@{f:g}"]
        ref = summarise_values(list(dice["vectorpose"].values()))
        assert s["mean"] == pytest.approx(np.mean(list(dice["vectorpose"].values())))
        assert s["ci_low"] == pytest.approx(ref.ci_low)
        d = results["statistics"]["test"]["vs_scratch"][f"vectorpose@{f:g}"]
        assert d["mean"] == pytest.approx(np.mean([dice["vectorpose"][k] - dice["scratch"][k] for k in (0, 1)]))
        ref = paired_difference(dice["vectorpose"], dice["scratch"])
        assert (d["ci_low"], d["ci_high"]) == (pytest.approx(ref.summary.ci_low), pytest.approx(ref.summary.ci_high))
        assert d["positive"] == ref.positive


def test_rerun_trains_nothing(finished, monkeypatch):
    data, external, out, _ = finished
    finetunes, pretrains = Counter(monkeypatch, "finetune"), Counter(monkeypatch, "pretrain")
    before = {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")}
    run = run_benchmark(data, out, tiny(), test_data=external, cache_dir=out.parent / "cache", progress=False)
    assert (finetunes.calls, pretrains.calls) == (0, 0)
    assert (run.trained_cells, run.trained_pretraining) == (0, 0)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")} == before


class ResumeRecorder:
    """Records the ``resume`` argument of every fine-tuning call while still running it."""

    def __init__(self, monkeypatch):
        self.resumed: list[bool] = []
        real = runner.finetune

        def recorded(*args, **kwargs):
            self.resumed.append(kwargs.get("resume", False))
            return real(*args, **kwargs)

        monkeypatch.setattr(runner, "finetune", recorded)


def test_cell_cut_off_after_training_finishes_alone(finished, monkeypatch):
    data, external, out, _ = finished
    broken = cell_dir(out, "vectorpose", 0.4, 1)
    (broken / "cell.json").unlink()  # as if killed after training, before scoring finished
    weights = (broken / "model.safetensors").stat().st_mtime_ns
    calls = ResumeRecorder(monkeypatch)
    run = run_benchmark(data, out, tiny(), test_data=external, cache_dir=out.parent / "cache", progress=False)
    assert calls.resumed == [True] and run.trained_cells == 1
    assert (broken / "cell.json").is_file() and (broken / "model.safetensors").stat().st_mtime_ns == weights


def test_cell_of_another_recipe_restarts_from_scratch(finished, monkeypatch):
    data, external, out, _ = finished
    broken = cell_dir(out, "scratch", 1.0, 1)
    (broken / "cell.json").unlink()
    saved = json.loads((broken / "config.json").read_text(encoding="utf-8"))
    saved["finetune"]["lr"] *= 2  # a cut-off attempt with other settings must not be continued
    (broken / "config.json").write_text(json.dumps(saved), encoding="utf-8")
    (broken / "leftover.tmp").write_text("partial")
    calls = ResumeRecorder(monkeypatch)
    run = run_benchmark(data, out, tiny(), test_data=external, cache_dir=out.parent / "cache", progress=False)
    assert calls.resumed == [False] and run.trained_cells == 1
    assert (broken / "cell.json").is_file() and not (broken / "leftover.tmp").exists()


def _drop_setting(path: Path, section: str, key: str) -> None:
    saved = json.loads(path.read_text(encoding="utf-8"))
    part = saved["recipe"] if section == "finetuning" else saved
    del part[section][key]
    path.write_text(json.dumps(saved), encoding="utf-8")


def test_files_from_before_a_setting_existed_still_count_as_the_recipe(finished, monkeypatch):
    """A setting added later, whose default is what runs did before it (``foreground_prob`` here, taken out
    of the saved files as if it had not existed), changes nothing: the folder is accepted, finished cells
    are reused and a cut-off one resumes. A setting whose value before it existed was another (``keep``:
    the best round) makes the cell another recipe."""
    data, external, out, _ = finished
    _drop_setting(out / "benchmark.json", "finetuning", "foreground_prob")
    for cell in out.glob("cells/*/*/cell.json"):
        _drop_setting(cell, "finetune", "foreground_prob")
    cut = cell_dir(out, "vectorpose", 0.4, 1)
    (cut / "cell.json").unlink()
    _drop_setting(cut / "config.json", "finetune", "foreground_prob")
    calls = ResumeRecorder(monkeypatch)
    run = run_benchmark(data, out, tiny(), test_data=external, cache_dir=out.parent / "cache", progress=False)
    assert calls.resumed == [True] and run.trained_cells == 1
    old = cell_dir(out, "scratch", 0.4, 0)
    _drop_setting(old / "cell.json", "finetune", "keep")
    _drop_setting(old / "config.json", "finetune", "keep")
    calls = ResumeRecorder(monkeypatch)
    run = run_benchmark(data, out, tiny(), test_data=external, cache_dir=out.parent / "cache", progress=False)
    assert calls.resumed == [False] and run.trained_cells == 1


def test_cell_cut_off_midway_resumes_bit_exact(benchmark_data, tmp_path, monkeypatch):
    data, _ = benchmark_data
    config = tiny(methods=("scratch",), fractions=(1.0,), seeds=1, finetune_steps=4, val_every=2)
    reference = tmp_path / "reference"
    run_benchmark(data, reference, config, cache_dir=tmp_path / "cache", progress=False)

    real_losses = SegmentationTask.losses

    def stopped_in_step_3(task, batch, step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # the loop finishes the step, saves it and stops
        return real_losses(task, batch, step)

    out = tmp_path / "cut"
    with monkeypatch.context() as patched:
        patched.setattr(SegmentationTask, "losses", stopped_in_step_3)
        with pytest.raises(TrainingStopped, match="resumes from its last checkpoint"):
            run_benchmark(data, out, config, cache_dir=tmp_path / "cache", progress=False)
    cell = cell_dir(out, "scratch", 1.0, 0)
    assert load_resume_state(cell / "resume.pt")["step"] == 3 and not (cell / "cell.json").exists()

    calls = ResumeRecorder(monkeypatch)
    run = run_benchmark(data, out, config, cache_dir=tmp_path / "cache", progress=False)
    assert calls.resumed == [True] and run.trained_cells == 1
    for name in ("model.safetensors", "last.safetensors"):
        a, b = load_file(cell_dir(reference, "scratch", 1.0, 0) / name), load_file(cell / name)
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), name
    done = json.loads((cell / "cell.json").read_text(encoding="utf-8"))
    steps = [json.loads(line)["step"] for line in (cell / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert steps == [1, 2, 3, 4] and done["finetune_s"] > 0


def test_sittings_end_where_the_clock_goes_back(tmp_path):
    rows = [{"step": 10, "elapsed_s": 1.0}, {"step": 20, "elapsed_s": 2.5, "val/dice": 0.1}, {"step": 20, "val/dice": 0.1},
            {"step": 30, "elapsed_s": 0.5}, {"step": 40, "elapsed_s": 4.0}, {"step": 50, "elapsed_s": 0.25}, {"step": 60, "elapsed_s": 1.0}]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n", encoding="utf-8")
    assert earlier_sittings_s(metrics) == pytest.approx(2.5 + 4.0)
    assert sittings_s(metrics) == pytest.approx([2.5, 4.0, 1.0])
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]), encoding="utf-8")
    assert earlier_sittings_s(metrics) == 0.0 and sittings_s(metrics) == pytest.approx([2.5])


def test_pretraining_time_adds_up_every_sitting(tmp_path):
    run = tmp_path / "pretrain"
    run.mkdir()
    (run / "model.json").write_text(json.dumps({"step": 60, "backbone": "unet", "patch_size": [8, 8, 8]}), encoding="utf-8")
    rows = [{"step": 20, "elapsed_s": 2.0, "total": 3.0}, {"step": 40, "elapsed_s": 1.5, "total": 2.0},
            {"step": 60, "elapsed_s": 3.0, "total": 1.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    info = runner._pretraining_info(run, tmp_path / "bench")
    assert info["wall_s"] == pytest.approx(2.0 + 3.0) and info["steps"] == 60 and info["supplied"]
    assert info["final_losses"] == {"total": 1.0}


def test_added_seed_trains_only_new_cells(benchmark_data, tmp_path, monkeypatch):
    data, _ = benchmark_data
    out = tmp_path / "bench"
    config = tiny(methods=("scratch",), fractions=(1.0,), seeds=1)
    run_benchmark(data, out, config, cache_dir=tmp_path / "cache", progress=False)
    finetunes = Counter(monkeypatch, "finetune")
    run = run_benchmark(data, out, tiny(methods=("scratch",), fractions=(1.0,), seeds=2), cache_dir=tmp_path / "cache", progress=False)
    assert finetunes.calls == 1 and len(run.cells) == 2


def test_a_bf16_recipe_reaches_every_cell_and_the_report(benchmark_data, finished, tmp_path):
    data, _ = benchmark_data
    out = tmp_path / "bench"
    config = tiny(methods=("scratch",), fractions=(1.0,), seeds=1, finetuning=replace(tiny().finetuning, precision="bf16"))
    run_benchmark(data, out, config, cache_dir=tmp_path / "cache", progress=False)
    cell = json.loads((cell_dir(out, "scratch", 1.0, 0) / "config.json").read_text(encoding="utf-8"))
    assert cell["finetune"]["precision"] == "bf16"
    assert "bfloat16" in (out / "report.md").read_text(encoding="utf-8")
    assert "bfloat16" not in (finished[2] / "report.md").read_text(encoding="utf-8")


def test_shards_split_the_cells_and_the_last_one_writes_the_report(benchmark_data, tmp_path, monkeypatch):
    data, _ = benchmark_data
    out = tmp_path / "bench"
    config = tiny(methods=("scratch",), fractions=(1.0,), seeds=3)
    trained = []
    real = runner.finetune

    def recorded(data, path, fconfig, **kwargs):
        trained.append(fconfig.seed)
        return real(data, path, fconfig, **kwargs)

    monkeypatch.setattr(runner, "finetune", recorded)
    first = run_benchmark(data, out, config, cache_dir=tmp_path / "cache", progress=False, shard=(0, 2))
    assert trained == [0, 2]  # cells 0 and 2 of the three, in order
    assert first.statistics is None and first.unfinished == 1 and len(first.cells) == 2
    assert not (out / "report.md").exists() and not (out / "results.json").exists()
    second = run_benchmark(data, out, config, cache_dir=tmp_path / "cache", progress=False, shard=(1, 2))
    assert trained == [0, 2, 1]
    assert second.unfinished == 0 and [c["seed"] for c in second.cells] == [0, 1, 2]
    assert (out / "report.md").is_file()
    assert [c["seed"] for c in json.loads((out / "results.json").read_text())["cells"]] == [0, 1, 2]
    again = run_benchmark(data, out, config, cache_dir=tmp_path / "cache", progress=False)
    assert trained == [0, 2, 1] and again.trained_cells == 0


def test_cells_planned_on_two_kinds_of_machine_are_not_compared(benchmark_data, tmp_path, monkeypatch):
    # the automatic batch follows the device's voxel budget; a second machine with a smaller budget is
    # simulated by patching the budget the fine-tuning plan reads
    from vectorpose.data.planning import VoxelBudget
    from vectorpose.training import finetune as finetune_module

    data, _ = benchmark_data
    out = tmp_path / "bench"
    config = tiny(methods=("scratch",), fractions=(1.0,), seeds=2,
                  finetuning=FinetuneConfig(batch_size=None, patch_size=(16, 16, 16), log_every=1, device="cpu"))
    run_benchmark(data, out, config, cache_dir=tmp_path / "cache", progress=False, shard=(0, 2))
    monkeypatch.setattr(finetune_module, "budget_for", lambda device_type: VoxelBudget(patch=16**3, step=2 * 16**3))
    with pytest.raises(VectorPoseError, match=r"different plans \(scratch seed 0 .*batch 8.*; scratch seed 1 .*batch 2"):
        run_benchmark(data, out, config, cache_dir=tmp_path / "cache", progress=False, shard=(1, 2))
    assert not (out / "report.md").exists() and not (out / "results.json").exists()
    batches = [json.loads((cell_dir(out, "scratch", 1.0, s) / "plan.json").read_text())["batch_size"] for s in (0, 1)]
    assert batches == [8, 2]  # 16^3 patches: 8 fit the CPU's step budget (at most 8), 2 the patched one


def test_a_recipe_giving_the_batch_reuses_the_cells_whose_automatic_batch_was_the_same(benchmark_data, tmp_path, monkeypatch):
    data, _ = benchmark_data
    auto = tiny(methods=("scratch",), fractions=(1.0,), seeds=1,
                finetuning=FinetuneConfig(batch_size=None, patch_size=(16, 16, 16), log_every=1, device="cpu"))
    run_benchmark(data, tmp_path / "auto", auto, cache_dir=tmp_path / "cache", progress=False)
    planned = json.loads((cell_dir(tmp_path / "auto", "scratch", 1.0, 0) / "plan.json").read_text())["batch_size"]
    assert planned == 8  # 16^3 patches: the CPU's step budget holds more than the most allowed, 8
    finetunes = Counter(monkeypatch, "finetune")
    for batch, trained in ((8, 0), (2, 1)):
        out = tmp_path / f"batch-{batch}"
        shutil.copytree(tmp_path / "auto" / "cells", out / "cells")
        run = run_benchmark(data, out, replace(auto, finetuning=replace(auto.finetuning, batch_size=batch)),
                            cache_dir=tmp_path / "cache", progress=False)
        assert run.trained_cells == trained
    assert finetunes.calls == 1


def test_shards_refuse_unfinished_pretraining(benchmark_data, tmp_path):
    data, _ = benchmark_data
    with pytest.raises(VectorPoseError, match="pretraining of vectorpose is not finished"):
        run_benchmark(data, tmp_path / "bench", tiny(), cache_dir=tmp_path / "cache", progress=False, shard=(0, 2))
    assert not (tmp_path / "bench" / "cells").exists()


@pytest.mark.parametrize("text, expected", [("0/2", (0, 2)), ("2/3", (2, 3)), ("0/1", (0, 1))])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1", "a/2", "1/0", ""])
def test_parse_shard_rejects(text):
    with pytest.raises(ValueError, match="I/N"):
        parse_shard(text)


def test_refuses_changed_recipe(benchmark_data, tmp_path):
    data, _ = benchmark_data
    out = tmp_path / "bench"
    run_benchmark(data, out, tiny(methods=("scratch",), fractions=(1.0,), seeds=1), cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(VectorPoseError, match="finetune_steps"):
        run_benchmark(data, out, tiny(methods=("scratch",), fractions=(1.0,), seeds=1, finetune_steps=3), progress=False)


def test_refuses_foreign_folder(benchmark_data, tmp_path):
    data, _ = benchmark_data
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "mine.txt").write_text("keep me")
    with pytest.raises(VectorPoseError, match="already holds other files"):
        run_benchmark(data, tmp_path / "results", tiny(), progress=False)
    assert (tmp_path / "results" / "mine.txt").read_text(encoding="utf-8") == "keep me"


def test_supplied_pretraining_is_used_not_retrained(benchmark_data, finished, tmp_path, monkeypatch):
    data, _, out, _ = finished
    pretrains = Counter(monkeypatch, "pretrain")
    config = tiny(methods=("scratch", "vectorpose"), fractions=(1.0,), seeds=1, pretrained={"vectorpose": str(out / "pretrain" / "vectorpose")})
    run = run_benchmark(data, tmp_path / "b2", config, cache_dir=tmp_path / "cache", progress=False)
    assert pretrains.calls == 0 and run.pretraining["vectorpose"]["supplied"]


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"methods": ()}, "at least one"),
        ({"methods": ("scratch", "nope")}, "unknown method"),
        ({"methods": ("scratch", "scratch")}, "repeat"),
        ({"fractions": (0.0, 1.0)}, "fractions"),
        ({"fractions": (1.5,)}, "fractions"),
        ({"seeds": 0}, "seeds"),
        ({"finetune_steps": 0}, "finetune_steps"),
        ({"pretrained": {"genesis": "x"}}, "not among the methods"),
        ({"pretrained": {"scratch": "x"}}, "does not pretrain"),
    ],
)
def test_config_validation(overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny(**overrides)


def test_methods_share_one_recipe():
    config = tiny()
    pre = {m: config.pretrain_config(m).to_json() for m in ("vectorpose", "genesis")}
    assert {k: v for k, v in pre["vectorpose"].items() if k != "method"} == {k: v for k, v in pre["genesis"].items() if k != "method"}
    ft = config.finetune_config(0.4, 1)
    assert ft.backbone == SMALL and ft.label_fraction == 0.4 and ft.seed == 1 and ft.steps == 2


def test_mae_joins_the_study(benchmark_data, tmp_path, monkeypatch):
    """scratch, genesis and mae in one benchmark: mae pretrains with its masking, which the recipe then holds."""
    data, _ = benchmark_data
    out = tmp_path / "bench"
    config = tiny(methods=("scratch", "genesis", "mae"), fractions=(1.0,), seeds=1)
    run = run_benchmark(data, out, config, cache_dir=tmp_path / "cache", progress=False)
    assert sorted(c["method"] for c in run.cells) == ["genesis", "mae", "scratch"]
    saved = json.loads((out / "pretrain" / "mae" / "config.json").read_text(encoding="utf-8"))["pretrain"]
    assert saved["method"] == "mae" and saved["masking"] == MaskingConfig().to_json()
    assert "masking" not in json.loads((out / "pretrain" / "genesis" / "config.json").read_text(encoding="utf-8"))["pretrain"]
    assert "mae" in (out / "report.md").read_text(encoding="utf-8")
    pretrains = Counter(monkeypatch, "pretrain")
    run_benchmark(data, out, config, cache_dir=tmp_path / "cache", progress=False)
    assert pretrains.calls == 0
    other_masking = replace(config.pretraining, masking=MaskingConfig(block_size=8))
    with pytest.raises(VectorPoseError, match="pretraining"):
        run_benchmark(data, out, replace(config, pretraining=other_masking), progress=False)


def test_the_recipe_holds_the_masking_only_with_mae():
    assert "masking" not in tiny().recipe()["pretraining"]
    assert tiny(methods=("scratch", "mae")).recipe()["pretraining"]["masking"] == {"block_size": 4, "ratio": 0.6}
    bad = replace(tiny().pretraining, masking=MaskingConfig(block_size=5))
    tiny(pretraining=bad)  # no method masks, so the block is never used
    with pytest.raises(ValueError, match="must divide the patch size 16"):
        tiny(methods=("scratch", "mae"), pretraining=bad)


def test_cli_benchmark_rejects_bad_options(benchmark_data, tmp_path, capsys):
    from vectorpose.cli import main

    data, _ = benchmark_data
    with pytest.raises(SystemExit) as exc:
        main(["benchmark", str(data), "--out", str(tmp_path / "b"), "--methods", "scratch,magic"])
    assert exc.value.code == 2 and "unknown method 'magic'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["benchmark", str(data), "--out", str(tmp_path / "b"), "--pretrained", "vectorpose"])
    assert exc.value.code == 2 and "METHOD=RUN" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["benchmark", str(tmp_path / "missing"), "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and "missing" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()
    with pytest.raises(SystemExit) as exc:
        main(["benchmark", str(data), "--out", str(tmp_path / "b"), "--shard", "2/2"])
    assert exc.value.code == 2 and "0 <= I < N" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_pretraining_state(finished, tmp_path):
    data, _, out, _ = finished
    run = tmp_path / "pre"
    shutil.copytree(out / "pretrain" / "vectorpose", run)
    config = resolve_preprocessing(data, out, tiny(), out.parent / "cache", False).pretrain_config("vectorpose")
    assert pretraining_state(run, config, data) == "done"
    meta = json.loads((run / "model.json").read_text(encoding="utf-8"))
    (run / "model.json").write_text(json.dumps({**meta, "step": 1}))  # cut off after a checkpoint
    assert pretraining_state(run, config, data) == "resume"
    (run / "resume.pt").unlink()
    assert pretraining_state(run, config, data) == "start"
    with pytest.raises(VectorPoseError, match="other settings"):
        pretraining_state(run, replace(config, lr=0.5), data)
    with pytest.raises(VectorPoseError, match="other settings or data"):
        pretraining_state(run, config, tmp_path)
    assert pretraining_state(tmp_path / "absent", config, data) == "start"
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "weights.bin").write_bytes(b"mine")
    with pytest.raises(VectorPoseError, match="not a pretraining run"):
        pretraining_state(tmp_path / "foreign", config, data)


def test_cell_scored_under_older_metric_conventions_is_rescored_without_training(finished, monkeypatch):
    data, external, out, _ = finished
    old = cell_dir(out, "scratch", 0.4, 0)
    cell = json.loads((old / "cell.json").read_text(encoding="utf-8"))
    scores = dict(cell["test"])
    del cell["test"]["metrics_version"]  # as written before the version was recorded
    (old / "cell.json").write_text(json.dumps(cell), encoding="utf-8")
    finetunes, evaluations = Counter(monkeypatch, "finetune"), Counter(monkeypatch, "evaluate")
    run = run_benchmark(data, out, tiny(), test_data=external, cache_dir=out.parent / "cache", progress=False)
    assert finetunes.calls == 0
    assert evaluations.calls == 2  # that cell's test split and external set, no other cell's
    rescored = json.loads((old / "cell.json").read_text(encoding="utf-8"))["test"]
    assert rescored == {**scores, "metrics_version": runner.METRICS_VERSION}
    assert sum(c["test"]["metrics_version"] == runner.METRICS_VERSION for c in run.cells) == len(run.cells)


def test_cell_from_before_the_class_verdicts_gets_them_from_its_metrics_without_training(finished, monkeypatch):
    data, external, out, _ = finished
    old = cell_dir(out, "vectorpose", 1.0, 0)
    cell = json.loads((old / "cell.json").read_text(encoding="utf-8"))
    for key in ("converged", "late_gain", "collapsed", "rising"):
        del cell[key]
    (old / "cell.json").write_text(json.dumps(cell), encoding="utf-8")
    finetunes = Counter(monkeypatch, "finetune")
    run = run_benchmark(data, out, tiny(), test_data=external, cache_dir=out.parent / "cache", progress=False)
    assert finetunes.calls == 0
    # the verdict the fine-tuning run itself wrote at its end, from the same metrics.jsonl
    written = json.loads((old / "convergence.json").read_text(encoding="utf-8"))
    row = next(c for c in run.cells if (c["method"], c["fraction"], c["seed"]) == ("vectorpose", 1.0, 0))
    assert {k: row[k] for k in ("converged", "late_gain", "collapsed", "rising")} == {k: written[k] for k in ("converged", "late_gain", "collapsed", "rising")}


def test_changed_external_set_rescores_without_training(finished, monkeypatch):
    """Runs last in this file: it drops the external scores of the shared benchmark folder."""
    data, _, out, _ = finished
    finetunes = Counter(monkeypatch, "finetune")
    run = run_benchmark(data, out, tiny(), test_data=None, cache_dir=out.parent / "cache", progress=False)
    assert finetunes.calls == 0
    assert all(c["external"] is None and c["external_data"] is None for c in run.cells)
    assert not list(out.rglob("external_metrics.json"))
    assert not (out / "dice_vs_labels_external.png").exists() and "External test data" not in (out / "report.md").read_text(encoding="utf-8")


def test_fixed_split_and_labelled_counts(benchmark_data, tmp_path):
    data, _ = benchmark_data
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"test": ["synth_000", "synth_001"]}))
    out = tmp_path / "b"
    config = tiny(fractions=None, labelled=(1, 3), seeds=1, split=str(split))
    run = run_benchmark(data, out, config, cache_dir=tmp_path / "cache", progress=False)
    assert {(c["method"], c["labelled"]) for c in run.cells} == {(m, n) for m in ("scratch", "vectorpose") for n in (1, 3)}
    assert (out / "cells" / "scratch" / "n3-s0" / "cell.json").is_file()
    for c in run.cells:
        assert c["test"]["num_cases"] == 2
        # the 8 others: ceil(0.1 * 8) = 1 validation case, a pool of 7
        assert c["fraction"] == pytest.approx(c["labelled"] / 7)
    cell_split = json.loads((out / "cells" / "scratch" / "n1-s0" / "split.json").read_text(encoding="utf-8"))
    assert cell_split["test"] == ["synth_000", "synth_001"] and len(cell_split["validation"]) == 1
    pre = json.loads((out / "pretrain" / "vectorpose" / "config.json").read_text(encoding="utf-8"))
    assert pre["pretrain"]["split"] == str(split)
    assert not {"synth_000", "synth_001"} & set(pre["cases"])
    # every cell and the pretraining share the spacing the benchmark resolved
    spacing = json.loads((out / "benchmark.json").read_text(encoding="utf-8"))["recipe"]["pretraining"]["spacing"]
    assert spacing != "auto" and all(c["finetune"]["spacing"] == spacing for c in run.cells)
    assert "2 labelled" not in (out / "report.md").read_text(encoding="utf-8") and "3 labelled" in (out / "report.md").read_text(encoding="utf-8")


def test_supplied_pretraining_must_share_the_preprocessing(benchmark_data, finished, tmp_path):
    data, _, out, _ = finished
    other = tiny(pretraining=replace(tiny().pretraining, spacing="2,2,2"))
    with pytest.raises(VectorPoseError, match="pretrained at spacing"):
        run_benchmark(data, tmp_path / "b", replace(other, pretrained={"vectorpose": str(out / "pretrain" / "vectorpose")}),
                      cache_dir=out.parent / "cache", progress=False)
