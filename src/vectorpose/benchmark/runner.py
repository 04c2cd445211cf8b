"""Running the label-efficiency benchmark: pretrain each method once, fine-tune every cell, evaluate.

A cell is one (method, amount of labels, seed); the amount is a label fraction of the training pool
(``--fractions``) or a count of labelled cases (``--labelled``). Every cell of an amount and seed
fine-tunes on the same labelled cases with the same recipe (the fine-tuning command's defaults), so
methods differ only in their pretext objective. A fixed test split (``--split``, e.g. BTCV's
``paper_split``) replaces the seeded one, and pretraining then never reads its test images.

Every cell and every pretraining run use one preprocessing, resolved before anything runs from the
images of the cases outside the test split, as pretraining would resolve it: the spacing and, for CT,
the intensity window (without labels: the voxels above -500 HU). Layout of ``out``::

    benchmark.json                    the recipe; a rerun must use the same one
    pretrain/<method>/                pretraining runs (skipped when finished, resumed when cut off)
    cells/<method>/f<fraction>-s<seed>/   (n<count>-s<seed>/ with --labelled)
        model.*, split.json, ...      the fine-tuning run
        test_metrics.json             per-case Dice / HD95 on the recorded test split
        external_metrics.json         the same on --test-data (every labelled case)
        cell.json                     the cell's summary, written last: the cell is finished
    results.json, report.md, *.png   (see :mod:`vectorpose.benchmark.report`)

A cell without ``cell.json`` was interrupted: it resumes from its last checkpoint (``resume.pt``, bit for
bit as if never stopped) when its saved fine-tuning settings and initialisation are this cell's, and
restarts from scratch otherwise, so a rerun of the same command finishes exactly the missing work.

Several processes or machines can share one benchmark folder: with ``shard=(i, n)`` a process trains
only the cells ``i, i + n, i + 2n, ...`` of :meth:`BenchmarkConfig.cells`' order, once every pretraining
run is finished (or supplied), and whichever shard finds every cell finished writes the report.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..data.ct_window import parse_ct_window, resolve_ct_window
from ..data.datasets import Dataset, load_dataset
from ..data.planning import budget_for
from ..data.preprocessing import PreprocessingConfig, preprocess_at_spacing
from ..data.resampling import parse_spacing, same_spacing
from ..data.splits import SPLIT_HELP, cases_in_split, make_split, read_test_split, training_part
from ..data.validation import check_crop_fits, check_label_values, check_patch_fits
from ..devices import resolve_device
from ..errors import DataError, DatasetError, TrainingStopped, VectorPoseError
from ..inference.evaluate import evaluate
from ..inference.metrics import METRICS_VERSION
from ..methods import get_method
from ..models.files import load_model
from ..settings import nested_configuration, setting
from ..training.convergence import convergence, validation_curves
from ..training.finetune import PLAN_FILE, FinetuneConfig, finetune
from ..training.pretrain import PretrainConfig, pretrain
from ..training.resume import RESUME_FILE
from ..training.run import CONFIG_FILE, METRICS_FILE
from ..training.transfer import TRANSFER_MODES
from ..utils.files import write_json

BENCHMARK_FILE = "benchmark.json"
CELL_FILE = "cell.json"
# What a benchmark folder may hold before its first run: pretraining runs started by hand are picked up.
OWN_NAMES = {BENCHMARK_FILE, "pretrain", "cells"}
DEFAULT_METHODS = ("scratch", "genesis", "vp", "bfr", "vectorpose")
DEFAULT_FRACTIONS = (0.05, 0.1, 0.25, 1.0)


@dataclass(frozen=True)
class BenchmarkConfig:
    """What a benchmark runs. ``seeds`` is a count: seeds ``0 .. seeds-1``.

    ``pretraining`` and ``finetuning`` are the recipes (backbone, patch, optimiser, ...); the fields
    here override their method, steps, seeds, split and placement per run, and the fine-tuning
    backbone is always the pretraining one, so a scratch network is the same network as a
    pretrained one. ``device`` and ``workers`` say where it runs, not what it computes, so they may
    change between a run and its resumption; everything else must stay the same.
    """

    methods: tuple[str, ...] = setting(DEFAULT_METHODS, "Comma-separated methods to compare: any of scratch, genesis, mae, vp, bfr, vectorpose.")
    fractions: tuple[float, ...] | None = setting(DEFAULT_FRACTIONS, "Comma-separated labelled fractions of the training pool.")
    labelled: tuple[int, ...] | None = setting(None, "Comma-separated counts of labelled training cases, instead of --fractions "
                                                    "(e.g. 2,5,10).", excludes="fractions")
    seeds: int = setting(3, "Seeds per amount of labels (seeds 0..N-1; each draws its own labelled cases).")
    split: str | None = setting(None, SPLIT_HELP)
    pretrain_steps: int = setting(2000, "Pretraining steps of every method.")
    finetune_steps: int = setting(1000, "Fine-tuning steps of every cell.")
    val_every: int = setting(100, "Steps between validation rounds while fine-tuning.")
    split_seed: int = setting(0, "Seed of the fixed test / validation split.")
    transfer: str = setting("encoder", "What fine-tuning loads.", choices=TRANSFER_MODES)
    pretrain_seed: int = setting(0, "Seed of every pretraining run.")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    workers: int = setting(0, "DataLoader worker processes.")
    pretrained: dict[str, str] = field(default_factory=dict)
    pretraining: PretrainConfig = nested_configuration(PretrainConfig)
    finetuning: FinetuneConfig = nested_configuration(FinetuneConfig)

    def __post_init__(self):
        object.__setattr__(self, "methods", tuple(self.methods))
        if self.labelled is not None:
            object.__setattr__(self, "labelled", tuple(int(n) for n in self.labelled))
            object.__setattr__(self, "fractions", None)
        else:
            object.__setattr__(self, "fractions", tuple(float(f) for f in self.fractions or DEFAULT_FRACTIONS))
        if not self.methods:
            raise ValueError("methods must name at least one method")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must not repeat, got {self.methods}")
        for m in self.methods:
            get_method(m)
        if self.fractions is not None and (not self.fractions or any(not 0 < f <= 1 for f in self.fractions)):
            raise ValueError(f"fractions must lie in (0, 1], got {self.fractions}")
        if self.labelled is not None and (not self.labelled or min(self.labelled) < 1):
            raise ValueError(f"labelled counts must be positive, got {self.labelled}")
        if len(set(self.amounts)) != len(self.amounts):
            raise ValueError(f"amounts of labels must not repeat, got {self.amounts}")
        for name in ("seeds", "pretrain_steps", "finetune_steps", "val_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in self.pretrained:
            if name not in self.methods:
                raise ValueError(f"a pretrained run is given for {name!r}, which is not among the methods {self.methods}")
            if not get_method(name).pretrains:
                raise ValueError(f"method {name!r} does not pretrain; it takes no pretrained run")
        for m in self.methods:
            if get_method(m).pretrains:
                self.pretrain_config(m)  # e.g. a mask block that does not divide the patch
        self.finetune_config(self.amounts[0], 0)  # the recipe must be valid before anything runs

    @property
    def amounts(self) -> tuple[float | int, ...]:
        """The amounts of labels: fractions (floats) or, with ``labelled``, counts (ints)."""
        return self.labelled if self.labelled is not None else self.fractions  # type: ignore[return-value]

    def pretrain_config(self, method: str) -> PretrainConfig:
        return replace(self.pretraining, method=method, steps=self.pretrain_steps, seed=self.pretrain_seed, device=self.device,
                       workers=self.workers, split=self.split, split_seed=self.split_seed, test_fraction=self.finetuning.test_fraction)

    def finetune_config(self, amount: float | int, seed: int) -> FinetuneConfig:
        count = isinstance(amount, int)
        return replace(self.finetuning, steps=self.finetune_steps, label_fraction=None if count else amount,
                       labelled=amount if count else None, seed=seed, split_seed=self.split_seed, split=self.split,
                       transfer=self.transfer, val_every=self.val_every, device=self.device, workers=self.workers,
                       backbone=self.pretraining.backbone, spacing=self.pretraining.spacing, ct_window=self.pretraining.ct_window)

    def with_preprocessing(self, spacing: str, ct_window: str) -> BenchmarkConfig:
        """This benchmark with the pretraining's ``spacing`` and ``ct_window`` settings (which every cell uses too)."""
        return replace(self, pretraining=replace(self.pretraining, spacing=spacing, ct_window=ct_window))

    def to_json(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("pretraining", "finetuning")}
        d.update(methods=list(self.methods), fractions=None if self.fractions is None else list(self.fractions),
                 labelled=None if self.labelled is None else list(self.labelled), pretraining=self.pretraining.to_json(),
                 finetuning=self.finetuning.to_json())
        return d

    @classmethod
    def from_json(cls, d: dict) -> BenchmarkConfig:
        """From ``to_json`` or a saved ``recipe`` (whose recipes leave out what each run sets itself)."""
        d = dict(d)
        d["pretraining"] = PretrainConfig.from_json(d["pretraining"])
        d["finetuning"] = FinetuneConfig.from_json(d["finetuning"])
        return cls(**d)

    def recipe(self) -> dict:
        """The settings that decide the numbers (for the resumption check and the report)."""
        d = {k: v for k, v in asdict(self).items()
             if k not in ("methods", "fractions", "labelled", "seeds", "device", "workers", "pretrained")}
        if self.split is None:
            d.pop("split")  # the recipe of a benchmark without a fixed split stays what it was
        d["pretraining"] = _without_placement(self.pretrain_config("vectorpose").to_json())
        d["finetuning"] = finetuning_recipe(self.finetune_config(1.0, 0).to_json())
        for key in CELL_SETTINGS:
            d["pretraining"].pop(key, None)
        for key in ("split_seed", "test_fraction"):  # the benchmark's own split settings, in the recipe already
            d["pretraining"].pop(key, None)
        if any(get_method(m).masked_input for m in self.methods):
            # only then: the recipe of a benchmark without mae stays what it was before mae existed
            d["pretraining"]["masking"] = self.pretraining.masking.to_json()
        return d

    def cells(self) -> list[tuple[str, float, int]]:
        return [(m, a, s) for a in self.amounts for s in range(self.seeds) for m in self.methods]


