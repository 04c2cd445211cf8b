"""The ``vectorpose`` command line: parses options, calls the library, prints errors as one line."""

from __future__ import annotations

import functools
import json
import shlex
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import __version__
from .benchmark.runner import BenchmarkConfig
from .cli_settings import Settings, config_file_option, config_options, given
from .errors import DatasetError, TrainingStopped, VectorPoseError
from .inference.metrics import voxels_went_to
from .models.backbone import BackboneConfig
from .probe.runner import ProbeConfig
from .training.convergence import COLLAPSE_DICE
from .training.distributed import exit_torchrun_worker
from .training.finetune import FinetuneConfig
from .training.pretrain import PretrainConfig

if TYPE_CHECKING:
    from .training.speed import SpeedOptions


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def without_option(args: list[str], option: str) -> list[str]:
    """``args`` without ``option`` and its value (``--opt VALUE`` or ``--opt=VALUE``)."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            kept.append(arg)
    return kept


def _speed_options(command):
    """Add the CUDA speed options and ``--boundary-in`` to ``command``, which receives them as one
    ``speed`` (:class:`~vectorpose.training.speed.SpeedOptions`)."""

    @functools.wraps(command)
    def with_speed(*args, amp: str, channels_last: bool, compile_: bool, boundary_in: str, **kwargs):
        from .training.speed import SpeedOptions

        speed = SpeedOptions(amp=None if amp == "none" else amp, channels_last=channels_last, compile=compile_, boundary_in=boundary_in)
        return command(*args, speed=speed, **kwargs)

    options = [
        click.option("--amp", type=click.Choice(["none", "bf16"]), default="none", show_default=True, help="Autocast precision of the forward pass (bf16: on CUDA, or a CPU with bfloat16 support such as AMX)."),
        click.option("--channels-last", is_flag=True, help="Channels-last 3D memory layout (for CUDA)."),
        click.option("--compile", "compile_", is_flag=True, help="torch.compile the network (for CUDA)."),
        click.option("--boundary-in", type=click.Choice(["auto", "workers", "device"]), default="auto", show_default=True,
                     help="Where the boundary target is made: auto is the workers on the CPU, the device on a GPU."),
    ]
    for option in reversed(options):
        with_speed = option(with_speed)
    return with_speed


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="vectorpose")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
def cli(debug: bool) -> None:
    """VectorPOSE: spatially-aware self-supervised pretraining of 3D segmentation networks."""
    # --debug is acted on by main(), which wraps every command


@cli.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--cases", default=20, show_default=True, help="Number of synthetic cases.")
@click.option("--seed", default=0, show_default=True, help="Generator seed.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it already holds files.")
@config_file_option
def synth(out: Path, cases: int, seed: int, overwrite: bool) -> None:
    """Write the built-in synthetic dataset (MSD layout) to OUT."""
    from .data.synthetic import make_synthetic_dataset

    if out.exists() and any(out.iterdir()) and not overwrite:
        raise VectorPoseError(f"{out}: already holds files; pass --overwrite to replace them")
    path = make_synthetic_dataset(out, num_cases=cases, seed=seed, overwrite=overwrite)
    click.echo(f"wrote {cases} synthetic cases to {path}")


@cli.command()
@click.argument("data", type=click.Path(path_type=Path), required=False)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder to write.")
@config_options(PretrainConfig, section="pretrain")
@click.option("--modality", default=None, help="CT or MRI; overrides dataset.json.")
@click.option("--channels", default=",".join(map(str, BackboneConfig().channels)), show_default=True, help="Backbone channels per level.")
@click.option("--backbone", type=click.Choice(["unet", "dynunet", "nnunet"]), default="unet", show_default=True,
              help="unet (VectorPOSE's own), dynunet (MONAI's DynUNet, laid out for --patch as nnU-Net would; export --to monai) "
                   "or nnunet: the network of an nnU-Net v2 plans file (--plans).")
@click.option("--plans", type=click.Path(path_type=Path, dir_okay=False), default=None, help="nnU-Net v2 plans file (nnUNetPlans.json).")
@click.option("--configuration", default="3d_fullres", show_default=True, help="Configuration of --plans.")
@click.option("--vp-weight", type=float, default=None, help="Weight of the vector loss.")
@click.option("--rec-weight", type=float, default=None, help="Weight of the reconstruction loss.")
@click.option("--boundary-weight", type=float, default=None, help="Weight of the boundary loss.")
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="Preprocessing cache folder [$VECTORPOSE_CACHE or ~/.cache/vectorpose].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace a run folder that already holds results.")
@click.option("--skip-bad", is_flag=True, help="Leave out unreadable scans (named) instead of stopping.")
@click.option("--threads", type=int, default=None,
              help="Torch threads of this process [on the CPU with --workers: the cores the workers leave free].")
@_speed_options
@click.option("--quiet", is_flag=True, help="No progress bar.")
def pretrain(data: Path | None, out: Path, settings: Settings, modality: str | None, channels: str, backbone: str, plans: Path | None,
             configuration: str, vp_weight: float | None, rec_weight: float | None, boundary_weight: float | None, cache: Path | None,
             resume: bool, overwrite: bool, skip_bad: bool, threads: int | None, speed: SpeedOptions, quiet: bool) -> None:
    """Pretrain a 3D U-Net on the scans in DATA (an MSD folder, or any folder of NIfTI, NRRD or MetaImage files and DICOM series).

    Several processes or GPUs: start it with torchrun (torchrun --standalone --nproc_per_node=N -m
    vectorpose.cli pretrain ...); rank 0 writes the run folder.
    """
    from .devices import set_torch_threads
    from .training.pretrain import pretrain as run_pretrain

    data = _required_data(data)
    overrides = {}
    weights = {k: v for k, v in (("vp", vp_weight), ("rec", rec_weight), ("boundary", boundary_weight)) if v is not None}
    if weights:
        overrides["loss_weights"] = weights
    if given("channels") or given("backbone") or given("plans"):
        # build() checks the given --patch against the old backbone: call it only when no --patch was given
        given_patch = settings.given.get(("pretext", "patch_size"))
        patch = given_patch if given_patch is not None else settings.build().pretext.patch_size
        try:
            overrides["backbone"] = _nnunet_backbone(backbone, plans, configuration, patch) or _own_backbone(backbone, _ints(channels), patch)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    config = settings.build(**overrides)
    try:
        set_torch_threads(threads, config.workers, config.device)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    result = run_pretrain(data, out, config, modality=modality, cache_dir=cache, resume=resume, overwrite=overwrite,
                          skip_bad=skip_bad, progress=not quiet, speed=speed)
    final = ", ".join(f"{k} {result.last_metrics[k]:.4f}" for k in ("total", "vp", "rec", "boundary") if k in result.last_metrics)
    if result.rank == 0:  # under torchrun, rank 0 speaks for the run
        click.echo(f"pretrained model written to {result.model_path} ({final})")


def _required_data(data: Path | None) -> Path:
    if data is None:
        raise click.UsageError("Missing argument 'DATA' (give it, or a --config file that names its \"data\").")
    return data


def _scratch_backbone_options(command):
    """``--channels`` and ``--backbone`` of a network trained from scratch (``finetune``, ``plan``)."""
    command = click.option("--backbone", type=click.Choice(["unet", "dynunet"]), default="unet", show_default=True,
                           help="Scratch only: unet (VectorPOSE's own; no convolution at full resolution before the last layer) "
                                "or dynunet (MONAI's DynUNet in nnU-Net's layout: two convolutions at every level from full "
                                "resolution on).")(command)
    return click.option("--channels", default=None, help="Backbone channels (scratch only; --init brings its own).")(command)


def _finetune_overrides(patch: str, channels: str | None, backbone: str) -> dict:
    """The fine-tuning settings of a given ``--patch`` (``X,Y,Z``, one side, or ``auto``), ``--channels`` and ``--backbone``."""
    from .models.dynunet_backbone import DynUNetBackboneConfig

    overrides = {}
    if given("patch"):
        sizes = None if patch == "auto" else _ints(patch)
        overrides["patch_size"] = None if sizes is None else (sizes * 3 if len(sizes) == 1 else sizes)
    if given("channels") or given("backbone"):
        widths = _ints(channels) if channels else BackboneConfig().channels
        try:
            overrides["backbone"] = (DynUNetBackboneConfig.halving_per_level(widths) if backbone == "dynunet"
                                     else BackboneConfig(channels=widths))
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    return overrides


def _own_backbone(backbone: str, channels: tuple[int, ...], patch: int):
    """VectorPOSE's U-Net of ``--channels``, or for ``dynunet`` MONAI's DynUNet laid out for ``--patch`` (raises ValueError)."""
    from .models.dynunet_backbone import DynUNetBackboneConfig

    if backbone == "dynunet":
        network = DynUNetBackboneConfig.for_patch(patch, channels)
        if len(network.channels) < len(channels):
            click.echo(f"note: --patch {patch} fits {len(network.channels)} dynunet levels; using channels "
                       f"{','.join(map(str, network.channels))} of {','.join(map(str, channels))}", err=True)
        return network
    return BackboneConfig(channels=channels)


def _nnunet_backbone(backbone: str, plans: Path | None, configuration: str, patch: int):
    """The nnU-Net network of ``--backbone nnunet --plans``, checked against ``--patch``; ``None`` for the others."""
    if backbone != "nnunet":
        if plans is not None:
            raise click.UsageError("--plans is for --backbone nnunet")
        return None
    if plans is None:
        raise click.UsageError("--backbone nnunet needs --plans nnUNetPlans.json (made by nnUNetv2_plan_and_preprocess)")
    from .models.nnunet_backbone import NnUNetBackboneConfig

    network = NnUNetBackboneConfig.from_plans(plans, configuration)
    try:
        network.check_patch_size(patch)
    except ValueError as exc:
        raise click.UsageError(f"--patch: {exc}") from None
    return network


@cli.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--to", "target", type=click.Choice(["nnunet", "monai"]), required=True,
              help="Format to write: nnunet (-pretrained_weights file) or monai (DynUNet state dict and arguments).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@config_file_option
def export(run_dir: Path, out: Path, target: str, overwrite: bool) -> None:
    """Write the weights of RUN for another framework.

    --to nnunet OUT.pth: for nnUNetv2_train DATASET CONFIG FOLD -pretrained_weights OUT.pth (RUN pretrained
    with --backbone nnunet). --to monai OUT: OUT.safetensors and OUT.json for monai.networks.nets.DynUNet
    (RUN pretrained or fine-tuned with the dynunet backbone).
    """
    if target == "monai":
        from .export.monai import export_monai

        weights, spec_path, spec = export_monai(run_dir, out, overwrite=overwrite)
        what = "the segmentation network" if "missing_weights" not in spec else "the pretrained network (no output_block)"
        click.echo(f"wrote {what} of {run_dir} as {spec['class']} weights {weights} and arguments {spec_path}")
        return
    from .export.nnunet import export_nnunet

    path, info = export_nnunet(run_dir, out, overwrite=overwrite)
    click.echo(f"wrote {info['tensors']} tensors of {info['network_class_name'].rsplit('.', 1)[-1]} ({info['plans_name']}, "
               f"{info['configuration']}, step {info['step']}) to {path}")
    click.echo(f"train with: nnUNetv2_train DATASET {info['configuration']} FOLD -pretrained_weights {path}"
               + (f" -p {info['plans_name']}" if info["plans_name"] and info["plans_name"] != "nnUNetPlans" else ""))


@cli.command()
@click.argument("data", type=click.Path(path_type=Path), required=False)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder to write.")
@click.option("--init", type=click.Path(path_type=Path), default=None, help="Pretraining run folder or model file (absent: from scratch).")
@config_options(FinetuneConfig, section="finetune")
@click.option("--patch", default="auto", show_default=True, help="Patch size X,Y,Z (or one number, or auto).")
@_scratch_backbone_options
@click.option("--modality", default=None, help="CT or MRI; overrides dataset.json.")
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="Preprocessing cache folder.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace a run folder that already holds results.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def finetune(data: Path | None, out: Path, init: Path | None, settings: Settings, patch: str, channels: str | None, backbone: str,
             modality: str | None, cache: Path | None, resume: bool, overwrite: bool, quiet: bool) -> None:
    """Fine-tune a segmentation network on the labelled cases of DATA (an MSD folder)."""
    from .training.finetune import finetune as run_finetune

    data = _required_data(data)
    overrides = _finetune_overrides(patch, channels, backbone)
    config = settings.build(**overrides)
    result = run_finetune(data, out, config, init=init, modality=modality, cache_dir=cache, resume=resume, overwrite=overwrite,
                          progress=not quiet)
    click.echo(f"fine-tuned on {len(result.split.labelled)} labelled cases; best validation Dice {result.best_dice:.4f} at step "
               f"{result.best_step}; the model of step {result.model_step} (validation Dice {result.model_dice:.4f}) written to "
               f"{out / 'model.safetensors'}")
    verdict = result.convergence
    if verdict is not None and verdict.converged is False:
        click.echo(f"warning: validation Dice still rose by {verdict.late_gain:.3f} in the last quarter of the run (more than "
                   f"{verdict.tolerance}); it has not converged: give more --steps", err=True)
    if verdict is not None and verdict.collapsed:
        went = [f"{name} as {to}" for name in verdict.collapsed if (to := voxels_went_to(verdict.validation_confusion, name))]
        where = f"; the final weights label the validation voxels of {'; of '.join(went)}" if went else ""
        click.echo(f"warning: collapse: validation Dice of {', '.join(verdict.collapsed)} stayed below {COLLAPSE_DICE} through the last "
                   f"quarter of the run{where}; see {out / 'metrics.jsonl'}", err=True)
    if verdict is not None and verdict.rising:
        click.echo(f"warning: validation Dice of {', '.join(verdict.rising)} still rose by more than {verdict.tolerance} in the last "
                   f"quarter of the run: more --steps may still raise {'it' if len(verdict.rising) == 1 else 'them'}", err=True)


@cli.command()
@click.argument("data", type=click.Path(path_type=Path), required=False)
@click.option("--init", type=click.Path(path_type=Path), default=None, help="Pretraining run folder or model file (absent: from scratch).")
@config_options(FinetuneConfig, section="finetune")
@click.option("--patch", default="auto", show_default=True, help="Patch size X,Y,Z (or one number, or auto).")
@click.option("--modality", default=None, help="CT or MRI; overrides dataset.json.")
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="Preprocessing cache folder.")
@_scratch_backbone_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (as the run's plan.json).")
def plan(data: Path | None, init: Path | None, settings: Settings, patch: str, modality: str | None, cache: Path | None,
         channels: str | None, backbone: str, as_json: bool) -> None:
    """Print the plan `finetune` would use on DATA with these options (spacing, CT window, patch, batch) and why.

    Reads and caches the scans as the run would; writes no run folder.
    """
    from .training.finetune import plan_finetuning

    data = _required_data(data)
    overrides = _finetune_overrides(patch, channels, backbone)
    config = settings.build(**overrides)
    run_plan = plan_finetuning(data, config, init, modality, cache, progress=False).run_plan
    click.echo(json.dumps(run_plan.to_json(), indent=2) if as_json else run_plan.summary())


@cli.command()
@click.argument("models", metavar="MODEL...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="metrics JSON to write.")
@click.option("--all", "all_cases", is_flag=True, help="Every labelled case of DATA (an external test set), not the run's test split.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="Preprocessing cache folder.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--mirror/--no-mirror", default=True, show_default=True, help="Average over mirrored copies on the axes training flipped.")
@config_file_option
def evaluate(models: tuple[Path, ...], data: Path, out: Path | None, all_cases: bool, device: str, cache: Path | None, overwrite: bool,
             mirror: bool) -> None:
    """Score MODEL on DATA: Dice and HD95 per case and class (sliding-window inference).

    Several MODELs (e.g. the seeds of one recipe) are scored as one ensemble: the mean of their softmax
    probabilities.
    """
    from .inference.evaluate import evaluate as run_evaluate, format_table

    result = run_evaluate(list(models), data, out, all_cases=all_cases, device=device, cache_dir=cache, overwrite=overwrite, mirror=mirror)
    click.echo(format_table(result))
    if out is not None:
        click.echo(f"metrics written to {out}")


@cli.command()
@click.argument("models", metavar="MODEL...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.argument("input", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--overwrite", is_flag=True, help="Replace existing label maps.")
@click.option("--mirror/--no-mirror", default=True, show_default=True, help="Average over mirrored copies on the axes training flipped.")
@config_file_option
def predict(models: tuple[Path, ...], input: Path, output: Path, device: str, overwrite: bool, mirror: bool) -> None:
    """Segment INPUT (a NIfTI, NRRD or MetaImage file, a folder of them, or a DICOM series folder) into OUTPUT label maps.

    Each label map is written in its scan's format (.nhdr as .nrrd, .mhd as .mha; DICOM as .nii.gz), or
    in the format an OUTPUT file name ends with (.nii.gz, .nii, .nrrd, .mha). Several MODELs predict as
    one ensemble: the mean of their softmax probabilities.
    """
    from .inference.predictor import predict as run_predict

    for path in run_predict(list(models), input, output, device=device, overwrite=overwrite, mirror=mirror):
        click.echo(f"wrote {path}")


@cli.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Benchmark folder (rerun to finish an interrupted benchmark).")
@config_options(BenchmarkConfig, section="recipe")
@click.option("--test-data", type=click.Path(path_type=Path), default=None, help="External labelled dataset, scored with every model.")
@click.option("--pretrained", "pretrained", multiple=True, metavar="METHOD=RUN",
              help="Use an existing pretraining run for METHOD instead of pretraining it here (repeatable).")
@click.option("--notes", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Markdown file appended to report.md.")
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="Preprocessing cache folder.")
@click.option("--shard", metavar="I/N", default=None,
              help="Train only cells I, I+N, I+2N, ... (from 0), so that N processes or machines share one --out; pretraining "
                   "must be finished first. The shard that finds every cell finished writes the report.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def benchmark(data: Path, out: Path, settings: Settings, test_data: Path | None, pretrained: tuple[str, ...], notes: Path | None,
              cache: Path | None, shard: str | None, quiet: bool) -> None:
    """Compare pretraining methods on DATA under one fine-tuning recipe, over label fractions and seeds.

    --config takes a benchmark's own benchmark.json (its recipe and data) or a file of settings.
    """
    from .benchmark.report import collapse_warnings, convergence_warnings, headline_table
    from .benchmark.runner import parse_shard, run_benchmark

    try:
        shard_range = parse_shard(shard) if shard is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--shard") from None
    supplied = {}
    for item in pretrained:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise click.UsageError(f"--pretrained takes METHOD=RUN, got {item!r}")
        supplied[name] = path
    config = settings.build(**({"pretrained": supplied} if supplied else {}))
    note_text = None
    if notes is not None:
        try:
            note_text = notes.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise VectorPoseError(f"{notes}: cannot read the notes file ({exc})") from None
    command = "vectorpose " + shlex.join(without_option(sys.argv[1:], "--shard"))  # the report's command runs every cell
    run = run_benchmark(data, out, config, test_data=test_data, cache_dir=cache, progress=not quiet, command=command, notes=note_text,
                        shard=shard_range)
    if run.statistics is None:
        click.echo(f"shard {shard}: {run.trained_cells} cells trained now; {run.unfinished} cells of other shards are not finished, "
                   "so no report yet (the last shard to finish writes it)")
        return
    click.echo(f"\nmean test Dice over {config.seeds} seed(s) ({run.trained_cells} cells trained now, "
               f"{len(run.cells) - run.trained_cells} reused):")
    click.echo(headline_table(run.cells, run.statistics["test"]))
    for warning in convergence_warnings(run.cells) + collapse_warnings(run.cells):
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"report: {out / 'report.md'}; results: {out / 'results.json'}")


@cli.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--method", default="vectorpose", show_default=True,
              help="Pretext method: vectorpose, vp, bfr, genesis or mae (with the default mask blocks).")
@click.option("--patch", default=32, show_default=True, help="Patch side P.")
@click.option("--batch", default=4, show_default=True, help="Crops per step.")
@click.option("--steps", default=20, show_default=True, help="Timed steps per measurement.")
@click.option("--warmup", default=3, show_default=True, help="Untimed steps before each measurement.")
@click.option("--workers", default=1, show_default=True, help="DataLoader worker processes.")
@click.option("--threads", type=int, default=None,
              help="Torch threads of this process [on the CPU with --workers: the cores the workers leave free].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--channels", default="16,32,64,128,256", show_default=True, help="Backbone channels per level.")
@_speed_options
@click.option("--reference-samples", default=16, show_default=True, help="Samples drawn by the SciPy reference pipeline.")
@click.option("--modality", default=None, help="CT or MRI; overrides dataset.json.")
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="Preprocessing cache folder.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None, help="JSON file for the results.")
@click.option("--overwrite", is_flag=True, help="Replace --out (and --profile) if it exists.")
@click.option("--profile", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder for torch.profiler traces and op tables of (a) and (b), taken after the timed runs.")
@config_file_option
def bench(data: Path, method: str, patch: int, batch: int, steps: int, warmup: int, workers: int, threads: int | None, device: str,
          channels: str, speed: SpeedOptions, reference_samples: int, modality: str | None,
          cache: Path | None, out: Path | None, overwrite: bool, profile: Path | None) -> None:
    """Time pretraining on DATA: model step, full step, pipeline alone, and the per-crop SciPy reference."""
    from .benchmark.throughput import format_throughput, measure_throughput
    from .devices import set_torch_threads
    from .models.backbone import BackboneConfig
    from .utils.files import write_json

    for path in (out, profile):
        if path is not None and path.exists() and not overwrite:
            raise VectorPoseError(f"{path}: already exists; pass --overwrite to replace it")
    try:
        set_torch_threads(threads, workers, device)
        backbone = BackboneConfig(channels=_ints(channels))
        result = measure_throughput(data, method=method, patch_size=patch, batch_size=batch, steps=steps, warmup=warmup, workers=workers,
                                    device=device, backbone=backbone, speed=speed, reference_samples=reference_samples, modality=modality,
                                    cache_dir=cache, profile_dir=profile)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(format_throughput(result))
    if profile is not None:
        click.echo(f"profiles of (a) and (b) written to {profile}")
    if out is not None:
        write_json(out, result)
        click.echo(f"results written to {out}")


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="JSON file to write (FILE.md and FILE.png beside it).")
@click.option("--compare", multiple=True, type=click.Path(path_type=Path), help="Another pretraining run to probe the same way (repeatable).")
@config_options(ProbeConfig, section="settings")
@click.option("--modality", default=None, help="CT or MRI; overrides dataset.json.")
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="Preprocessing cache folder [$VECTORPOSE_CACHE or ~/.cache/vectorpose].")
@click.option("--overwrite", is_flag=True, help="Replace --out (and its .md and .png) if they exist.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def probe(run: Path, data: Path, out: Path, compare: tuple[Path, ...], settings: Settings, modality: str | None, cache: Path | None,
          overwrite: bool, quiet: bool) -> None:
    """Measure what the frozen encoder of RUN knows about a crop's position, scale and orientation.

    Linear probes on pooled bottleneck features of clean crops of DATA, fitted on half of the cases and
    scored on the other half, beside a randomly initialised encoder of the same shape and --compare runs.
    """
    from .probe import run_probe, write_report
    from .probe.report import check_outputs, format_table

    check_outputs(out, overwrite)
    config = settings.build()
    result = run_probe(run, data, config, compare=compare, modality=modality, cache_dir=cache, progress=not quiet)
    paths = write_report(result, out, overwrite=overwrite)
    click.echo(format_table(result))
    click.echo(f"probe results written to {', '.join(str(p) for p in paths)}")


@cli.command()
@click.argument("out", type=click.Path(path_type=Path), default=Path("runs/demo"))
@click.option("--pretrain-steps", default=300, show_default=True)
@click.option("--finetune-steps", default=200, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it holds an earlier demo.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@config_file_option
def demo(out: Path, pretrain_steps: int, finetune_steps: int, overwrite: bool, quiet: bool) -> None:
    """The main job on built-in synthetic data: pretrain, fine-tune every method on few labels, compare."""
    from .demo import run_demo

    run_demo(out, pretrain_steps, finetune_steps, overwrite=overwrite, progress=not quiet)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 1 (2 for usage errors)."""
    code = run_command(sys.argv[1:] if argv is None else argv)
    exit_torchrun_worker(code)
    if code:
        sys.exit(code)


def run_command(args: list[str]) -> int:
    """Run ``vectorpose ARGS``; returns the exit status (unexpected errors propagate with ``--debug``)."""
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="vectorpose", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except TrainingStopped as exc:
        click.echo(f"error: {exc}", err=True)
        return 128 + int(exc.signum)
    except DatasetError as exc:
        if debug:
            traceback.print_exc()
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        return 1
    except (VectorPoseError, FileExistsError) as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        return 1
    except Exception as exc:  # an unexpected failure still ends in one line unless --debug
        if debug:
            raise
        click.echo(f"error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True)
        return 1
    return 0


if __name__ == "__main__":  # python -m vectorpose.cli, as torchrun -m starts it
    main()
