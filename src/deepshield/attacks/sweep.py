"""Attack sweeps: a model's accuracy under one attack at several budgets (eps), and for detectors
(two classes, 1 = fake) AUC, EER and the share of fakes passed as real, per budget.

White-box: the attacked model crafts the examples. Transfer (black-box): a surrogate crafts them
and other models are evaluated on them. Under torchrun the batches are sharded over the ranks
(`deepshield.train.distributed`): every batch is attacked exactly as in one process (same
composition, same seed), so N processes give the numbers of one.

Evasion, the usual threat model for a detector, is read off the same sweep: an untargeted attack
on a fake (label 1) of a two-class detector pushes it towards "real", so the evasion view keeps
real images clean and takes the attacked fakes (`SweepResult.rows(...)["evasion"]`).

Budgets nest: a point crafted at eps_j lies in every ball of radius eps >= eps_j (and x in
all), so per sample and budget the sweep uses the most adversarial point among x and the
points crafted at budgets <= eps, judged by the crafting model's margin z_y - max_{i!=y} z_i
(misclassified first, then the lowest margin; its own point on ties). White-box curves
(accuracy, AUC, EER, fakes passed) are therefore monotone in eps by construction; a transfer
target sees the points its surrogate chose. Each budget's own ("raw") result is kept too, and
each row says how many samples borrowed a point from a smaller budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from deepshield.attacks.checks import check_batch, check_count, check_norm, check_number
from deepshield.attacks.eot_transforms import processing_spec, real_transform, stand_ins
from deepshield.attacks.masks import parse_mask
from deepshield.attacks.mode import attack_mode
from deepshield.attacks.objectives import as_logits, margin
from deepshield.attacks.registry import Attack, get_attack, square_with_queries
from deepshield.errors import InputError
from deepshield.train import distributed

GRID_SIZE = 6  # images kept for the clean / adversarial / perturbation grid
# Query-based attacks whose sweeps keep the model queries spent per sample (SweepResult.queries).
QUERY_COUNTED = {"square": square_with_queries}


@dataclass(frozen=True)
class AttackSpec:
    """One attack configuration: a registry name (`attacks.registry.ATTACKS`), budgets, options.

    eps 0 means the clean inputs (no attack call). `mask`: "full", "center:SIZE" or "patch:SIZE"
    (a random SIZE x SIZE square per image, placed by `seed` and the batch index). steps None:
    the attack's registry default (`Attack.steps`: 10 for pgd, 100 for apgd and CW-L2, 5000
    Square queries), filled in by `checked`, as the CLI does.
    eot_samples > 1: every gradient is the mean of that many forward passes (EOT, for randomised
    models such as a purifier with random initialisation). For CW-L2 (`Attack.minimal`) eps is
    an L2 budget: accuracy at eps counts an example as broken only when the smallest
    perturbation CW found has L2 norm <= eps (a robust-accuracy-vs-L2 curve).
    eot_transforms: craft through differentiable stand-ins of processing, e.g. ("jpeg:75",)
    (`attacks.eot_transforms`). eval_after: a real processing spec (`data.processing`, e.g.
    "jpeg:75") applied to every point, clean ones included, before the models score it.
    """

    attack: str = "pgd"
    eps: tuple[float, ...] = (0.0, 2 / 255, 4 / 255, 8 / 255)
    steps: int | None = None
    norm: str = "linf"
    restarts: int = 1
    mask: str = "full"
    seed: int = 0
    eot_samples: int = 1
    eot_transforms: tuple[str, ...] = ()
    eval_after: str | None = None

    def checked(self) -> AttackSpec:
        """This spec with eps as floats and the attack's defaults filled in; InputError /
        ConfigError on any bad value (no work done)."""
        entry = get_attack(self.attack)
        if len(self.eps) == 0:
            raise InputError("no eps given: pass at least one budget, e.g. --eps 0,4/255,8/255")
        eps = tuple(check_number("eps", e) for e in self.eps)
        if self.steps is not None:
            check_count("steps", self.steps)
        check_count("restarts", self.restarts)
        check_count("eot_samples", self.eot_samples)
        check_norm(self.norm)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InputError(f"seed={self.seed!r} must be an integer: pass e.g. seed=0")
        _, _, size = self.mask.partition(":")
        side = int(size) if size.isdigit() and int(size) > 0 else 1
        parse_mask(self.mask, 1, side, side)  # syntax (ConfigError) and size >= 1 (InputError)
        steps = entry.steps if self.steps is None or entry.fixed else self.steps
        norm = "l2" if entry.minimal else self.norm  # an L2 search, whatever was passed
        entry.refuse(norm, self.mask.strip() != "full", self.restarts, self.eot_samples)
        eot = tuple(t.spec for t in stand_ins(self.eot_transforms)) if self.eot_transforms else ()
        after = None if self.eval_after is None else processing_spec(self.eval_after)
        return replace(self, attack=entry.name, eps=eps, steps=steps, norm=norm,
                       eot_transforms=eot, eval_after=after)  # fmt: skip

    def check_fits(self, shape: Sequence[int]) -> None:
        """InputError when the mask does not fit samples of `shape` (images [C, H, W])."""
        if self.mask.strip() == "full":
            return
        if len(shape) != 3:
            raise InputError(
                f"mask {self.mask!r} needs images [C,H,W], the data has samples {tuple(shape)}: "
                "use --mask full"
            )
        parse_mask(self.mask, 1, shape[1], shape[2])

    def batch_mask(self, batch: int, index: int, shape: Sequence[int]) -> Tensor | None:
        """The mask of global batch `index` (`batch` images of `shape` [C,H,W]), or None."""
        gen = torch.Generator().manual_seed(self.seed + index)
        return parse_mask(self.mask, batch, shape[1], shape[2], gen) if len(shape) == 3 else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters."""
        return {
            "attack": self.attack,
            "eps": list(self.eps),
            "steps": self.steps,
            "norm": self.norm,
            "restarts": self.restarts,
            "mask": self.mask,
            "seed": self.seed,
            "eot_samples": self.eot_samples,
            "eot_transforms": list(self.eot_transforms),
            "eval_after": self.eval_after,
        }

    def processed(self, points: Sequence[Tensor]) -> list[Tensor]:
        """The points as the models see them: after the real `eval_after` processing (images
        [B,3,H,W] or speech [B,T]), the clean point (the first) once; unchanged without it."""
        if self.eval_after is None:
            return list(points)
        modality = "image" if points[0].dim() == 4 else "speech"
        real = real_transform(self.eval_after, modality)
        first = real(points[0])
        return [first, *(first if p is points[0] else real(p) for p in points[1:])]


