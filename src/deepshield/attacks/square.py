"""Square Attack (Andriushchenko et al., ECCV 2020): a score-based random search, no gradients.

Each query changes one random square window of the perturbation and keeps the change when the
margin z_y - max_{i!=y} z_i drops; a sample is done once the margin is negative (misclassified).
The window side shrinks with the schedule of p (the fraction of pixels changed): p_init halves
after 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 queries (of 10,000; rescaled to the
budget unless rescale_schedule=False, as AutoAttack runs it). L-inf: start from random vertical
stripes of +-eps, a window becomes +-eps per channel. L2: start from a grid of the paper's
centre-weighted squares, a window gets a new centre-weighted pattern while a second window
gives its mass back, and the total is rescaled to norm eps. One window position and one sign
pattern are drawn per query for the whole batch (as the reference implementation does), so a
sample's search never depends on the other samples in its batch.

    @inproceedings{andriushchenko2020square,
      title={Square Attack: a query-efficient black-box adversarial attack via random search},
      author={Andriushchenko, Maksym and Croce, Francesco and Flammarion, Nicolas and
              Hein, Matthias}, booktitle={ECCV}, year={2020}}
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deepshield.attacks.checks import (
    check_attack,
    check_count,
    check_labels,
    check_norm,
    check_number,
)
from deepshield.attacks.gradient import _generator
from deepshield.attacks.mode import attack_mode
from deepshield.attacks.norms import _TINY, _l2, _per_sample
from deepshield.attacks.objectives import margin, predicts
from deepshield.errors import InputError

_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # of 10,000 queries


@dataclass(frozen=True)
class SquareResult:
    """x_adv [B,C,H,W]; queries [B]: model evaluations spent on each sample (0: not attacked)."""

    x_adv: Tensor
    queries: Tensor


def p_schedule(i: int, p_init: float, queries: int, rescale: bool) -> float:
    """The fraction of pixels a window covers at iteration i (0-based)."""
    if rescale:
        i = int(i / queries * 10000)
    return p_init / 2 ** sum(i > h for h in _HALVINGS)


def _per_sample_norm(v: Tensor) -> Tensor:
    """v: [B, ...] -> L2 norm per sample [B, 1, 1, 1]."""
    return _per_sample(_l2(v), v)


def _window_norm(v: Tensor) -> Tensor:
    """v: [B, C, h, w] -> L2 norm per sample and channel [B, C, 1, 1]."""
    return v.square().sum(dim=(2, 3), keepdim=True).sqrt()


def _rectangles(rows: int, cols: int) -> Tensor:
    """Concentric rectangles weighted 1/(k+1)^2 around the centre, unit L2 norm: [rows, cols]."""
    out = torch.zeros(rows, cols)
    top, left = rows // 2, cols // 2
    for k in range(max(top, left) + 1):
        out[
            max(top, 0) : min(top + 2 * k + 1, rows), max(left, 0) : min(left + 2 * k + 1, cols)
        ] += 1.0 / (k + 1) ** 2
        top, left = top - 1, left - 1
    return out / (out.square().sum().sqrt() + _TINY)


class _Draws:
    """The random choices of one search, from one generator."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator = generator

    def window(self, s: int, h: int, w: int) -> tuple:
        """The index of a random s x s window of [..., H, W] tensors."""
        top = int(torch.randint(0, h - s + 1, (1,), generator=self.generator))
        left = int(torch.randint(0, w - s + 1, (1,), generator=self.generator))
        return (..., slice(top, top + s), slice(left, left + s))

    def signs(self, *shape: int) -> Tensor:
        """Uniform +-1 of this shape."""
        return torch.randint(0, 2, shape, generator=self.generator).float() * 2 - 1

    def pattern(self, s: int) -> Tensor:
        """The L2 window pattern: +rectangles over -rectangles, unit norm, maybe transposed."""
        eta = torch.cat([_rectangles(s // 2, s), -_rectangles(s - s // 2, s)])  # [s, s]
        eta = eta / eta.square().sum().sqrt()
        return eta.T if self.signs(1).item() > 0 else eta


def _stripes(x: Tensor, eps: float, draws: _Draws) -> Tensor:
    """L-inf start: x + eps * (a random sign per channel and column), [B, C, H, W]."""
    _, c, _, w = x.shape
    return x + eps * draws.signs(1, c, 1, w).to(x)


def _grid(x: Tensor, eps: float, draws: _Draws) -> Tensor:
    """L2 start: a grid of signed centre-weighted squares, total norm eps, [B, C, H, W]."""
    _, c, h, w = x.shape
    s = max(min(h, w) // 5, 1)
    delta = torch.zeros_like(x[:1])  # [1, C, H, W]
    top0, left0 = (h - h // s * s) // 2, (w - w // s * s) // 2
    for top in range(top0, top0 + h // s * s, s):
        for left in range(left0, left0 + w // s * s, s):
            sign = draws.signs(1, c, 1, 1).to(x)
            delta[..., top : top + s, left : left + s] += draws.pattern(s).to(x) * sign
    return x + eps * delta / _per_sample_norm(delta)


def _linf_proposal(x: Tensor, best: Tensor, eps: float, p: float, draws: _Draws) -> Tensor:
    """best with one square window set to x +- eps (a sign per channel): [B, C, H, W]."""
    _, c, h, w = x.shape
    s = min(max(round(math.sqrt(p * h * w)), 1), h, w)
    window = draws.window(s, h, w)
    new = best.clone()
    new[window] = x[window] + eps * draws.signs(1, c, 1, 1).to(x)
    return new


def _l2_proposal(x: Tensor, best: Tensor, eps: float, p: float, draws: _Draws) -> Tensor:
    """best with a new pattern in window 1 and window 2 emptied, rescaled to norm eps."""
    _, c, h, w = x.shape
    s = max(round(math.sqrt(p * h * w)), 3)
    s = min(s + 1 - s % 2, h, w)  # odd, fits
    delta = best - x  # [B, C, H, W]
    first, second = draws.window(s, h, w), draws.window(s, h, w)
    both = torch.zeros_like(x[:1])
    both[first], both[second] = 1.0, 1.0
    spare = (eps**2 - _per_sample_norm(delta).square()).clamp(min=0) / c  # [B, 1, 1, 1]
    mass = _window_norm(delta * both).square()  # [B, C, 1, 1]: what both windows hold
    old = delta[first] / (_window_norm(delta[first]) + _TINY)  # [B, C, s, s]
    new = draws.pattern(s).to(x) * draws.signs(1, c, 1, 1).to(x) + old
    new = new / (_window_norm(new) + _TINY) * (spare + mass).sqrt()
    delta[second] = 0.0
    delta[first] = new
    return x + eps * delta / (_per_sample_norm(delta) + _TINY)


def square_search(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    norm: str = "linf",
    queries: int = 5000,
    p_init: float = 0.8,
    rescale_schedule: bool = True,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> SquareResult:
    """Square Attack on images x: [B,C,H,W] in [0,1] (or model.bounds), y: labels [B].

    At most `queries` model evaluations per sample (the start counts as one); points already
    misclassified at x are returned unchanged with 0 queries. Per sample, x_adv is the lowest-
    margin point found (a misclassified one when found), x itself included (the search's start
    can be weaker than x). Randomness: `generator`, else `seed`.
    """
    eps = check_number("eps", eps)
    norm = check_norm(norm)
    queries = check_count("queries", queries)
    p_init = check_number("p_init", p_init, strict=True)
    if p_init > 1:
        raise InputError(f"p_init={p_init} must be in (0, 1]: the paper uses 0.8 (0.1 for L2)")
    (lo, hi), y, _ = check_attack(model, x, y)
    if x.dim() != 4:
        raise InputError(f"x {tuple(x.shape)} is not an image batch [B,C,H,W]: Square needs images")
    draws = _Draws(_generator(seed, generator))
    start, propose = (_stripes, _linf_proposal) if norm == "linf" else (_grid, _l2_proposal)
    x = x.detach()
    spent = torch.zeros(len(x), dtype=torch.long, device=x.device)
    with attack_mode(model), torch.no_grad():
        best = x.clone()
        output = model(x)
        check_labels(output, y)
        clean_margin = margin(output, y)  # [B]
        todo = predicts(output, y).nonzero().squeeze(1)  # [b]: correctly classified
        best_margin = torch.full((len(x),), -math.inf, device=x.device)
        if len(todo):
            best[todo] = start(x[todo], eps, draws).clamp(lo, hi)
            best_margin[todo] = margin(model(best[todo]), y[todo])
            spent[todo] = 1
        for i in range(queries - 1):
            todo = todo[best_margin[todo] >= 0]
            if len(todo) == 0:
                break
            p = p_schedule(i, p_init, queries, rescale_schedule)
            new = propose(x[todo], best[todo], eps, p, draws).clamp(lo, hi)
            new_margin = margin(model(new), y[todo])  # [b]
            better = new_margin < best_margin[todo]
            best[todo[better]] = new[better]
            best_margin[todo[better]] = new_margin[better]
            spent[todo] += 1
        weaker = _per_sample(best_margin > clean_margin, x)  # the search never beat x
    return SquareResult(x_adv=torch.where(weaker, x, best), queries=spent)


def square(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    norm: str = "linf",
    queries: int = 5000,
    p_init: float = 0.8,
    rescale_schedule: bool = True,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Square Attack -> x_adv only (`square_search` also returns the queries spent per sample)."""
    return square_search(
        model, x, y, eps, norm=norm, queries=queries, p_init=p_init,
        rescale_schedule=rescale_schedule, seed=seed, generator=generator,
    ).x_adv  # fmt: skip
