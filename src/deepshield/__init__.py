"""deepshield: train, measure, attack, defend and explain deepfake detectors.

Conventions (see DESIGN.md): images are NCHW float32 in [0, 1]; speech is [B, T] float32 in
[-1, 1] at 16 kHz; label 1 = fake / spoof / adversarial, 0 = real / bona fide / clean.
"""

from deepshield.errors import DeepshieldError

__version__ = "0.1.0"
__all__ = ["DeepshieldError", "__version__"]