def cell_dir(out: Path, method: str, amount: float | int, seed: int) -> Path:
    return out / "cells" / method / (f"n{amount}-s{seed}" if isinstance(amount, int) else f"f{amount:g}-s{seed}")


def _without_placement(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("device", "workers")}


# what a recipe leaves out: the settings each run sets itself
CELL_SETTINGS = ("method", "seed", "label_fraction", "labelled", "split")


def _todays_finetune(d: dict) -> dict | None:
    """Saved fine-tuning settings as today's code writes them, or ``None`` if they do not read: through
    ``FinetuneConfig.from_json``, a setting added since reads back as the value runs had before it existed,
    so a cell or benchmark made before then still counts as the same recipe when that value is today's."""
    try:
        return FinetuneConfig.from_json(d).to_json()
    except (TypeError, ValueError, KeyError):
        return None


def finetuning_recipe(d: dict) -> dict | None:
    """The recipe's part of fine-tuning settings ``d`` (a config's or a saved recipe's), as today's code writes it."""
    today = _todays_finetune(d)
    return None if today is None else {k: v for k, v in _without_placement(today).items() if k not in CELL_SETTINGS}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def finished_cell(path: Path, config: BenchmarkConfig, amount: float | int, seed: int, init: Path | None) -> dict | None:
    """The cell's summary if it finished with this recipe and initialisation, else ``None``."""
    cell = _read_json(path / CELL_FILE)
    if cell is None:
        return None
    expected = _without_placement(config.finetune_config(amount, seed).to_json())
    saved = _todays_finetune(cell["finetune"]) if isinstance(cell.get("finetune"), dict) else None
    if saved is None or cell.get("init") != _init_name(init):
        return None
    saved = _without_placement(saved)
    if saved != expected and _as_planned(saved, cell.get("plan")) != expected:
        return None
    if not {"converged", "collapsed", "rising"} <= cell.keys() and (path / METRICS_FILE).is_file():  # a cell from before a verdict's part was recorded
        curve, classes = validation_curves(path / METRICS_FILE)
        verdict = convergence(curve, cell["finetune"]["steps"], classes=classes)
        for key, value in (("converged", verdict.converged), ("late_gain", verdict.late_gain),
                           ("collapsed", list(verdict.collapsed)), ("rising", list(verdict.rising))):
            cell.setdefault(key, value)
    return cell


