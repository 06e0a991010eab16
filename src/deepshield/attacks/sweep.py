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

Budgets run one at a time, in increasing eps, each a pass of the evaluation engine
(`attacks.evaluate.score_dataset`) over the data; a `BudgetStore` keeps every budget as it
finishes, so an interrupted sweep resumes at the first unfinished one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from deepshield.attacks.checks import check_batch, check_count, check_norm, check_number
from deepshield.attacks.eot_transforms import processing_spec, real_transform, stand_ins
from deepshield.attacks.evaluate import Scored, Transform, model_device, score_dataset
from deepshield.attacks.masks import parse_mask
from deepshield.attacks.objectives import margin
from deepshield.attacks.registry import get_attack, square_with_queries
from deepshield.errors import InputError

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

    def scored_view(self) -> Callable[[Tensor], Tensor] | None:
        """What the models score of a batch: the real `eval_after` processing (images
        [B,3,H,W] or speech [B,T]), or None (the points as they are)."""
        if self.eval_after is None:
            return None
        after = self.eval_after

        def view(x: Tensor) -> Tensor:
            return real_transform(after, "image" if x.dim() == 4 else "speech")(x)

        return view


@dataclass
class SweepResult:
    """Per-sample outputs of one sweep on one evaluated model (CPU tensors, dataset order).

    y: [N]; clean_logits: [N, C]; adv_logits: [E, N, C] at the point used under eps[k] (nested:
    the module docstring; eps 0 = clean); raw_adv_logits: [E, N, C] at the point crafted at
    eps[k] itself; source: [E, N] which point is used (0: x, j + 1: the one crafted at eps[j]);
    l2, linf: [E, N] norms of x_adv - x of the points used; surrogate_logits: [E, N, C] of the
    crafting model when it is another model (transfer), else None; grid: a few images of the
    first batch (images only, rank 0 only): "index" [k], "clean" [k,C,H,W], "adversarial" [E,k,C,H,W] in
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


class BudgetStore(Protocol):
    """Where a sweep keeps each budget's results as it finishes, so that an interrupted sweep
    resumes at the first unfinished budget (the run layer keeps them in the run folder)."""

    def load(self, k: int) -> dict[str, Tensor] | None:
        """The tensors `save` got for budget k, or None when it has not finished."""

    def save(self, k: int, tensors: dict[str, Tensor]) -> None:
        """Keep budget k's tensors (CPU): "logits.<model>" [N, C], "l2", "linf" [N], optional
        "kept" [g, ...] (grid samples) and "queries" [N]."""


def transfer_sweep(
    crafter: nn.Module,
    targets: Mapping[str, nn.Module],
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    *,
    batch_size: int = 128,
    store: BudgetStore | None = None,
) -> dict[str, SweepResult]:
    """Craft on `crafter` once per eps and batch, evaluate every target -> {name: SweepResult}.

    A target that is `crafter` itself gets the white-box result. x: [N,...] in [0,1], y: [N];
    batches go to the crafter's device (`evaluate.score_dataset`, the evaluation engine).
    Budgets run one after the other in increasing eps (each a pass over the data, with its own
    progress bar); `store` keeps each finished budget and gives back those an interrupted
    sweep finished. Under torchrun each rank attacks its share of the batches and every rank
    gets all N results.
    """
    spec = spec.checked()
    batch_size = check_count("batch_size", batch_size)
    check_batch(y, x)
    if len(x) == 0:
        raise InputError("no samples to attack: pass --n >= 1 and a non-empty split")
    spec.check_fits(x.shape[1:])
    device = model_device(crafter, x)
    crafter_key = next((k for k, m in targets.items() if m is crafter), "_crafter")
    evaluated = {**targets, crafter_key: crafter}  # every model once; the crafter included
    run = functools.partial(
        score_dataset, evaluated, x, y, batch_size=batch_size, device=device, sharded=True,
        view=spec.scored_view(),
    )  # fmt: skip
    clean = run(description="clean inputs")
    index = _grid_index(y[:batch_size], clean.logits[crafter_key].shape[1] == 2)
    index = index if x.dim() == 4 else index[:0]  # the report grid is for images only
    budget = _Budgets(spec, crafter, clean, x[index], index, run)
    parts: dict[int, dict[str, Tensor]] = {}
    for k in sorted(range(len(spec.eps)), key=lambda k: spec.eps[k]):
        found = store.load(k) if store is not None else None
        if found is None:
            found = budget.result(k)
            if store is not None:
                store.save(k, found)
        parts[k] = found
    return _assemble(spec, clean, parts, targets, crafter_key, x[:batch_size], index)


class _Budgets:
    """Each budget's pass over the data: the attack at that eps through the engine (eps 0: the
    clean pass; minimal-perturbation attacks: one search at the largest eps, kept per sample
    where its L2 norm fits the budget)."""

    def __init__(
        self,
        spec: AttackSpec,
        crafter: nn.Module,
        clean: Scored,
        grid_x: Tensor,
        index: Tensor,
        run: Callable[..., Scored],
    ) -> None:
        self.spec, self.crafter, self.clean, self.run = spec, crafter, clean, run
        self.grid_x, self.index = grid_x, index  # the grid's samples [g, ...] and indices [g]
        self.attack = get_attack(spec.attack)
        self._search: Scored | None = None

    def result(self, k: int) -> dict[str, Tensor]:
        """Budget k's tensors (`BudgetStore.save`)."""
        eps = self.spec.eps[k]
        if eps == 0:
            n = len(self.clean.y)
            return self._tensors(self.clean, torch.zeros(n), torch.zeros(n), self.grid_x)
        if not self.attack.minimal:
            label = f"{self.spec.attack} eps {eps:.4g} (budget {k + 1} of {len(self.spec.eps)})"
            found = self.run(self._transform(eps), keep=self.index, description=label)
            return self._tensors(found, found.l2, found.linf, found.kept)
        search = self._minimal_search()
        within = search.l2 <= eps  # [N]
        logits = {
            name: torch.where(within[:, None], v, self.clean.logits[name])
            for name, v in search.logits.items()
        }
        kept = search.kept
        if kept is not None:
            inside = within[self.index].view(-1, *([1] * (kept.dim() - 1)))
            kept = torch.where(inside, kept, self.grid_x)
        zero = torch.zeros_like(search.l2)
        used = Scored(self.clean.y, logits, search.l2, search.linf, kept, search.extras)
        return self._tensors(
            used, torch.where(within, search.l2, zero), torch.where(within, search.linf, zero), kept
        )

    def _minimal_search(self) -> Scored:
        if self._search is None:
            top = max(self.spec.eps)
            label = f"{self.spec.attack} search up to {top:.4g}"
            self._search = self.run(self._transform(top), keep=self.index, description=label)
        return self._search

    def _transform(self, eps: float) -> Transform:
        spec, crafter, attack = self.spec, self.crafter, self.attack

        def craft(xb: Tensor, yb: Tensor, b: int) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
            options = {"steps": spec.steps, "norm": spec.norm, "seed": spec.seed}
            mask = spec.batch_mask(len(xb), b, xb.shape[1:])
            options.update(mask=mask, restarts=spec.restarts, eot_samples=spec.eot_samples)
            options.update(eot_transforms=spec.eot_transforms)
            if spec.attack in QUERY_COUNTED:
                found = QUERY_COUNTED[spec.attack](crafter, xb, yb, eps, **options)
                return found.x_adv, {"queries": found.queries}
            return attack(crafter, xb, yb, eps, **options)

        return craft

    def _tensors(
        self, found: Scored, l2: Tensor, linf: Tensor, kept: Tensor | None
    ) -> dict[str, Tensor]:
        out = {f"logits.{name}": v.contiguous() for name, v in found.logits.items()}
        out.update(l2=l2.float().contiguous(), linf=linf.float().contiguous())
        if kept is not None:
            out["kept"] = kept.contiguous()
        if self.spec.attack in QUERY_COUNTED:
            none = torch.zeros(len(self.clean.y), dtype=torch.long)
            out["queries"] = found.extras.get("queries", none).long().contiguous()
        return out


