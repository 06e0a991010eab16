"""Model-parameter randomisation test (Adebayo et al., 2018): do maps depend on what was learnt?

@inproceedings{adebayo2018sanity, title={Sanity Checks for Saliency Maps}, author={Adebayo, J. and
  Gilmer, J. and Muelly, M. and Goodfellow, I. and Hardt, M. and Kim, B.}, booktitle={NeurIPS},
  year={2018}}
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from deepshield.errors import InputError
from deepshield.explain.context import Target, explaining, logits_of
from deepshield.explain.methods import Method, method_fn

MODES = ("cascade", "independent", "full")
DEFAULT_BOUND = 0.5


def parametrised_layers(model: nn.Module) -> list[str]:
    """Dotted paths of the modules that own parameters, top (logits) first: registration order
    reversed, which is forward order reversed for sequential models."""
    owners = [
        n for n, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None
    ]
    return owners[::-1]


def reinitialise(module: nn.Module) -> None:
    """Re-draw a module's own parameters from their initial distribution: `reset_parameters()`
    where the module has one (PyTorch's default init; BatchNorm also resets its running stats),
    else each parameter from N(mean, std^2) of its current values."""
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
        return
    with torch.no_grad():
        for p in module.parameters(recurse=False):
            std = p.std().item() if p.numel() > 1 else 0.0
            p.normal_(p.mean().item(), std)


def spearman_per_map(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Spearman rank correlation of each pair of maps a[i], b[i] (flattened) -> [B].

    NaN where either map is constant (it carries no ranking)."""
    a = a.detach().flatten(1).double().cpu().numpy()
    b = b.detach().flatten(1).double().cpu().numpy()
    rho = np.full(len(a), np.nan)
    for i in range(len(a)):
        if np.ptp(a[i]) > 0 and np.ptp(b[i]) > 0:
            rho[i] = spearmanr(a[i], b[i]).statistic
    return rho


def sanity_verdict(mean: float | None, bound: float) -> str:
    """ "pass" when the mean Spearman correlation is below `bound`, "fail" when not, "undefined"
    when no pair of maps had a ranking (`mean` NaN or None: every trained or randomised map was
    constant, e.g. all zero where Grad-CAM finds no positive evidence for the class)."""
    if mean is None or math.isnan(mean):
        return "undefined"
    return "pass" if mean < bound else "fail"


def sanity_text(mean: float | None, bound: float, undefined_pairs: int | None = None) -> str:
    """One line for a sanity check's mean Spearman: the value and verdict, or why it is
    undefined (`undefined_pairs`: pairs of maps skipped because one was constant)."""
    verdict = sanity_verdict(mean, bound)
    if verdict == "undefined":
        pairs = "" if undefined_pairs is None else f"{undefined_pairs} pairs; "
        return (
            f"undefined: every pair of maps held a constant map ({pairs}Grad-CAM is all zero "
            "where it finds no positive evidence for the class), so the check cannot tell "
            "trained from random weights: read these maps with care"
        )
    assert mean is not None
    return f"{mean:.3f} (bound {bound:g}: {'FAIL' if verdict == 'fail' else verdict})"


def _mean(values: np.ndarray) -> float:
    """Mean over the defined (non-NaN) values; NaN when none is defined."""
    ok = values[~np.isnan(values)]
    return float(ok.mean()) if ok.size else float("nan")


def _randomised_runs(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, fn: Method, seed: int, mode: str
) -> tuple[list[str], list[torch.Tensor], torch.Tensor]:
    """One re-initialisation: (layers, maps after each step of `mode`, maps of the fully
    re-initialised model)."""
    randomised = copy.deepcopy(model)
    layers = parametrised_layers(randomised)
    if not layers:
        raise InputError(f"{type(model).__name__} has no parameters to re-initialise")
    modules = dict(randomised.named_modules())
    devices = sorted({p.device.index for p in model.parameters() if p.device.type == "cuda"})
    steps: list[torch.Tensor] = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if mode == "independent":
            for name in layers:
                saved = copy.deepcopy(modules[name].state_dict())
                reinitialise(modules[name])
                steps.append(fn(randomised, x, target))
                modules[name].load_state_dict(saved)
        for name in layers:
            reinitialise(modules[name])
            if mode == "cascade" and name != layers[-1]:
                steps.append(fn(randomised, x, target))
        full = fn(randomised, x, target)
    if mode == "cascade":
        steps.append(full)
    return layers, steps, full


def sanity_randomization(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    method: str | Method = "grad_cam",
    seed: int = 0,
    *,
    mode: str = "cascade",
    repeats: int = 3,
    bound: float = DEFAULT_BOUND,
) -> dict[str, Any]:
    """Maps of `model` vs the same architecture with re-initialised weights; `model` is untouched.

    mode "cascade" (Adebayo et al.'s main test): re-initialise the parametrised layers one after
    another from the top (logits) down, a map after each step; "independent": re-initialise one
    layer at a time, the rest trained; "full": all layers at once. Each of `repeats`
    re-initialisations uses seed + r; Spearman correlations are averaged over them (one draw is
    noisy: a random net's Grad-CAM may light the salient object or its complement).
    Returns `spearman` [B] (per image, vs the fully re-initialised model, mean over repeats),
    `mean` (over images), `mean_per_repeat`, `per_layer` (mean after each step of `layers`;
    empty for "full"), `undefined` (pairs skipped because a map was constant) and
    `passed` = mean < bound and `verdict` (`sanity_verdict`: pass, fail or undefined) (default 0.5: trained and random maps must differ clearly; Adebayo et
    al. find rank correlations near 0 for methods that pass). A layer given to the method must be
    a dotted path (it is looked up in the randomised copy). Same seed, same numbers.
    """
    if mode not in MODES:
        raise InputError(f"mode={mode!r}: use one of {', '.join(MODES)}")
    if repeats < 1:
        raise InputError(f"repeats={repeats}: use at least one re-initialisation")
    fn = method_fn(method)
    if target is None:
        with explaining(model), torch.no_grad():
            target = logits_of(model, x).argmax(dim=1)  # [B], the trained model's prediction
    reference = fn(model, x, target)  # [B, ...]
    per_step, full = [], []
    for r in range(repeats):
        layers, steps, last = _randomised_runs(model, x, target, fn, seed + r, mode)
        per_step.append([spearman_per_map(reference, s) for s in steps])  # [steps][B]
        full.append(spearman_per_map(reference, last))  # [B]
    rho = np.stack(full)  # [repeats, B]
    steps_rho = np.array(per_step).reshape(repeats, -1, rho.shape[1])  # [repeats, steps, B]
    per_image = np.array([_mean(rho[:, i]) for i in range(rho.shape[1])])  # [B]
    mean = _mean(rho.ravel())
    return {
        "method": method if isinstance(method, str) else getattr(method, "__name__", "custom"),
        "mode": mode,
        "seed": seed,
        "repeats": repeats,
        "layers": layers,
        "per_layer": [_mean(steps_rho[:, s].ravel()) for s in range(steps_rho.shape[1])],
        "spearman": per_image.tolist(),
        "mean": mean,
        "mean_per_repeat": [_mean(r) for r in rho],
        "undefined": int(np.isnan(rho).sum()),
        "bound": bound,
        "passed": bool(mean < bound),
        "verdict": sanity_verdict(mean, bound),
    }