def _as_planned(settings: dict, plan: dict | None) -> dict:
    """Fine-tuning ``settings`` with an automatic patch or batch read as what the run's ``plan`` chose, so
    that a recipe giving them explicitly (to share a benchmark across kinds of machine) finds the cells
    whose automatic plan came to the same values."""
    if not plan:
        return settings
    return {**settings, "patch_size": settings["patch_size"] or plan["patch_size"], "batch_size": settings["batch_size"] or plan["batch_size"]}


def _init_name(init: Path | None) -> str | None:
    return str(init.resolve()) if init is not None else None


def pretraining_state(path: Path, config: PretrainConfig, data: Path) -> str:
    """``"done"``, ``"resume"`` (cut off after a checkpoint) or ``"start"`` for a pretraining run of
    ``config`` on ``data`` in ``path``, however the run was started (by hand or by a benchmark).

    A folder holding a run with other settings is refused rather than overwritten.
    """
    saved = _read_json(path / "config.json")
    if saved is None:
        if path.is_dir() and any(path.iterdir()):
            raise VectorPoseError(f"{path}: holds files that are not a pretraining run; remove them or pass the run with --pretrained")
        return "start"
    same = saved.get("data") == str(data.resolve()) and _without_placement(saved.get("pretrain", {})) == _without_placement(config.to_json())
    if not same:
        raise VectorPoseError(f"{path}: holds a pretraining run with other settings or data; remove it or pass it with --pretrained")
    model = _read_json(path / "model.json")
    if model is not None and model.get("step") == config.steps:
        return "done"
    # resume.pt must come from the same placement too, since pretrain() checks the whole config.
    return "resume" if (path / "resume.pt").is_file() and saved["pretrain"] == config.to_json() else "start"