@dataclass
class SweepResult:
    """Per-sample outputs of one sweep on one evaluated model (CPU tensors, dataset order).

    y: [N]; clean_logits: [N, C]; adv_logits: [E, N, C] at the point used under eps[k] (nested:
    the module docstring; eps 0 = clean); raw_adv_logits: [E, N, C] at the point crafted at
    eps[k] itself; source: [E, N] which point is used (0: x, j + 1: the one crafted at eps[j]);
    l2, linf: [E, N] norms of x_adv - x of the points used; surrogate_logits: [E, N, C] of the
    crafting model when it is another model (transfer), else None; grid: a few images of the
    first batch (rank 0 only): "index" [k], "clean" [k,C,H,W], "adversarial" [E,k,C,H,W] in
    [0,1] (the points used), "mask" [k,1,H,W] (absent for full-image attacks); queries: [E, N]
    model queries spent per sample by the run at eps[k] itself (QUERY_COUNTED attacks, 0 where
    not attacked), else None.
    """

    eps: list[float]
    y: Tensor
    clean_logits: Tensor
    adv_logits: Tensor
    l2: Tensor
    linf: Tensor
    raw_adv_logits: Tensor
    source: Tensor
    surrogate_logits: Tensor | None = None
    grid: dict[str, Tensor] | None = None
    queries: Tensor | None = None

    @property
    def detector(self) -> bool:
        """True for two-class outputs (label 1 = fake): detector metrics are reported."""
        return self.clean_logits.shape[1] == 2

    def clean(self) -> dict[str, Any]:
        """Metrics on the clean inputs."""
        return _metrics(self.y, self.clean_logits, self.detector)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per eps: accuracy, norms, (detectors) auc/eer/fake_passed_as_real/... and
        "evasion" (clean reals + attacked fakes), (transfer) surrogate_accuracy; "raw": the
        metrics of the points crafted at this eps alone; "borrowed": samples whose point came
        from x or a smaller budget, "borrowed_from": their count per budget ("0": x)."""
        out = []
        fake = (self.y == 1)[:, None]  # [N, 1]
        budgets = [0.0, *self.eps]  # the budget of each source index
        for k, eps in enumerate(self.eps):
            row: dict[str, Any] = {"eps": eps}
            row.update(_metrics(self.y, self.adv_logits[k], self.detector))
            row["raw"] = _metrics(self.y, self.raw_adv_logits[k], self.detector)
            lent = self.source[k][self.source[k] != k + 1]  # [n borrowed]
            row["borrowed"] = len(lent)
            row["borrowed_from"] = {
                f"{budgets[j]:.6g}": int((lent == j).sum()) for j in lent.unique().tolist()
            }
            row["l2_median"] = float(self.l2[k].median()) if len(self.y) else 0.0
            row["linf_max"] = float(self.linf[k].max()) if len(self.y) else 0.0
            if self.detector:
                evasion = torch.where(fake, self.adv_logits[k], self.clean_logits)  # [N, 2]
                row["evasion"] = _metrics(self.y, evasion, True)
            if self.surrogate_logits is not None:
                row["surrogate_accuracy"] = _metrics(self.y, self.surrogate_logits[k], False)[
                    "accuracy"
                ]
            out.append(row)
        return out


def _metrics(y: Tensor, logits: Tensor, detector: bool) -> dict[str, Any]:
    """accuracy of argmax(logits [N,C]) against y [N]; detectors add detector_metrics' rates."""
    from deepshield.metrics import detector_metrics

    correct = int((logits.argmax(1) == y).sum())
    out: dict[str, Any] = {"accuracy": correct / len(y) if len(y) else 0.0}
    if detector:
        m = detector_metrics(y.numpy(), logits.softmax(1)[:, 1].numpy(), threshold=0.5)
        keys = ("auc", "eer", "fake_passed_as_real", "real_flagged_as_fake", "balanced_accuracy")
        for key in (*keys, "predicted_fake_share", "collapsed", "collapsed_to"):
            out[key] = m[key]
    return out


