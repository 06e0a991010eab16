"""Disruption of image-translation generators: FGSM, I-FGSM and PGD on the generator's output.

Ruiz et al. (2020) perturb the input x of a generator G so that G(x_adv, c) is far from what G
makes of the clean image, r = G(x, c) (the "ideal disruption": maximise ||G(x_adv, c) - r||^2),
or close to a chosen target r (minimise). Every variant is a configuration of the attack core
(`deepshield.attacks.attack_loop`) on the model x -> G(x, c) - r (`views.Displacement`), with
the L-inf budget eps and the bounds of the generator:

    fgsm    one step of size eps
    ifgsm   `steps` steps of size alpha (default eps / 5: the paper's a = 0.01 at eps = 0.05)
    pgd     as ifgsm from a uniform random start in the eps-ball

Range convention: x, eps and alpha are in the generator's range `generator.bounds` ([-1, 1] for
every generator here), as in the paper, so eps = 0.05 moves a pixel by at most 0.05 of [-1, 1],
that is 0.025 in [0, 1] pixels (6.4 / 255). `from_pixels` / `to_pixels` convert.

Away from r, x itself is a stationary point (the gradient of ||G(x, c) - r||^2 is 0 there), so
FGSM and I-FGSM start from x plus a uniform jitter of +-`jitter` (1e-3, as the official code's
fixed-seed variant); PGD's random start needs none.

Class-transferable disruption (conditional G, the attacked class unknown): `transfer="joint"`
sums the losses over all classes at every step; `transfer="iterative"` attacks class c_k at step
k (cycling), through the core's on_step hook. Each class has its own reference r_k = G(x, c_k).

GANimation (`forward_parts`): part="output" attacks the mixed image; "attention" or "color"
attack the attention mask A [B, 1, H, W] or the colour mask C (e.g. target=1.0 on the attention
makes y = (1 - A) C + A x return the input unchanged).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepshield.attacks.checks import (
    check_count,
    check_images,
    check_model_device,
    check_number,
    model_bounds,
)
from deepshield.attacks.core import attack_loop
from deepshield.attacks.mode import attack_mode
from deepshield.attacks.norms import Budget, SteepestStep
from deepshield.disrupt.views import (
    PARTS,
    Displacement,
    as_batch_classes,
    is_conditional,
    one_hot_classes,
    squared_distance,
    translate_classes,
)
from deepshield.errors import InputError

METHODS = ("fgsm", "ifgsm", "pgd")
TRANSFERS = ("iterative", "joint")


def from_pixels(x: Tensor, bounds: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """x: [0, 1] pixels -> the generator's range `bounds`."""
    lo, hi = bounds
    return lo + (hi - lo) * x


