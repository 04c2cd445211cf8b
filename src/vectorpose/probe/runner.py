"""Run the spatial-awareness probe: frozen encoders, clean crops of held-out cases, linear probes.

Measures head on the claim of Zhang et al. (ISBI 2023) that Vector Prediction teaches the encoder
where a crop is, how big it is and which way is up. For a pretraining run (and any ``compare`` runs)
and a randomly initialised backbone of the same shape:

1. the cases of ``data`` are split by seed into a fit half and an evaluation half (no case in both);
2. every case gives ``crops_per_case`` canonical and as many re-oriented clean crops of the run's
   patch side ``P`` and scale range, in the run's preprocessing (through the cache, as pretraining);
3. each encoder maps every crop ``(1, P, P, P)`` to its pooled bottleneck features ``(C,)``;
4. linear probes fit on the fit half and are scored on the evaluation half: R² of the crop centre
   (per axis and mean) and of the scale, accuracy of the orientation (48-way) and of "up" (6-way).

``run_probe(run, data, ProbeConfig(), compare=(other_run,))`` returns a :class:`ProbeResult`;
:func:`vectorpose.probe.report.write_report` writes it as JSON, markdown and a PNG.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..data.datasets import Dataset, load_dataset
from ..data.preprocessing import PreprocessingConfig, preprocess_dataset
from ..errors import DataError, VectorPoseError
from ..settings import setting
from .crops import ORIENTATIONS, UP_NAMES, draw_case_crops
from .features import Encoder, load_encoder, pooled_features, random_encoder
from .fit import ClassifierScore, RegressionScore, fit_classifier, fit_regression
from .split import split_cases

PROBES = ("position", "scale", "orientation", "up")
RANDOM_NAME = "random init"


@dataclass(frozen=True)
class ProbeConfig:
    """Settings of a probe; every one is recorded in the report.

    crops_per_case: canonical crops per case, and as many re-oriented ones.
    seed: seeds the case split, the crops and the random baseline's weights.
    fit_share: share of the cases the probes fit on; the rest are scored.
    max_cases: use at most this many cases (a seeded choice), or all.
    grid: the bottleneck is average-pooled to ``grid³`` cells (2: the Vector Prediction head's layout).
    batch_size, device: how features are computed (``auto``: CUDA when there is one).
    logistic_c, max_iter: inverse regularisation and iteration cap of the logistic probes.
    """

    crops_per_case: int = setting(8, "Crops per case, in each of the two crop sets.", flag="crops")
    seed: int = setting(0, "Seed of the case split, the crops and the random baseline.")
    fit_share: float = setting(0.5, "Share of the cases the probes fit on; the others are scored.")
    max_cases: int | None = setting(None, "Use at most this many cases (a seeded choice).")
    grid: int = setting(2, "Pool the bottleneck to grid^3 cells (2: the layout the vector head reads; 1: a global mean).")
    batch_size: int = 16
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    logistic_c: float = 1.0
    max_iter: int = 2000

    def __post_init__(self):
        for name in ("crops_per_case", "batch_size", "max_iter", "grid"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 < self.fit_share < 1.0:
            raise ValueError(f"fit_share must lie strictly between 0 and 1, got {self.fit_share}")
        if self.max_cases is not None and self.max_cases < 2:
            raise ValueError(f"max_cases must be at least 2 (one case to fit on, one to evaluate on), got {self.max_cases}")
        if not self.logistic_c > 0:
            raise ValueError(f"logistic_c must be positive, got {self.logistic_c}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> ProbeConfig:
        return cls(**d)


@dataclass(frozen=True)
class EncoderScores:
    """One row of the report: an encoder, the crops it was probed on, and its four probe scores."""

    name: str
    role: str  # "run", "random init" or "compare"
    source: str | None
    method: str | None
    step: int | None
    patch_size: int
    scale_range: tuple[float, float]
    preprocessing: dict
    features: int
    position: RegressionScore
    scale: RegressionScore
    orientation: ClassifierScore
    up: ClassifierScore

    def to_json(self) -> dict:
        return {
            "name": self.name, "role": self.role, "source": self.source, "method": self.method, "step": self.step,
            "patch_size": self.patch_size, "scale_range": list(self.scale_range), "preprocessing": self.preprocessing,
            "features": self.features, **{p: getattr(self, p).to_json() for p in PROBES},
        }


@dataclass(frozen=True)
class ProbeResult:
    """Everything a probe measured: the rows (run, random init, compare runs), the split and the settings."""

    run: str
    data: str
    config: ProbeConfig
    fit_cases: tuple[str, ...]
    evaluation_cases: tuple[str, ...]
    crops: dict  # {"fit": n, "evaluation": n}: crops per set (canonical, and as many re-oriented)
    encoders: tuple[EncoderScores, ...]
    seconds: float
    versions: dict = field(default_factory=dict)

    def row(self, name: str) -> EncoderScores:
        return next(e for e in self.encoders if e.name == name)

    def to_json(self) -> dict:
        return {
            "run": self.run, "data": self.data, "settings": self.config.to_json(),
            "split": {"fit": list(self.fit_cases), "evaluation": list(self.evaluation_cases)},
            "crops": self.crops,
            "labels": {
                "position": "crop centre / volume shape per axis (x, y, z of the RAS+ volume), canonical crops",
                "scale": "drawn crop scale s (crop side = round(s * P)), canonical crops",
                "orientation": f"index among the {len(ORIENTATIONS)} signed axis permutations (perm, flip), re-oriented crops",
                "up": f"signed patch axis that the volume's +z (longitudinal) axis points along: {', '.join(UP_NAMES)}",
            },
            "orientations": [{"perm": list(o.perm), "flip": list(o.flip)} for o in ORIENTATIONS],
            "encoders": [e.to_json() for e in self.encoders],
            "seconds": self.seconds, "versions": self.versions,
        }


def _versions() -> dict:
    import sklearn

    from ..models.files import versions

    return {**versions(), "scikit-learn": sklearn.__version__, "numpy": np.__version__}


def _unique_name(path: Path, taken: set[str]) -> str:
    base = path.name
    if path.suffix in (".safetensors", ".json"):  # a model file: its run folder names it, unless it was renamed
        base = path.parent.name if path.stem == "model" and path.parent.name else path.stem
    base = base or str(path)
    name, i = base, 2
    while name in taken or name == RANDOM_NAME:
        name, i = f"{base} ({i})", i + 1
    taken.add(name)
    return name


def _setting(meta: dict) -> tuple[str, int, tuple[float, float]]:
    """What decides an encoder's crops: preprocessing, patch side and scale range (from its metadata)."""
    pretext = meta.get("pretext") or {}
    scale_range = tuple(float(v) for v in pretext.get("scale_range", (0.5, 1.5)))
    return json.dumps(meta["preprocessing"], sort_keys=True), int(meta["patch_size"]), scale_range  # type: ignore[return-value]


def run_probe(run: str | Path, data: str | Path, config: ProbeConfig = ProbeConfig(), compare=(), modality: str | None = None,
              cache_dir: str | Path | None = None, progress: bool = False) -> ProbeResult:
    """Probe the frozen encoder of ``run`` (a pretraining run folder or model file) on the cases of ``data``.

    ``compare`` holds other pretraining runs, probed the same way on their own crops (their own
    patch side and scale range); every run must have the backbone shape of ``run``, which the random
    baseline copies. ``modality`` overrides ``dataset.json``; it must agree with the run's.

    Raises:
        CheckpointError: a run that is missing or not a pretraining model.
        VectorPoseError / DataError: a compare run of another backbone shape, data of another
        modality, unusable scans, or fewer than 2 cases.
    """
    started = time.perf_counter()
    encoders = _load_encoders(run, compare, config.seed)
    dataset = load_dataset(data, modality)
    for enc in encoders:
        wanted = enc.metadata["preprocessing"]["modality"] if enc.metadata else None
        if wanted and dataset.modality is not None and dataset.modality != wanted:
            raise VectorPoseError(f"{enc.source}: pretrained on {wanted} data, but {data} is {dataset.modality}")
    ids, fit_ids, eval_ids = _case_split(dataset, Path(data), config)
    # the probe reads images only, as pretraining does: a broken label map must not stop it
    chosen = set(ids)
    images = dataset.images_only()
    images = Dataset(images.root, tuple(c for c in images.cases if c.case_id in chosen), images.modality, images.labels)
    settings = {e.name: _setting(e.metadata or encoders[0].metadata) for e in encoders}  # the baseline takes the run's
    features, labels = _crop_features(encoders, settings, images, ids, set(fit_ids), config, cache_dir, progress)
    rows = tuple(_scores(enc, roles, settings[enc.name], features[enc.name], labels[settings[enc.name]], config)
                 for enc, roles in zip(encoders, ("run", RANDOM_NAME, *["compare"] * (len(encoders) - 2))))
    n_fit, n_eval = len(fit_ids) * config.crops_per_case, len(eval_ids) * config.crops_per_case
    return ProbeResult(run=str(run), data=str(Path(data).resolve()), config=config, fit_cases=fit_ids, evaluation_cases=eval_ids,
                       crops={"fit": n_fit, "evaluation": n_eval}, encoders=rows, seconds=time.perf_counter() - started,
                       versions=_versions())


def _load_encoders(run: str | Path, compare, seed: int) -> list[Encoder]:
    """``[run, random baseline of its shape, *compare]``; every compare run must share the run's backbone."""
    from ..models.backbone import BackboneConfig

    taken: set[str] = set()
    main = load_encoder(run, _unique_name(Path(run), taken))
    assert main.metadata is not None
    others = [load_encoder(p, _unique_name(Path(p), taken)) for p in compare]
    for encoder in (main, *others):
        assert encoder.metadata is not None
        kind = encoder.metadata["backbone"].get("kind")
        if kind is not None:  # its encoder is run block by block (features.bottleneck), which only the U-Net's layout allows
            raise VectorPoseError(f"{encoder.source}: pretrained with the {kind} backbone; the probe reads VectorPOSE's own U-Net "
                                  f"(--backbone unet)")
    for other in others:
        assert other.metadata is not None
        if other.metadata["backbone"] != main.metadata["backbone"]:
            raise VectorPoseError(f"{other.source}: backbone {other.metadata['backbone']['channels']} differs from that of {run} "
                                  f"({main.metadata['backbone']['channels']}); compared runs must share a backbone shape")
    baseline = random_encoder(BackboneConfig.from_json(main.metadata["backbone"]), seed, RANDOM_NAME)
    return [main, baseline, *others]


def _case_split(dataset: Dataset, data: Path, config: ProbeConfig) -> tuple[list[str], tuple[str, ...], tuple[str, ...]]:
    """``(case ids used, fit ids, evaluation ids)``: at most ``max_cases`` (a seeded choice), split by seed."""
    ids = sorted(c.case_id for c in dataset.cases)
    if config.max_cases is not None and len(ids) > config.max_cases:
        order = np.random.default_rng(config.seed).permutation(len(ids))
        ids = sorted(ids[i] for i in order[: config.max_cases])
    try:
        fit_ids, eval_ids = split_cases(ids, config.seed, config.fit_share)
    except ValueError as exc:
        raise DataError(data, str(exc)) from None
    if min(len(fit_ids), len(eval_ids)) * config.crops_per_case < 2:
        raise DataError(data, f"{len(fit_ids)} fit and {len(eval_ids)} evaluation cases with {config.crops_per_case} crop(s) "
                              "each: the probes need at least 2 crops on each side; draw more crops per case")
    return ids, fit_ids, eval_ids


def _crop_features(encoders: list[Encoder], settings: dict, images: Dataset, ids: list[str], fit_set: set[str], config: ProbeConfig,
                   cache_dir, progress: bool) -> tuple[dict, dict]:
    """Draw every case's crops once per crop setting and pool each encoder's features of them.

    Returns ``features[encoder][half]``, a list of ``(canonical, oriented)`` feature arrays per case, and
    ``labels[setting][half]``, the cases' :class:`ProbeCrops`, for ``half`` in ``fit`` / ``evaluation``.
    """
    import torch
    from tqdm.auto import tqdm

    from ..devices import resolve_device

    device = resolve_device(config.device)
    features: dict[str, dict[str, list]] = {e.name: {"fit": [], "evaluation": []} for e in encoders}
    labels: dict[tuple, dict[str, list]] = {}
    for setting in dict.fromkeys(settings.values()):
        prep_json, patch, scale_range = setting
        members = [e for e in encoders if settings[e.name] == setting]
        volumes, _ = preprocess_dataset(images, PreprocessingConfig.from_json(json.loads(prep_json)), cache_dir, progress=progress)
        labels[setting] = {"fit": [], "evaluation": []}
        for volume in tqdm(volumes, desc=f"probe crops (P={patch})", unit="case", disable=not progress, leave=False):
            rng = np.random.default_rng([config.seed, ids.index(volume.case_id)])
            crops = draw_case_crops(volume.image(), volume.intensity_range, volume.case_id, config.crops_per_case, patch,
                                    scale_range, rng)
            half = "fit" if volume.case_id in fit_set else "evaluation"
            labels[setting][half].append(crops)
            both = torch.cat([crops.canonical, crops.oriented])
            for enc in members:
                f = pooled_features(enc.backbone, both, config.batch_size, device, config.grid)
                features[enc.name][half].append((f[: len(crops)], f[len(crops):]))
    return features, labels


def _scores(enc: Encoder, role: str, setting: tuple, features: dict, labels: dict, config: ProbeConfig) -> EncoderScores:
    """Fit the four probes on the fit half of one encoder's features and score them on the evaluation half."""
    lab = {h: _stack_labels(labels[h]) for h in ("fit", "evaluation")}
    feat = {h: (np.concatenate([a for a, _ in features[h]]), np.concatenate([b for _, b in features[h]])) for h in ("fit", "evaluation")}
    (can_fit, ori_fit), (can_eval, ori_eval) = feat["fit"], feat["evaluation"]
    meta = enc.metadata or {}
    return EncoderScores(
        name=enc.name, role=role, source=str(enc.source) if enc.source else None,
        method=meta.get("method"), step=meta.get("step"), patch_size=setting[1], scale_range=setting[2],
        preprocessing=json.loads(setting[0]), features=int(can_fit.shape[1]),
        position=fit_regression(can_fit, lab["fit"]["position"], can_eval, lab["evaluation"]["position"]),
        scale=fit_regression(can_fit, lab["fit"]["scale"], can_eval, lab["evaluation"]["scale"]),
        orientation=fit_classifier(ori_fit, lab["fit"]["orientation"], ori_eval, lab["evaluation"]["orientation"],
                                   len(ORIENTATIONS), config.logistic_c, config.max_iter, config.seed),
        up=fit_classifier(ori_fit, lab["fit"]["up"], ori_eval, lab["evaluation"]["up"], len(UP_NAMES), config.logistic_c,
                          config.max_iter, config.seed),
    )


def _stack_labels(parts: list) -> dict[str, np.ndarray]:
    return {k: np.concatenate([getattr(p, k) for p in parts]) for k in ("position", "scale", "orientation", "up")}