def _summary(result: dict) -> dict:
    return {"num_cases": result["num_cases"], "metrics_version": result["metrics_version"], "mean_dice": result["mean_dice"],
            "mean_hd95": result["mean_hd95"], "per_class": result["per_class"], "confusion": result["confusion"]}


def _scored_now(cell: dict) -> bool:
    """Whether the cell's test-split scores follow today's metric conventions."""
    return "test" in cell and cell["test"].get("metrics_version") == METRICS_VERSION


def _check_data(data: Path, test_data: Path | None, config: BenchmarkConfig, cache_dir, progress: bool) -> str:
    """Everything the benchmark will read, checked before anything runs, every bad file listed at once:
    both datasets' files, label values, each amount of labels, and the pretraining and fine-tuning patches.
    Returns the data's modality."""
    dataset = load_dataset(data)
    if not dataset.labelled:
        raise DataError(data, "no labelled cases (the benchmark fine-tunes and evaluates on labels)")
    if dataset.modality is None:
        raise DataError(data, "modality unknown: dataset.json names none")
    external = None
    if test_data is not None:
        external = load_dataset(test_data)
        if not external.labelled:
            raise DataError(test_data, "no labelled cases to evaluate")
        if external.labels and external.labels != dataset.labels:
            raise DataError(test_data, f"declares labels {external.labels}, but {data} declares {dataset.labels}")
        if external.modality is not None and external.modality != dataset.modality:
            raise DataError(test_data, f"is {external.modality} data, but {data} is {dataset.modality}")
    preprocessing = PreprocessingConfig(modality=dataset.modality)
    window = parse_ct_window(config.pretraining.ct_window)
    if dataset.modality == "CT" and window != "auto":
        preprocessing = replace(preprocessing, ct_window=window)
    checked = [dataset]
    if external is not None:
        checked.append(Dataset(external.root, external.labelled, external.modality, external.labels))
    volumes, problems = [], []
    for ds in checked:
        try:
            # external test cases are scored on their own grids; only the training data's arrays need checking at the run's spacing
            spacing = config.pretraining.spacing if ds is dataset else "native"
            volumes.append(preprocess_at_spacing(ds, preprocessing, spacing, cache_dir, progress=progress)[0])
        except DatasetError as exc:
            problems.extend(exc.problems)
    if problems:
        raise DatasetError(problems)
    own = volumes[0]
    check_label_values([v for vs in volumes for v in vs if v.label_path is not None], dataset.labels)
    pretext = config.pretraining.pretext
    check_crop_fits(pretext.patch_size, pretext.scale_range[0], [v.shape for v in own], data)
    shape_of = {v.case_id: v.shape for v in own}
    ft = config.finetuning
    test, train = read_test_split(dataset.root, config.split) if config.split else (None, None)
    ids = [c.case_id for c in cases_in_split(dataset.labelled, test, train)]
    for amount in config.amounts:
        count = isinstance(amount, int)
        for seed in range(config.seeds):
            try:
                split = make_split(ids, config.split_seed, seed, None if count else amount, amount if count else None, ft.test_fraction,
                                   ft.validation_fraction, test)
            except ValueError as exc:
                raise DataError(data, str(exc)) from None
            if ft.patch_size is not None:
                shapes = [shape_of[i] for i in split.labelled + split.validation]
                check_patch_fits(ft.patch_size, shapes, config.pretraining.backbone.size_divisor, data)
    return dataset.modality


