"""Explanations of detectors: saliency, SmoothGrad, Grad-CAM, per-class mean maps, the
parameter-randomisation sanity check and localisation against known artefact boxes."""

from deepshield.explain.class_maps import class_mean_maps
from deepshield.explain.grad_cam import grad_cam
from deepshield.explain.layers import conv_layer_names, resolve_layer
from deepshield.explain.localization import (
    box_area_share,
    box_mask,
    localization_energy,
    localization_ratio,
)
from deepshield.explain.methods import METHODS, method_fn
from deepshield.explain.saliency import saliency, smoothgrad
from deepshield.explain.sanity import sanity_randomization

__all__ = [
    "METHODS",
    "box_area_share",
    "box_mask",
    "class_mean_maps",
    "conv_layer_names",
    "grad_cam",
    "localization_energy",
    "localization_ratio",
    "method_fn",
    "resolve_layer",
    "saliency",
    "sanity_randomization",
    "smoothgrad",
]