def to_pixels(y: Tensor, bounds: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """y in the generator's range `bounds` -> [0, 1] pixels (clamped)."""
    lo, hi = bounds
    return ((y - lo) / (hi - lo)).clamp(0, 1)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InputError(f"{name}={value!r} is unknown: use one of {', '.join(allowed)}")
    return value


def attack_classes(
    generator: nn.Module,
    x: Tensor,
    c: Tensor | None,
    transfer: str | None,
    classes: Tensor | None,
) -> Tensor | None:
    """The classes each image is attacked under: [B, K, c_dim], or None for an unconditional G."""
    if not is_conditional(generator):
        if c is not None or transfer is not None or classes is not None:
            raise InputError(
                "the generator is unconditional (no c_dim): pass neither c, classes nor transfer"
            )
        return None
    c_dim = generator.c_dim
    if transfer is None:
        if classes is not None:
            raise InputError("classes= is for transfer='iterative'/'joint': pass c instead")
        if c is None:
            raise InputError(
                f"the generator is conditional: pass c [B, {c_dim}] (or transfer= with classes)"
            )
        c = c.to(x.device, x.dtype)
        if c.dim() == 1:
            c = c[None].expand(len(x), -1)
        if c.shape != (len(x), c_dim):
            raise InputError(f"c has shape {tuple(c.shape)}: pass [{len(x)}, {c_dim}] or [{c_dim}]")
        chosen = c[:, None]  # [B, 1, c_dim]
    else:
        if c is not None:
            raise InputError(
                "with transfer=, pass the candidate classes as classes=[K, c_dim], not c"
            )
        classes = one_hot_classes(c_dim) if classes is None else classes
        classes = classes.to(x.device, x.dtype)
        if classes.dim() not in (2, 3) or classes.shape[-1] != c_dim or classes.shape[-2] == 0:
            raise InputError(
                f"classes has shape {tuple(classes.shape)}: pass [K, {c_dim}] or [B, K, {c_dim}]"
            )
        chosen = as_batch_classes(classes, len(x))
        if chosen.shape[0] != len(x):
            raise InputError(f"classes has {chosen.shape[0]} rows for {len(x)} images")
    if not torch.isfinite(chosen).all():
        raise InputError("the attribute vectors contain NaN or inf: pass finite values")
    return chosen


def _targets(target: Tensor | float, references: Tensor) -> Tensor:
    """A target image/mask [B or 1, C, H, W] or a constant -> [B, K, C, H, W] like references."""
    if not isinstance(target, Tensor):
        value = check_number("target", target, minimum=float("-inf"))
        return torch.full_like(references, value)
    target = target.to(references.device, references.dtype)
    if target.dim() in (3, 4):
        target = target[:, None] if target.dim() == 4 else target[None, None]
    try:
        out = target.expand_as(references)
    except RuntimeError:
        want = (references.shape[0], *references.shape[2:])
        raise InputError(
            f"target has shape {tuple(target.shape)}: pass a float or a tensor {want}"
        ) from None
    if not torch.isfinite(out).all():
        raise InputError("target contains NaN or inf: pass finite values")
    return out


def disrupt(
    generator: nn.Module,
    x: Tensor,
    c: Tensor | None = None,
    *,
    eps: float = 0.05,
    method: str = "ifgsm",
    steps: int = 10,
    alpha: float | None = None,
    target: Tensor | float | None = None,
    transfer: str | None = None,
    classes: Tensor | None = None,
    part: str = "output",
    jitter: float = 1e-3,
    seed: int = 0,
    rng: torch.Generator | None = None,
) -> Tensor:
    """x: [B, 3, H, W] in generator.bounds -> x_adv, same shape and range, |x_adv - x| <= eps.

    c: [B, c_dim] or [c_dim] for a conditional G (None for an unconditional one, or with
    transfer). target None: away from the clean output (part) of G; a tensor [B, C, H, W] or a
    float: towards it. transfer "iterative" / "joint" attacks every class in classes ([K, c_dim]
    or [B, K, c_dim], default the c_dim one-hot vectors). fgsm ignores steps and alpha. Random
    starts (PGD's, the jitter) come from `rng`, else `seed`. G runs in eval mode, frozen.
    """
    method = _choice("method", method, METHODS)
    part = _choice("part", part, PARTS)
    if transfer is not None:
        _choice("transfer", transfer, TRANSFERS)
    eps = check_number("eps", eps)
    steps = check_count("steps", steps)
    alpha = eps / 5 if alpha is None else check_number("alpha", alpha)
    jitter = check_number("jitter", jitter)
    bounds = model_bounds(generator)
    check_images(x, bounds)
    check_model_device(generator, x)
    chosen = attack_classes(generator, x, c, transfer, classes)
    if part != "output" and (chosen is None or not hasattr(generator, "forward_parts")):
        raise InputError(
            f"part={part!r} needs a generator with attention and colour masks (GANimation): "
            "use part='output'"
        )
    x = x.detach()
    with attack_mode(generator), torch.no_grad():
        references = translate_classes(generator, x, chosen, part)  # [B, K, C, H, W]
    towards = target is not None
    if towards:
        references = _targets(target, references)
    iterative = transfer == "iterative"
    view = Displacement(generator, chosen, references, part, iterative=iterative)
    if method == "fgsm":
        steps, alpha = 1, eps
    pgd = method == "pgd"
    return attack_loop(
        view,
        x,
        None,
        budget=Budget("linf", eps),
        step=SteepestStep("linf", alpha),
        steps=steps,
        objective=squared_distance,
        maximize=not towards,
        random_start=pgd or (not towards and jitter > 0),
        start_radius=None if pgd else min(jitter, eps),
        bounds=bounds,
        generator=rng if rng is not None else torch.Generator(x.device).manual_seed(seed),
        on_step=view.select if iterative else None,
    )
