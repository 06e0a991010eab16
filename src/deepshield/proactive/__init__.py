"""Proactive protection (Asnani et al., CVPR 2022): a learned set of imperceptible templates,
one added to an image before release, and a detector that looks for it, so that a later
manipulation by a generative model is detectable. `run_experiment` (deepshield.proactive.
experiment) runs the whole study; docs/proactive.md describes it and its measured results.
"""

from deepshield.proactive.config import ProactiveConfig
from deepshield.proactive.detector import ProactiveDetector, load_detector, save_detector
from deepshield.proactive.evaluate import evaluate
from deepshield.proactive.native import p_manipulated_native, protect_native
from deepshield.proactive.templates import TemplateSet, add_template
from deepshield.proactive.training import DetectorTrainer

__all__ = [
    "DetectorTrainer",
    "ProactiveConfig",
    "ProactiveDetector",
    "TemplateSet",
    "add_template",
    "evaluate",
    "load_detector",
    "p_manipulated_native",
    "protect_native",
    "save_detector",
]