def attack_sweep(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    *,
    surrogate: nn.Module | None = None,
    batch_size: int = 128,
) -> SweepResult:
    """x: [N,...] in [0,1], y: [N] -> SweepResult of `model` under `spec`.

    White-box when surrogate is None; otherwise transfer: the examples are crafted on
    `surrogate` and `model` is evaluated on them (the surrogate's own accuracy is kept too).
    """
    crafter = surrogate if surrogate is not None else model
    return transfer_sweep(crafter, {"model": model}, x, y, spec, batch_size=batch_size)["model"]


def transfer_sweep(
    crafter: nn.Module,
    targets: Mapping[str, nn.Module],
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    *,
    batch_size: int = 128,
) -> dict[str, SweepResult]:
    """Craft on `crafter` once per batch and eps, evaluate every target -> {name: SweepResult}.

    A target that is `crafter` itself gets the white-box result. x: [N,...] in [0,1], y: [N];
    batches go to the crafter's device. Under torchrun each rank attacks its share of the
    batches and every rank gets all N results.
    """
    spec = spec.checked()
    batch_size = check_count("batch_size", batch_size)
    check_batch(y, x)
    if len(x) == 0:
        raise InputError("no samples to attack: pass --n >= 1 and a non-empty split")
    spec.check_fits(x.shape[1:])
    attack = get_attack(spec.attack)
    device = next(crafter.parameters(), x).device
    crafter_key = next((k for k, m in targets.items() if m is crafter), "_crafter")
    evaluated = {**targets, crafter_key: crafter}  # every model once; the crafter included
    n_batches = -(-len(x) // batch_size)
    raw: dict[str, list[Tensor]] = {k: [] for k in evaluated}  # per batch [b, 1 + E, C]
    sources: list[Tensor] = []
    norms: list[Tensor] = []
    spent: list[Tensor] = []  # Square: queries per sample [b, E]
    grid: dict[str, Tensor] | None = None
    for b in distributed.shard_indices(n_batches):  # contiguous global batches of this rank
        xb = x[b * batch_size : (b + 1) * batch_size].to(device)  # [b, ...]
        yb = y[b * batch_size : (b + 1) * batch_size].to(device)  # [b]
        mask = spec.batch_mask(len(xb), b, xb.shape[1:])
        queries: dict[float, Tensor] = {}
        points = [xb, *_craft(attack, crafter, xb, yb, spec, mask, queries)]  # 1 + E x [b, ...]
        seen = spec.processed(points)  # what the models score
        if spec.attack in QUERY_COUNTED:  # 0 queries where not attacked (eps 0)
            none = torch.zeros(len(xb), dtype=torch.long)
            spent.append(torch.stack([queries.get(e, none) for e in spec.eps], 1))  # [b, E]
        for key, m in evaluated.items():
            clean = _logits(m, seen[0])  # [b, C]; eps 0 reuses it
            at_points = (
                clean if p is xb else _logits(m, s)
                for p, s in zip(points[1:], seen[1:], strict=True)
            )
            raw[key].append(torch.stack([clean, *at_points], 1))  # [b, 1 + E, C]
        source = nested_sources(spec.eps, raw[crafter_key][-1], yb.cpu())  # [b, E]
        sources.append(source)
        used = _pick(torch.stack(points), source.to(device))  # [E, b, ...]
        delta = (used - xb).flatten(2)  # [E, b, D]
        norms.append(torch.stack([delta.norm(dim=2), delta.abs().amax(dim=2)], -1).transpose(0, 1))
        if b == 0:
            grid = _grid(xb, yb, list(used), mask, raw[crafter_key][0].shape[2] == 2)
    eps_count = len(spec.eps)
    norm_all = distributed.gather_tensors(_cat(norms, (eps_count, 2)))  # [N, E, 2]
    source_all = distributed.gather_tensors(_cat(sources, (eps_count,), torch.long)).T  # [E, N]
    logits = {}
    for key, m in evaluated.items():
        width = _width(m, x[:1].to(device))
        logits[key] = distributed.gather_tensors(_cat(raw[key], (eps_count + 1, width)))
    crafted = _used_logits(logits[crafter_key], source_all)
    queries = None
    if spec.attack in QUERY_COUNTED:
        queries = distributed.gather_tensors(_cat(spent, (eps_count,), torch.long)).T.contiguous()
    return {
        name: SweepResult(
            eps=list(spec.eps),
            y=y.cpu(),
            clean_logits=logits[name][:, 0].contiguous(),
            adv_logits=_used_logits(logits[name], source_all),
            l2=norm_all[..., 0].T.contiguous(),
            linf=norm_all[..., 1].T.contiguous(),
            raw_adv_logits=logits[name][:, 1:].transpose(0, 1).contiguous(),
            source=source_all.contiguous(),
            surrogate_logits=None if m is crafter else crafted,
            grid=grid,
            queries=queries,
        )
        for name, m in targets.items()
    }


def nested_sources(eps: Sequence[float], logits: Tensor, y: Tensor) -> Tensor:
    """Per sample and budget, the point to use: logits [b, 1 + E, C] of the crafting model at x
    (column 0) and at the point crafted at eps[j] (column j + 1), y: [b] -> source [b, E], the
    column of the lowest margin among x and the budgets <= eps[k] (its own column on ties)."""
    margins = torch.stack([margin(logits[:, j], y) for j in range(logits.shape[1])], 1)
    out = []
    for k, e in enumerate(eps):
        allowed = torch.tensor([True, *(other <= e for other in eps)])  # [1 + E]
        candidates = margins.masked_fill(~allowed, float("inf"))  # [b, 1 + E]
        lowest, best = candidates.min(1)
        own = margins[:, k + 1] <= lowest
        out.append(torch.where(own, k + 1, best))
    return torch.stack(out, 1) if out else torch.zeros((len(y), 0), dtype=torch.long)


def _pick(points: Tensor, source: Tensor) -> Tensor:
    """points [1 + E, b, ...], source [b, E] -> the points used [E, b, ...]."""
    index = source.T.reshape(*source.T.shape, *([1] * (points.dim() - 2)))  # [E, b, 1, ...]
    return points.gather(0, index.expand(-1, -1, *points.shape[2:]))


def _used_logits(logits: Tensor, source: Tensor) -> Tensor:
    """logits [N, 1 + E, C] (x, then each budget's point), source [E, N] -> [E, N, C] used."""
    index = source.T[..., None].expand(-1, -1, logits.shape[2])  # [N, E, C]
    return logits.gather(1, index).transpose(0, 1).contiguous()


def _craft(
    attack: Attack,
    crafter: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    mask: Tensor | None,
    spent: dict[float, Tensor] | None = None,
) -> list[Tensor]:
    """x: [b,...] -> its adversarial version under each of spec.eps (eps 0: x itself). `spent`
    receives, per eps attacked, the queries per sample [b] of a QUERY_COUNTED attack."""

    def run(eps: float) -> Tensor:
        options = {"steps": spec.steps, "norm": spec.norm, "seed": spec.seed}
        options.update(mask=mask, restarts=spec.restarts, eot_samples=spec.eot_samples)
        options.update(eot_transforms=spec.eot_transforms)
        if spent is not None and spec.attack in QUERY_COUNTED:
            found = QUERY_COUNTED[spec.attack](crafter, x, y, eps, **options)
            spent[eps] = found.queries.cpu()
            return found.x_adv.detach()
        return attack(crafter, x, y, eps, **options).detach()

    if max(spec.eps) == 0:
        return [x for _ in spec.eps]
    if not attack.minimal:
        return [run(eps) if eps > 0 else x for eps in spec.eps]
    smallest = run(max(spec.eps))  # one search; kept where its L2 norm fits the budget
    l2 = (smallest - x).flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))  # [b, 1, ...]
    return [torch.where(l2 <= eps, smallest, x) if eps > 0 else x for eps in spec.eps]


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    """Two-or-more-class logits [B, C] of `model` (eval mode, no grad) on x, on CPU."""
    with attack_mode(model), torch.no_grad():
        return as_logits(model(x)).float().cpu()


