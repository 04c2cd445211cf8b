"""VectorPOSE: spatially-aware self-supervised pretraining of 3D segmentation networks.

Zhang, Gu, Sapkota, Zheng, Liang, Chen, "A Point in the Right Direction: Vector Prediction for
Spatially-aware Self-supervised Volumetric Representation Learning", ISBI 2023 (arXiv 2211.08533).

The names below are the public API; each lives in the module that owns its concept.
"""

__version__ = "0.1.0"

from .benchmark.runner import BenchmarkConfig, run_benchmark
from .data.datasets import Dataset, load_dataset
from .data.preprocessing import PreprocessingConfig, preprocess_dataset
from .inference.evaluate import evaluate
from .inference.predictor import load_predictor, load_segmenter, predict
from .methods import get_method
from .models.backbone import BackboneConfig, UNetBackbone
from .models.dynunet_backbone import DynUNetBackboneConfig
from .pretext.masking import MaskingConfig
from .pretext.sample import PretextConfig, make_pretext_sample
from .probe import ProbeConfig, ProbeResult, run_probe
from .training.pretext_data import PretextDataset
from .training.finetune import FinetuneConfig, finetune
from .training.pretrain import PretrainConfig, load_pretext_network, pretrain

__all__ = [
    "BackboneConfig",
    "BenchmarkConfig",
    "Dataset",
    "DynUNetBackboneConfig",
    "FinetuneConfig",
    "MaskingConfig",
    "PreprocessingConfig",
    "PretextConfig",
    "PretextDataset",
    "PretrainConfig",
    "ProbeConfig",
    "ProbeResult",
    "UNetBackbone",
    "evaluate",
    "finetune",
    "get_method",
    "load_dataset",
    "load_predictor",
    "load_pretext_network",
    "load_segmenter",
    "make_pretext_sample",
    "predict",
    "preprocess_dataset",
    "pretrain",
    "run_probe",
    "run_benchmark",
]