def resolve_preprocessing(data: Path, out: Path, config: BenchmarkConfig, cache_dir, progress: bool) -> BenchmarkConfig:
    """``config`` with the spacing and CT window every run of the benchmark uses, made explicit.

    They are resolved as pretraining resolves them, from the images of the cases outside the test
    split, with the voxel budget of the benchmark's device; a benchmark folder that already resolved
    them keeps its values, so a rerun on another device finishes the same study.
    """
    spacing, window = config.pretraining.spacing, config.pretraining.ct_window
    saved = (_read_json(out / BENCHMARK_FILE) or {}).get("recipe", {}).get("pretraining", {})
    if parse_spacing(spacing) == "auto" and saved.get("spacing") not in (None, "auto"):
        spacing = saved["spacing"]
    if parse_ct_window(window) == "auto" and saved.get("ct_window") not in (None, "auto"):
        window = saved["ct_window"]
    dataset = load_dataset(data)
    if dataset.modality is None:
        raise DataError(data, "modality unknown: dataset.json names none")
    if parse_spacing(spacing) != "auto" and (parse_ct_window(window) != "auto" or dataset.modality != "CT"):
        return config.with_preprocessing(spacing, window)
    images = training_part(dataset, config.split, config.split_seed, config.finetuning.test_fraction).images_only()
    # bad scans are left out here; the data check that follows lists every one of them
    bounds = resolve_ct_window(window, dataset.modality, list(images.cases), use_labels=False, cache_dir=cache_dir, skip_bad=True)
    preprocessing = PreprocessingConfig(modality=dataset.modality)
    if bounds is not None:
        preprocessing = replace(preprocessing, ct_window=bounds)
        window = ",".join(repr(v) for v in bounds)
    if parse_spacing(spacing) == "auto":
        _, _, resolved = preprocess_at_spacing(images, preprocessing, spacing, cache_dir, skip_bad=True, progress=progress,
                                               budget=budget_for(resolve_device(config.device).type))
        spacing = "native" if resolved.spacing is None else ",".join(repr(v) for v in resolved.spacing)
    return config.with_preprocessing(spacing, window)


def _check_pretrained(name: str, path: str, config: BenchmarkConfig, modality: str) -> None:
    _, meta = load_model(path, task="pretext", hint="--pretrained takes METHOD=RUN with a pretraining run or model")
    if meta["method"] != name:
        raise VectorPoseError(f"{path}: was pretrained with method {meta['method']!r}, not {name!r}")
    if meta["preprocessing"].get("modality") != modality:
        raise VectorPoseError(f"{path}: was pretrained on {meta['preprocessing'].get('modality')} data, but the benchmark data is {modality}")
    if meta["backbone"] != config.pretraining.backbone.to_json():
        raise VectorPoseError(f"{path}: its backbone {meta['backbone']['channels']} differs from the benchmark's "
                              f"{list(config.pretraining.backbone.channels)}; every method must share one network")
    # its cells fine-tune on the model's arrays, the scratch cells on the benchmark's: they must be the same
    spacing = parse_spacing(config.pretraining.spacing)
    theirs = meta["preprocessing"].get("spacing")
    if spacing != "auto" and not (theirs is None if spacing == "native" else theirs is not None and same_spacing(theirs, spacing)):
        raise VectorPoseError(f"{path}: was pretrained at spacing {theirs or 'native'}, but the benchmark's is "
                              f"{config.pretraining.spacing}; pretrain with --spacing {config.pretraining.spacing}")
    window = parse_ct_window(config.pretraining.ct_window)
    if modality == "CT" and window != "auto" and not np.allclose(meta["preprocessing"]["ct_window"], window):
        raise VectorPoseError(f"{path}: was pretrained with the CT window {meta['preprocessing']['ct_window']}, but the benchmark's "
                              f"is {config.pretraining.ct_window}; pretrain with --ct-window {config.pretraining.ct_window}")