def _width(model: nn.Module, x1: Tensor) -> int:
    """Number of classes of `model`, from its output on one sample."""
    return _logits(model, x1).shape[1]


def _cat(
    parts: list[Tensor], trailing: tuple[int, ...], dtype: torch.dtype = torch.float32
) -> Tensor:
    """Concatenate per-batch results; an empty shard gives [0, *trailing]."""
    return torch.cat(parts) if parts else torch.zeros((0, *trailing), dtype=dtype)


def _grid(
    x: Tensor, y: Tensor, adv: list[Tensor], mask: Tensor | None, detector: bool
) -> dict[str, Tensor]:
    """A few images of a batch for the report grid: both classes for a detector, else the first."""
    if detector:
        half = GRID_SIZE // 2
        idx = torch.cat([torch.nonzero(y == c).flatten()[:half] for c in (0, 1)])
        idx = idx.sort().values
    else:
        idx = torch.arange(min(GRID_SIZE, len(x)))
    grid = {
        "index": idx.cpu(),
        "clean": x[idx].cpu(),  # [k, C, H, W]
        "adversarial": torch.stack([a[idx] for a in adv]).cpu(),  # [E, k, C, H, W]
    }
    if mask is not None:
        grid["mask"] = mask.expand(len(x), *mask.shape[1:])[idx].cpu()  # [k, 1, H, W]
    return grid
