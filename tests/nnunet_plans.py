"""nnU-Net v2 plans files for tests, in the format ``nnUNetv2_plan_and_preprocess`` writes.

``hippocampus_plans`` follows what nnU-Net v2 plans for MSD Task04 Hippocampus in 3d_fullres (patch
40×56×40 at 1 mm, 4 stages of 32–256 features, strides 1, 2, 2, 2, a PlainConvUNet); ``features``
makes it narrower, to keep CPU tests fast.
"""

from __future__ import annotations

import json
from pathlib import Path

INSTANCE_NORM = {"eps": 1e-05, "affine": True}
REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]


def architecture(network: str = "PlainConvUNet", features=(32, 64, 128, 256), strides=None, dims: int = 3) -> dict:
    n = len(features)
    strides = strides or [[1] * dims] + [[2] * dims] * (n - 1)
    kwargs = {
        "n_stages": n,
        "features_per_stage": list(features),
        "conv_op": f"torch.nn.modules.conv.Conv{dims}d",
        "kernel_sizes": [[3] * dims] * n,
        "strides": strides,
        "n_conv_per_stage_decoder": [2] * (n - 1) if network == "PlainConvUNet" else [1] * (n - 1),
        "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
        "norm_op_kwargs": INSTANCE_NORM,
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    if network == "PlainConvUNet":
        kwargs["n_conv_per_stage"] = [2] * n
    else:
        kwargs["n_blocks_per_stage"] = [1, 3, 4, 6, 6, 6][:n]
    return {"network_class_name": f"dynamic_network_architectures.architectures.unet.{network}", "arch_kwargs": kwargs,
            "_kw_requires_import": REQUIRES_IMPORT}


def configuration(arch: dict, patch_size, spacing) -> dict:
    return {
        "data_identifier": "nnUNetPlans_3d_fullres" if len(patch_size) == 3 else "nnUNetPlans_2d",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 9 if len(patch_size) == 3 else 366,
        "patch_size": list(patch_size),
        "median_image_size_in_voxels": [36.0, 50.0, 35.0][-len(patch_size):],
        "spacing": list(spacing),
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": arch,
        "batch_dice": False,
    }


def hippocampus_plans(features=(32, 64, 128, 256), network: str = "PlainConvUNet", strides=None) -> dict:
    n = len(features)
    return {
        "dataset_name": "Dataset004_Hippocampus",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": [36, 50, 35],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            "2d": configuration(architecture(network, features, dims=2), [56, 40], [1.0, 1.0]),
            "3d_fullres": configuration(architecture(network, features, strides), [40, 56, 40], [1.0, 1.0, 1.0]),
            "3d_lowres_like": {"inherits_from": "3d_fullres", "batch_size": 2},
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 486420.2, "mean": 22360.3, "median": 362.9, "min": 0.0, "percentile_00_5": 28.0,
                  "percentile_99_5": 277682.2, "std": 60656.2}},
        "_n": n,
    }


def write_plans(path: Path, plans: dict) -> Path:
    plans = {k: v for k, v in plans.items() if not k.startswith("_")}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plans, indent=2))
    return path
