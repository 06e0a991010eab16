"""The evaluation engine: run an attack or any other transform over a dataset, batch by batch,
and score every sample with one or more models. Sweeps, robustness tables, the defences'
attack tables and the adversarial-example detector's pairs all go through `score_dataset`.

One rule for each thing every caller used to decide on its own:
- device: `device`, else the device of the first model's parameters (x's for a parameter-free
  model); batches move there, results come back on CPU in dataset order;
- model state: every model is scored under `models.frozen.frozen_eval` (eval, frozen, restored
  exactly), without gradients; the transform runs outside it (an attack sets its own state);
- logits: `objectives.as_logits`, so a one-logit detector z scores as (0, z) and P(fake) is
  softmax(logits)[:, 1] = sigmoid(z) for every detector;
- seeds: the transform receives the batch's global index and decides (each caller's rule is
  written where it builds its transform);
- sharding: with sharded=True under torchrun each rank transforms a contiguous share of the
  batches (`train.distributed.shard_indices`) and every rank gets all N results.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from deepshield import progress
from deepshield.attacks.checks import check_batch, check_count, check_number
from deepshield.attacks.objectives import as_logits
from deepshield.models.frozen import frozen_eval
from deepshield.train import distributed

# (x batch [b,...] on the device, y [b], global batch index) -> transformed batch [b,...],
# optionally with per-sample extras [b] (e.g. an attack's query counts)
Transform = Callable[[Tensor, Tensor, int], "Tensor | tuple[Tensor, dict[str, Tensor]]"]
AttackFn = Callable[[nn.Module, Tensor, Tensor, float], Tensor]  # (model, x, y, eps) -> x_adv


@dataclass
class Scored:
    """Per-sample results of `score_dataset` (CPU, dataset order).

    y: [N]; logits[name]: [N, C] (one-logit models as (0, z)); l2, linf: [N] norms of the
    transformed input minus x (0 without a transform); kept: the transformed inputs of the
    `keep` samples held by this process [k, ...] (None when none); extras[name]: [N] per-sample
    values the transform returned.
    """

    y: Tensor
    logits: dict[str, Tensor]
    l2: Tensor
    linf: Tensor
    kept: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    def scores(self, name: str = "model") -> Tensor:
        """P(fake) = P(class 1) per sample [N] of model `name`."""
        return self.logits[name].softmax(1)[:, 1]

    def predictions(self, name: str = "model") -> Tensor:
        """Predicted classes [N] of model `name`."""
        return self.logits[name].argmax(1)

    def accuracy(self, name: str = "model") -> float:
        """Share of samples model `name` classifies as y (0 for no samples)."""
        correct = int((self.predictions(name) == self.y).sum())
        return correct / len(self.y) if len(self.y) else 0.0


def model_device(model: nn.Module, x: Tensor) -> torch.device:
    """The device a model runs on: its first parameter's, else x's."""
    return next(model.parameters(), x).device


def batch_logits(model: nn.Module, x: Tensor) -> Tensor:
    """Logits [b, C] on CPU (float32) of `model` on a batch x already on its device: frozen eval,
    no gradients, one-logit outputs as (0, z)."""
    with frozen_eval(model), torch.no_grad():
        return as_logits(model(x)).float().cpu()


def score_dataset(
    models: nn.Module | Mapping[str, nn.Module],
    x: Tensor,
    y: Tensor,
    transform: Transform | None = None,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    keep: Sequence[int] | Tensor | None = None,
    sharded: bool = False,
    description: str | None = None,
    view: Callable[[Tensor], Tensor] | None = None,
) -> Scored:
    """x: [N,...], y: [N] -> Scored: each batch transformed (e.g. attacked) then scored by every
    model (a single module is named "model"; none: only transformed, e.g. to keep the
    examples; device: default the first model's, else x's). keep: global sample indices whose transformed
    inputs come back in Scored.kept. description: the progress bar's text (per batch, with the
    attack's steps when it reports them). view: what the models score of each transformed batch
    (e.g. real JPEG after the attack); norms and kept inputs are of the batch before it."""
    named = {"model": models} if isinstance(models, nn.Module) else dict(models)
    batch_size = check_count("batch_size", batch_size)
    check_batch(y, x)
    if device is None:
        device = model_device(next(iter(named.values()), nn.Identity()), x)
    device = torch.device(device)
    n_batches = -(-len(x) // batch_size)
    keep_set = set(torch.as_tensor(keep if keep is not None else [], dtype=torch.long).tolist())
    logits: dict[str, list[Tensor]] = {name: [] for name in named}
    norms: list[Tensor] = []
    kept: list[Tensor] = []
    extras: dict[str, list[Tensor]] = {}
    batches = distributed.shard_indices(n_batches) if sharded else range(n_batches)
    for b in progress.track(batches, description or "scoring", total=len(batches)):
        xb = x[b * batch_size : (b + 1) * batch_size].to(device)  # [b, ...]
        yb = y[b * batch_size : (b + 1) * batch_size].to(device)  # [b]
        xt, more = xb, {}
        if transform is not None:
            out = transform(xb, yb, b)
            xt, more = out if isinstance(out, tuple) else (out, {})
            xt = xt.detach()
        seen = view(xt) if view is not None and named else xt
        for name, m in named.items():
            logits[name].append(batch_logits(m, seen))
        delta = (xt - xb).flatten(1)  # [b, D]
        norms.append(torch.stack([delta.norm(dim=1), delta.abs().amax(dim=1)], 1).float().cpu())
        for key, value in more.items():
            extras.setdefault(key, []).append(value.cpu())
        rows = [i for i in range(len(xb)) if b * batch_size + i in keep_set]
        if rows:
            kept.append(xt[rows].cpu())
    gathered = {name: _gathered(parts, sharded) for name, parts in logits.items()}
    norm = _gathered(norms, sharded, (2,))
    return Scored(
        y=y.cpu(),
        logits=gathered,
        l2=norm[:, 0].contiguous(),
        linf=norm[:, 1].contiguous(),
        kept=torch.cat(kept) if kept else None,
        extras={k: _gathered(v, sharded, (), v[0].dtype) for k, v in extras.items()},
    )


def _gathered(
    parts: list[Tensor],
    sharded: bool,
    trailing: tuple[int, ...] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Per-batch parts concatenated (an empty shard: [0, *trailing]); every rank's when sharded."""
    out = torch.cat(parts) if parts else torch.zeros((0, *(trailing or (0,))), dtype=dtype)
    return distributed.gather_tensors(out) if sharded else out


