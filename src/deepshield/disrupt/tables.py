"""The paper's tables for one generator: methods (Table 1), class transfer (Table 4) and the
minimal-change variant (Table 5). Each returns rows (dicts) of averaged distortion metrics.

Images x are [N, 3, H, W] in the generator's range. A conditional generator is evaluated on
every image under every class (default: the c_dim one-hot attribute vectors), N * K pairs; an
unconditional one on the N images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deepshield.attacks.mode import attack_mode
from deepshield.disrupt.attack import disrupt
from deepshield.disrupt.distortion import distortion, mean_distortion
from deepshield.disrupt.views import is_conditional, one_hot_classes, translate


@dataclass(frozen=True)
class Setting:
    """What every attack of a table shares: budget, steps, step size, batching, seed."""

    eps: float = 0.05
    steps: int = 10
    alpha: float | None = None
    threshold: float = 0.05
    batch_size: int = 40
    seed: int = 0


def pairs(x: Tensor, classes: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """x [N, ...], classes [K, c_dim] -> every (image, class): x [N K, ...], c [N K, c_dim]."""
    if classes is None:
        return x, None
    n, k = len(x), len(classes)
    x_rep = x[:, None].expand(-1, k, *x.shape[1:]).reshape(n * k, *x.shape[1:])
    return x_rep, classes.to(x)[None].expand(n, -1, -1).reshape(n * k, -1)


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def generate(generator: nn.Module, x: Tensor, c: Tensor | None, batch_size: int) -> Tensor:
    """G(x, c) in eval mode without gradients, batched: [N, 3, H, W]."""
    with attack_mode(generator), torch.no_grad():
        return torch.cat(
            [
                translate(generator, x[s], None if c is None else c[s])
                for s in _chunks(len(x), batch_size)
            ]
        )


def attack(
    generator: nn.Module, x: Tensor, c: Tensor | None, method: str, setting: Setting, **kw
) -> Tensor:
    """disrupt over batches of setting.batch_size; kw: target, part, transfer, classes."""
    target = kw.pop("target", None)
    out = []
    for i, s in enumerate(_chunks(len(x), setting.batch_size)):
        t = target[s] if isinstance(target, Tensor) else target
        out.append(
            disrupt(
                generator,
                x[s],
                None if c is None else c[s],
                eps=setting.eps,
                method=method,
                steps=setting.steps,
                alpha=setting.alpha,
                target=t,
                seed=setting.seed + i,
                **kw,
            )
        )
    return torch.cat(out)


def classes_of(generator: nn.Module) -> Tensor | None:
    """The classes a table evaluates: the c_dim one-hot vectors, or None (unconditional)."""
    return one_hot_classes(generator.c_dim) if is_conditional(generator) else None


def method_table(
    generator: nn.Module, x: Tensor, methods: list[str], setting: Setting
) -> tuple[list[dict], dict[str, Tensor]]:
    """Table 1: per method, distortion of G(x_adv, c) from G(x, c) over all (image, class) pairs.

    Returns the rows and, per method, x_adv [N K, 3, H, W] (image-major, class-minor).
    """
    x_all, c_all = pairs(x, classes_of(generator))
    clean = generate(generator, x_all, c_all, setting.batch_size)
    rows, adversarial = [], {}
    for method in methods:
        x_adv = attack(generator, x_all, c_all, method, setting)
        out = generate(generator, x_adv, c_all, setting.batch_size)
        rows.append(
            {"method": method, **mean_distortion(distortion(out, clean, setting.threshold))}
        )
        adversarial[method] = x_adv
    return rows, adversarial


def transfer_table(
    generator: nn.Module,
    x: Tensor,
    method: str,
    setting: Setting,
    per_class: Tensor | None = None,
) -> list[dict]:
    """Table 4: disruption of G(x_adv, c_j) for every class j when x_adv was made for
    another class (j + 1 mod K), for all classes (iterative, joint), or for c_j itself.

    per_class: x_adv of `method_table` for this method ([N K, ...]), reused when given.
    """
    classes = classes_of(generator)
    n, k = len(x), len(classes)
    x_all, c_all = pairs(x, classes)
    clean = generate(generator, x_all, c_all, setting.batch_size)
    if per_class is None:
        per_class = attack(generator, x_all, c_all, method, setting)
    other = per_class.view(n, k, *x.shape[1:]).roll(-1, dims=1).reshape_as(per_class)
    candidates = {
        "incorrect class": other,
        "iterative": None,
        "joint": None,
        "correct class": per_class,
    }
    rows = []
    for name, x_adv in candidates.items():
        if x_adv is None:
            one = attack(generator, x, None, method, setting, transfer=name, classes=classes)
            x_adv, _ = pairs(one, classes)
        out = generate(generator, x_adv, c_all, setting.batch_size)
        rows.append({"attack": name, **mean_distortion(distortion(out, clean, setting.threshold))})
    return rows


def minimal_change_table(
    generator: nn.Module, x: Tensor, method: str, setting: Setting
) -> list[dict]:
    """Table 5: attacks towards "no change" and the distance of G(x_adv, c) to the input x
    (lower is better). GANimation adds its attention mask -> 1 and colour mask -> x."""
    x_all, c_all = pairs(x, classes_of(generator))
    variants: dict[str, dict] = {"output -> input": {"target": x_all}}
    if hasattr(generator, "forward_parts"):
        variants["attention -> 1"] = {"part": "attention", "target": 1.0}
        variants["colour -> input"] = {"part": "color", "target": x_all}
    results = {"no attack": generate(generator, x_all, c_all, setting.batch_size)}
    for name, kw in variants.items():
        x_adv = attack(generator, x_all, c_all, method, setting, **kw)
        results[name] = generate(generator, x_adv, c_all, setting.batch_size)
    rows = []
    for name, out in results.items():
        d = mean_distortion(distortion(out, x_all, setting.threshold))
        rows.append({"attack": name, "l1": d["l1"], "l2": d["l2"], "n": d["n"]})
    return rows
