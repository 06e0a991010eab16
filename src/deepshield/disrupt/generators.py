"""Generator runs: train a small translation generator into a run folder, and load one back.

`train_generator(cfg, out)` writes out/ with config.yaml, model.json + best.safetensors (what
`load_generator` and `deepshield disrupt --generator` read), history.json (per-step losses),
metrics.json (L1 to the edit targets on train and test images, in [0, 1] pixels),
trainer.safetensors (the full trainer state: an interrupted run resumes from its last
checkpoint), plots/ and report.html. The same config in the same folder reuses a finished run.

With cfg.adversarial.mode set, every training step first disrupts its batch with `disrupt`
(GAN adversarial training, Ruiz et al. 2020 sec. 3.4; GANTrainer's perturb hook).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from deepshield import data
from deepshield.data.edits import EDITS
from deepshield.disrupt.attack import disrupt
from deepshield.disrupt.config import AdversarialSpec
from deepshield.errors import DataError
from deepshield.models import spec
from deepshield.train.gan import Perturb


def training_kwargs(model: str, kwargs: dict) -> dict:
    """Builder arguments for training on the edits: c_dim = len(EDITS) and
    track_running_stats = False where the builder takes them (kwargs override)."""
    params = inspect.signature(spec(model).builder).parameters
    defaults = {}
    if "c_dim" in params:
        defaults["c_dim"] = len(EDITS)
    if "track_running_stats" in params:
        defaults["track_running_stats"] = False
    return {**defaults, **kwargs}


def real_images(dataset: str, data_kwargs: dict, seed: int, split: str) -> torch.Tensor:
    """The real (label 0) images of one split: [N, 3, H, W] in [0, 1]."""
    splits = data.load(dataset, seed=seed, **data_kwargs)
    x, y = splits.split(split).tensors()
    x = x[y == 0]
    if x.dim() != 4 or x.shape[1] != 3 or len(x) == 0:
        raise DataError(
            f"{dataset}: the {split} split has {tuple(x.shape)} real RGB images; need at least "
            "one [3, H, W] image (raise data_kwargs n)"
        )
    return x


def disruption_perturb(adv: AdversarialSpec) -> Perturb:
    """GANTrainer's perturb hook: disrupt(G, x, c) with adv's method, eps and steps.

    The random start is seeded from torch's generator, which GANTrainer seeds per step.
    """

    def perturb(generator: nn.Module, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        seed = int(torch.randint(2**62, (1,)))
        return disrupt(generator, x, c, eps=adv.eps, method=adv.method, steps=adv.steps, seed=seed)

    return perturb