def attack_transform(
    attack: Callable[..., Tensor],
    model: nn.Module,
    eps: float,
    *,
    batch_size: int,
    seed: int = 0,
    post: Callable[[Tensor], Tensor] | None = None,
    **options: object,
) -> Transform:
    """A Transform that attacks each batch: attack(model, x, y, eps, seed=seed + index of the
    batch's first sample, **options), then `post` (e.g. rounding to 8 bits)."""

    def run(xb: Tensor, yb: Tensor, b: int) -> Tensor:
        adv = attack(model, xb, yb, eps, seed=seed + b * batch_size, **options).detach()
        return post(adv) if post is not None else adv

    return run


@dataclass(frozen=True)
class RobustAccuracy:
    """accuracy[k] under eps[k]; scores[k]: P(fake) = P(class 1) per sample [N] (eps 0 = clean)."""

    eps: list[float]
    accuracy: list[float]
    scores: Tensor  # [len(eps), N]


def robust_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attack_fn: AttackFn,
    eps_list: Sequence[float],
    batch_size: int = 256,
) -> RobustAccuracy:
    """x: [N,...] in [0,1] (any device; batches go to the model's), y: [N] -> RobustAccuracy.

    attack_fn(model, x, y, eps) -> x_adv, e.g. `lambda m, x, y, e: pgd(m, x, y, e, seed=0)`;
    eps 0 is evaluated on the clean inputs without calling it.
    """
    eps_list = [check_number("eps", e) for e in eps_list]
    results = []
    for eps in eps_list:

        def attacked(xb: Tensor, yb: Tensor, _: int, eps: float = eps) -> Tensor:
            return attack_fn(model, xb, yb, eps)

        results.append(
            score_dataset(model, x, y, attacked if eps > 0 else None, batch_size=batch_size)
        )
    return RobustAccuracy(
        eps=eps_list,
        accuracy=[r.accuracy() for r in results],
        scores=torch.stack([r.scores() for r in results]) if results else torch.zeros(0, len(x)),
    )