@dataclass
class BenchmarkRun:
    out: Path
    cells: list[dict]  # the finished cells (all of them once the report is written)
    pretraining: dict[str, dict]
    trained_cells: int
    trained_pretraining: int
    statistics: dict | None  # per score ("test", "external"), as in results.json; None while another shard's cells are unfinished
    unfinished: int = 0  # cells of other shards still to finish (0 without shards)


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` as ``(I, N)``: shard ``I`` (from 0) of ``N``."""
    index, sep, count = text.partition("/")
    try:
        shard = (int(index), int(count))
    except ValueError:
        shard = None
    if not sep or shard is None or not 0 <= shard[0] < shard[1]:
        raise ValueError(f"a shard is I/N with 0 <= I < N, e.g. 0/2, got {text!r}")
    return shard


def run_benchmark(
    data: str | Path,
    out: str | Path,
    config: BenchmarkConfig = BenchmarkConfig(),
    test_data: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    command: str | None = None,
    notes: str | None = None,
    shard: tuple[int, int] | None = None,
) -> BenchmarkRun:
    """Run (or finish) the benchmark in ``out`` and write ``results.json``, ``report.md`` and the plots.

    ``shard=(i, n)``: train only every ``n``-th cell from the ``i``-th (see the module docstring)."""
    from tqdm.auto import tqdm

    from .report import write_outputs

    data, out = Path(data), Path(out)
    test_data = Path(test_data) if test_data is not None else None
    external = str(test_data.resolve()) if test_data else None
    config = resolve_preprocessing(data, out, config, cache_dir, progress)
    header = {"data": str(data.resolve()), "recipe": config.recipe()}
    _check_folder(out, header)
    modality = _check_data(data, test_data, config, cache_dir, progress)
    for name, path in config.pretrained.items():
        _check_pretrained(name, path, config, modality)
    write_json(out / BENCHMARK_FILE, header)

    # Plan: which pretraining runs and cells still need work.
    pre_runs, pre_todo = _plan_pretraining(out, config, data)
    if shard is not None and pre_todo:
        raise VectorPoseError(f"{out}: the pretraining of {pre_todo[0][0]} is not finished; shards only fine-tune: run it first "
                              "(without --shard, or `vectorpose pretrain` and --pretrained)")
    cells = config.cells()
    mine = cells if shard is None else cells[shard[0]::shard[1]]

    def finished(c: tuple[str, float | int, int]) -> dict | None:
        return finished_cell(cell_dir(out, *c), config, c[1], c[2], pre_runs.get(c[0]))

    done = {c: finished(c) for c in mine}
    todo = [c for c in mine if done[c] is None]
    # A finished cell evaluated on another (or no) external set, or scored under other metric
    # conventions, only needs its evaluation redone.
    rescore = [c for c in mine if done[c] is not None and (done[c].get("external_data") != external or not _scored_now(done[c]))]

    total = len(pre_todo) + len(mine)
    bar = tqdm(total=total, initial=len(mine) - len(todo), desc="benchmark", unit="job", disable=not progress, dynamic_ncols=True)
    try:
        for m, resume in pre_todo:
            bar.set_postfix_str(f"pretraining {m}")
            pretrain(data, pre_runs[m], config.pretrain_config(m), cache_dir=cache_dir, resume=resume, overwrite=not resume, progress=False)
            bar.update(1)
        for method, amount, seed in todo:
            path = cell_dir(out, method, amount, seed)
            bar.set_postfix_str(f"{method} {amount:g} seed {seed}")
            done[(method, amount, seed)] = run_cell(data, path, config, method, amount, seed, pre_runs.get(method), test_data, cache_dir)
            cell = done[(method, amount, seed)]
            bar.write(f"{method:>10}  fraction {cell['fraction']:.3g}  seed {seed}  labelled {cell['labelled']:>4}  "
                      f"test Dice {cell['test']['mean_dice']:.3f}  ({cell['finetune_s'] / 60:.1f} min)")
            bar.update(1)
        for c in rescore:
            done[c] = score_cell(cell_dir(out, *c), done[c], data, test_data, config.device, cache_dir)
    except TrainingStopped as exc:
        name = signal.Signals(exc.signum).name
        raise TrainingStopped(f"{out}: benchmark stopped by {name}; rerun the same command to finish it "
                              "(the cut-off cell resumes from its last checkpoint)", exc.signum) from None
    finally:
        bar.close()

    pretraining = {m: _pretraining_info(p, out) for m, p in pre_runs.items()}
    for c in cells:  # the other shards' cells, as they are now
        if c not in done:
            done[c] = finished(c)
    rows = [done[c] for c in cells if done[c] is not None]
    if len(rows) < len(cells):
        return BenchmarkRun(out, rows, pretraining, trained_cells=len(todo), trained_pretraining=len(pre_todo),
                            statistics=None, unfinished=len(cells) - len(rows))
    check_one_plan(out, rows)
    results = write_outputs(out, config, rows, pretraining, data, test_data, command, notes)
    return BenchmarkRun(out, rows, pretraining, trained_cells=len(todo), trained_pretraining=len(pre_todo),
                        statistics=results["statistics"])


def _plan_key(plan: dict) -> tuple:
    return tuple(plan.get("patch_size") or ()), plan.get("batch_size"), tuple(plan.get("spacing") or ())


def check_one_plan(out: Path, rows: list[dict]) -> None:
    """Refuse to compare cells trained with different patches, batches or spacings. An automatic patch
    and batch follow the device that plans them (:func:`~vectorpose.data.planning.budget_for`), so cells
    of one benchmark finished on two kinds of machine can differ where their settings agree; cells from
    before plans were recorded (no ``plan``) are not checked."""
    first: dict[tuple, dict] = {}
    for row in rows:
        if row.get("plan"):
            first.setdefault(_plan_key(row["plan"]), row)
    if len(first) > 1:
        seen = "; ".join(f"{r['method']} seed {r['seed']} with {r['labelled']} labelled: patch "
                         f"{'x'.join(map(str, k[0]))}, batch {k[1]}, spacing {'x'.join(f'{v:g}' for v in k[2]) or 'native'}"
                         for k, r in first.items())
        raise VectorPoseError(f"{out}: its cells were trained with different plans ({seen}); an automatic patch and batch "
                              "follow the device, so finish a benchmark on one kind of machine or fix them in a --config settings file")


def _check_folder(out: Path, header: dict) -> None:
    """``out`` must be new, empty, or hold a benchmark of the same data and recipe (``header``)."""
    saved = _read_json(out / BENCHMARK_FILE)
    if saved is not None and isinstance(saved.get("recipe", {}).get("finetuning"), dict):
        saved["recipe"]["finetuning"] = finetuning_recipe(saved["recipe"]["finetuning"])
    if saved is not None and saved != header:
        changed = [k for k in header["recipe"] if saved.get("recipe", {}).get(k) != header["recipe"][k]]
        what = ", ".join(changed) if changed else "data"
        raise VectorPoseError(f"{out}: holds a benchmark with other settings ({what}); use another --out")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in OWN_NAMES) if out.is_dir() else []
    if saved is None and foreign:
        raise VectorPoseError(f"{out}: already holds other files ({', '.join(foreign[:3])}); give an empty or new folder")


def _plan_pretraining(out: Path, config: BenchmarkConfig, data: Path) -> tuple[dict[str, Path], list[tuple[str, bool]]]:
    """The pretraining run of every method that pretrains, and ``(method, resume)`` for those still to train."""
    pre_runs: dict[str, Path] = {}
    pre_todo = []
    for m in config.methods:
        if not get_method(m).pretrains:
            continue
        if m in config.pretrained:
            pre_runs[m] = Path(config.pretrained[m])
            continue
        pre_runs[m] = out / "pretrain" / m
        state = pretraining_state(pre_runs[m], config.pretrain_config(m), data)
        if state != "done":
            pre_todo.append((m, state == "resume"))
    return pre_runs, pre_todo


def _pretraining_info(path: Path, out: Path) -> dict:
    """What the report says of a pretraining run: its steps, backbone, patch, training time over all its
    sittings (``wall_s``) and last logged losses."""
    model = _read_json(path / "model.json") if path.is_dir() else _read_json(path.with_suffix(".json"))
    run_dir = path if path.is_dir() else path.parent
    elapsed = None
    metrics = run_dir / METRICS_FILE
    if metrics.is_file():
        rows = _metrics_rows(metrics)
        sittings = _sittings(rows)
        elapsed = sum(sittings) if sittings else None
        last = rows[-1] if rows else {}
    else:
        last = {}
    inside = run_dir.resolve().is_relative_to(out.resolve())
    return {
        "run": str(path), "supplied": not inside, "steps": (model or {}).get("step"),
        "backbone": (model or {}).get("backbone"), "patch_size": (model or {}).get("patch_size"),
        "wall_s": elapsed, "final_losses": {k: last[k] for k in ("total", "vp", "rec", "boundary") if k in last},
    }


def run_cell(data: Path, path: Path, config: BenchmarkConfig, method: str, amount: float | int, seed: int, init: Path | None,
             test_data: Path | None, cache_dir) -> dict:
    """Fine-tune and evaluate one cell: resume a cut-off attempt of this very cell from its last checkpoint,
    else start anew (removing any other attempt first). A count of labelled cases is recorded as its share of
    the training pool too (``fraction``), so reports read both alike. ``finetune_s`` adds the training time
    of earlier sittings up to the step resumed from."""
    fconfig = config.finetune_config(amount, seed)
    resume = resumable_cell(path, fconfig, init)
    if path.exists() and not resume:
        shutil.rmtree(path)
    t0 = time.perf_counter()
    result = finetune(data, path, fconfig, init=init, cache_dir=cache_dir, resume=resume, progress=False)
    cell = {
        "method": method, "fraction": amount / len(result.split.pool) if isinstance(amount, int) else amount, "seed": seed,
        "labelled": len(result.split.labelled),
        "val_dice": result.model_dice if math.isfinite(result.model_dice) else None, "model_step": result.model_step,
        "best_step": result.best_step,
        "converged": result.convergence.converged, "late_gain": result.convergence.late_gain,
        "collapsed": list(result.convergence.collapsed), "rising": list(result.convergence.rising),
        "finetune_s": time.perf_counter() - t0 + earlier_sittings_s(path / METRICS_FILE), "init": _init_name(init),
        "finetune": fconfig.to_json(), "plan": _read_json(path / PLAN_FILE),
    }
    return score_cell(path, cell, data, test_data, config.device, cache_dir)


def resumable_cell(path: Path, config: FinetuneConfig, init: Path | None) -> bool:
    """Whether ``path`` holds a cut-off fine-tuning run with exactly ``config`` (placement included) and ``init``."""
    saved = _read_json(path / CONFIG_FILE)
    return (saved is not None and (path / RESUME_FILE).is_file() and isinstance(saved.get("finetune"), dict)
            and _todays_finetune(saved["finetune"]) == config.to_json() and saved.get("init") == (str(init) if init else None))


def _metrics_rows(metrics: Path) -> list[dict]:
    """The rows of a run's ``metrics.jsonl``."""
    return [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]


def _sittings(rows: list[dict]) -> list[float]:
    clock = [float(row["elapsed_s"]) for row in rows if "elapsed_s" in row]
    return [a for a, b in zip(clock, clock[1:] + [float("-inf")]) if b < a]


def sittings_s(metrics: Path) -> list[float]:
    """Training time of each sitting of a run, from its ``metrics.jsonl``: each sitting's ``elapsed_s``
    counts from its own start, so a sitting ends where the clock goes back (and at the last row)."""
    return _sittings(_metrics_rows(metrics))


def earlier_sittings_s(metrics: Path) -> float:
    """Training time of the sittings before the last one; 0 for one sitting."""
    return float(sum(sittings_s(metrics)[:-1]))


def score_cell(path: Path, cell: dict, data: Path, test_data: Path | None, device: str, cache_dir) -> dict:
    """Evaluate a fine-tuned cell on its test split (unless already scored under today's conventions) and
    on ``test_data``; write ``cell.json`` last. A re-score for another external set keeps the test-split scores."""
    device = str(resolve_device(device))
    cell = dict(cell)
    if not _scored_now(cell):
        t0 = time.perf_counter()
        cell["test"] = _summary(evaluate(path, data, path / "test_metrics.json", device=device, cache_dir=cache_dir, overwrite=True))
        cell["evaluate_s"] = time.perf_counter() - t0
    (path / "external_metrics.json").unlink(missing_ok=True)
    t0 = time.perf_counter()
    external = None
    if test_data is not None:
        external = evaluate(path, test_data, path / "external_metrics.json", all_cases=True, device=device, cache_dir=cache_dir, overwrite=True)
    cell.update(external=_summary(external) if external else None, external_evaluate_s=time.perf_counter() - t0,
                external_data=str(test_data.resolve()) if test_data else None)
    write_json(path / CELL_FILE, cell)
    return cell
