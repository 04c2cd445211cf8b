"""The probe's outputs: ``FILE`` (JSON), ``FILE.md`` (a table) and ``FILE.png`` (a bar chart).

The report shows, for the pretrained run, a randomly initialised backbone of the same shape and any
compared runs, how well linear probes on the frozen, pooled bottleneck features (``(n, C)`` per crop
set) recover a crop's position and scale (R² on held-out cases) and its orientation and "up" axis
(accuracy), which is the spatial awareness Zhang et al. (ISBI 2023) claim Vector Prediction teaches.
The three files are rendered in memory first and each is written atomically.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from ..errors import VectorPoseError
from ..utils.files import atomic_write
from .crops import ORIENTATIONS, UP_NAMES
from .runner import ProbeResult

COLUMNS = (
    ("position R²", lambda e: e.position.r2),
    ("scale R²", lambda e: e.scale.r2),
    (f"orientation acc. ({len(ORIENTATIONS)}-way)", lambda e: e.orientation.accuracy),
    (f"up acc. ({len(UP_NAMES)}-way)", lambda e: e.up.accuracy),
)


def output_paths(out: str | Path) -> tuple[Path, Path, Path]:
    """``(json, markdown, png)``: ``out`` and ``out`` with the suffixes ``.md`` and ``.png``."""
    out = Path(out)
    if out.suffix in (".md", ".png"):
        raise VectorPoseError(f"{out}: the JSON file must not end in .md or .png (the table and plot are written beside it)")
    return out, out.with_suffix(".md"), out.with_suffix(".png")


def check_outputs(out: str | Path, overwrite: bool) -> None:
    """Refuse an existing output (any of the three files) unless ``overwrite``; refuse a folder always."""
    for path in output_paths(out):
        if path.is_dir():
            raise VectorPoseError(f"{path}: is a folder; --out names the JSON file to write")
        if path.exists() and not overwrite:
            raise VectorPoseError(f"{path}: already exists; pass --overwrite to replace it")


def markdown(result: ProbeResult) -> str:
    """A table: one row per encoder, columns position R² (mean of x, y, z), scale R², orientation and up accuracy."""
    first = result.encoders[0]
    lines = [
        "# Spatial-awareness probe",
        "",
        f"Linear probes on the frozen bottleneck features of each encoder, average-pooled to a {result.config.grid}³ grid "
        f"({first.features} numbers per crop); fitted on "
        f"{len(result.fit_cases)} cases ({result.crops['fit']} crops per probe), scored on {len(result.evaluation_cases)} other "
        f"cases ({result.crops['evaluation']} crops per probe) of `{result.data}`.",
        "",
        "| encoder | " + " | ".join(name for name, _ in COLUMNS) + " | position R² (x / y / z) |",
        "|---|" + "---:|" * (len(COLUMNS) + 1),
    ]
    for e in result.encoders:
        label = e.name if e.role != "run" else f"**{e.name}** (run)"
        if e.method:
            label += f" · {e.method}, step {e.step}, P = {e.patch_size}"
        per_axis = " / ".join(f"{v:.3f}" for v in e.position.r2_per_target)
        lines.append(f"| {label} | " + " | ".join(f"{get(e):.3f}" for _, get in COLUMNS) + f" | {per_axis} |")
    o, u = first.orientation, first.up
    lines += [
        "",
        f"Chance: R² 0 (predicting the evaluation mean); orientation 1/{o.classes} = {o.chance:.3f}, up 1/{u.classes} = "
        f"{u.chance:.3f}. A probe that learnt nothing and answers the fit half's most frequent class scores {o.majority:.3f} "
        f"(orientation) and {u.majority:.3f} (up) on these evaluation crops.",
        "",
        "- **position R²**: crop centre / volume shape per axis (canonical crops), ridge regression; mean over the three axes.",
        "- **scale R²**: the crop's scale s (side = round(s · P), resized to P³), ridge regression.",
        f"- **orientation acc.**: which of the {o.classes} flips/rotations (signed axis permutations) the crop went through, "
        "multinomial logistic regression.",
        "- **up acc.**: which of the 6 signed patch axes the scan's longitudinal axis (+z) points along after re-orientation.",
        f"- **random init**: the same backbone shape with seeded random weights (seed {result.config.seed}), probed on the run's crops.",
        "",
        f"Settings: {json.dumps(result.config.to_json())}. Took {result.seconds:.0f} s.",
    ]
    if any(not (e.orientation.converged and e.up.converged) for e in result.encoders):
        lines.append(f"Some logistic probes stopped at max_iter = {result.config.max_iter} before converging (see the JSON).")
    return "\n".join(lines) + "\n"


def format_table(result: ProbeResult) -> str:
    """The table for the terminal: one row per encoder, then the chance levels."""
    rows = [f"{'encoder':<28} {'position R2':>11} {'scale R2':>9} {'orient acc':>10} {'up acc':>7}"]
    for e in result.encoders:
        rows.append(f"{e.name[:28]:<28} {e.position.r2:>11.3f} {e.scale.r2:>9.3f} {e.orientation.accuracy:>10.3f} {e.up.accuracy:>7.3f}")
    first = result.encoders[0]
    rows.append(f"chance: R2 0; orientation {first.orientation.chance:.3f} (majority class {first.orientation.majority:.3f}); "
                f"up {first.up.chance:.3f} (majority class {first.up.majority:.3f})")
    return "\n".join(rows)


def plot_png(result: ProbeResult) -> bytes:
    """A grouped bar chart (one group per probe, one bar per encoder); dashes at R² 0 and at the majority-class
    rates; PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    encoders = result.encoders
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    width = 0.8 / len(encoders)
    for i, e in enumerate(encoders):
        xs = np.arange(len(COLUMNS)) + (i - (len(encoders) - 1) / 2) * width
        ax.bar(xs, [get(e) for _, get in COLUMNS], width, label=e.name + (" (run)" if e.role == "run" else ""), color=f"C{i}")
    first = encoders[0]
    for j, level in ((0, 0.0), (1, 0.0), (2, first.orientation.majority), (3, first.up.majority)):
        ax.hlines(level, j - 0.45, j + 0.45, colors="black", linestyles="dashed", linewidth=1)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(COLUMNS)), [name for name, _ in COLUMNS])
    ax.set_ylim(min(-0.1, min(get(e) for e in encoders for _, get in COLUMNS) - 0.05), 1.0)
    ax.set_ylabel("R² / accuracy on held-out cases")
    ax.set_title("Linear probes on frozen bottleneck features\n(dashes: what a probe that learnt nothing scores)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=120, format="png")
    plt.close(fig)
    return buffer.getvalue()


def write_report(result: ProbeResult, out: str | Path, overwrite: bool = False) -> tuple[Path, Path, Path]:
    """Write ``out`` (JSON), ``out.md`` and ``out.png``; returns their paths. Refuses existing files unless ``overwrite``."""
    json_path, md_path, png_path = output_paths(out)
    check_outputs(out, overwrite)
    text = json.dumps(result.to_json(), indent=2) + "\n"
    table = markdown(result)
    png = plot_png(result)
    atomic_write(json_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    atomic_write(md_path, lambda tmp: tmp.write_text(table, encoding="utf-8"))
    atomic_write(png_path, lambda tmp: tmp.write_bytes(png))
    return json_path, md_path, png_path