def _assemble(
    spec: AttackSpec,
    clean: Scored,
    parts: Mapping[int, Mapping[str, Tensor]],
    targets: Mapping[str, nn.Module],
    crafter_key: str,
    first_batch: Tensor,
    index: Tensor,
) -> dict[str, SweepResult]:
    """The SweepResult of every target from the clean pass and each budget's tensors."""
    budgets = range(len(spec.eps))
    logits = {  # [N, 1 + E, C]: x, then the point crafted at each budget
        name: torch.stack([v, *(parts[k][f"logits.{name}"] for k in budgets)], 1)
        for name, v in clean.logits.items()
    }
    y = clean.y
    source = nested_sources(spec.eps, logits[crafter_key], y).T.contiguous()  # [E, N]
    zero = torch.zeros(len(y))
    norms = {  # [1 + E, N] per norm; x itself has 0
        key: torch.stack([zero, *(parts[k][key] for k in budgets)]) for key in ("l2", "linf")
    }
    used = {key: v.gather(0, source) for key, v in norms.items()}  # [E, N]
    crafted = _used_logits(logits[crafter_key], source)
    queries = None
    if spec.attack in QUERY_COUNTED:
        queries = torch.stack([parts[k]["queries"] for k in budgets]).contiguous()  # [E, N]
    grid = None
    if all("kept" in parts[k] for k in budgets) and len(index):
        points = torch.stack([first_batch[index], *(parts[k]["kept"] for k in budgets)])
        shown = _pick(points, source[:, index].T)  # [E, g, ...]
        mask = spec.batch_mask(len(first_batch), 0, first_batch.shape[1:])
        grid = _grid(first_batch, index, shown, mask)
    return {
        name: SweepResult(
            eps=list(spec.eps),
            y=y,
            clean_logits=logits[name][:, 0].contiguous(),
            adv_logits=_used_logits(logits[name], source),
            l2=used["l2"].contiguous(),
            linf=used["linf"].contiguous(),
            raw_adv_logits=logits[name][:, 1:].transpose(0, 1).contiguous(),
            source=source,
            surrogate_logits=None if name == crafter_key else crafted,
            grid=grid,
            queries=queries,
        )
        for name in targets
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


def _grid_index(y: Tensor, detector: bool) -> Tensor:
    """The samples of the first batch (labels y [b]) shown in the report grid: both classes for a
    detector (GRID_SIZE / 2 each), else the first GRID_SIZE."""
    if detector:
        half = GRID_SIZE // 2
        idx = torch.cat([torch.nonzero(y == c).flatten()[:half] for c in (0, 1)])
        return idx.sort().values
    return torch.arange(min(GRID_SIZE, len(y)))


def _grid(x: Tensor, idx: Tensor, adv: Tensor, mask: Tensor | None) -> dict[str, Tensor]:
    """The report grid's tensors: x [b, ...] the first batch, idx [g] the shown samples, adv
    [E, g, ...] their points used under each budget, mask the batch's mask or None."""
    grid = {
        "index": idx.cpu(),
        "clean": x[idx].cpu(),  # [g, C, H, W]
        "adversarial": adv.cpu(),  # [E, g, C, H, W]
    }
    if mask is not None:
        grid["mask"] = mask.expand(len(x), *mask.shape[1:])[idx].cpu()  # [g, 1, H, W]
    return grid
