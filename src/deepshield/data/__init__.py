"""Datasets: image folders, CIFAR-10 batches, ASVspoof protocols and the built-in synthetic sets."""

from deepshield.data.registry import all_sources, check, load, register_source, resolve
from deepshield.data.splits import Splits, TensorSet, as_batch
from deepshield.data.summary import describe

# Note: `deepshield.data.sources` is the package of source modules; the list of registered
# sources is `all_sources()` (a function of that name would be shadowed by the package).

__all__ = [
    "Splits",
    "TensorSet",
    "all_sources",
    "as_batch",
    "check",
    "describe",
    "load",
    "register_source",
    "resolve",
]
