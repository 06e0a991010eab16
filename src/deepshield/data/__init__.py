"""Datasets: image folders, CIFAR-10 batches, ASVspoof protocols and the built-in synthetic sets."""

from deepshield.data.registry import load, register_source, resolve, sources
from deepshield.data.splits import Splits, TensorSet, as_batch

__all__ = ["Splits", "TensorSet", "as_batch", "load", "register_source", "resolve", "sources"]
