"""Models: a registry of architectures, created by name (see `create`)."""

from deepshield.models.normalize import Normalize, Normalized
from deepshield.models.registry import create, names, param_count, register, spec
from deepshield.models.weights import load_weights, save_weights

__all__ = [
    "Normalize",
    "Normalized",
    "create",
    "load_weights",
    "names",
    "param_count",
    "register",
    "save_weights",
    "spec",
]
