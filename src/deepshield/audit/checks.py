"""Warning signs of gradient masking (Athalye, Carlini & Wagner, ICML 2018, section 3.1), read off
the audit's sweep rows. Each check returns a `Check` whose status is "pass" or "warn" ("skipped"
when a sweep it needs is missing). A warning means the white-box numbers likely overstate the
detector's robustness: attack it adaptively (e.g. BPDA, `deepshield.attacks.BPDA`).

Rows are a sweep's per-eps dicts (`SweepResult.rows()`): {"eps", "accuracy", ...}; accuracies
are compared with a tolerance of `tolerance(n)` (two samples, at least 2 points).

An attack that fails is not a model that masks gradients: a PGD sweep whose largest budget
leaves accuracy too high, or whose accuracy rises with eps, is re-run at those budgets with a
stronger attack (`rerun_suspicious`: APGD-CE then APGD-DLR, or the margin loss for two
classes, 100 steps each, started at x). The checks then warn only on what that re-run
leaves, and say what was re-run and what it found.

    @inproceedings{athalye2018obfuscated,
      title={Obfuscated Gradients Give a False Sense of Security: Circumventing Defenses to
             Adversarial Examples},
      author={Athalye, Anish and Carlini, Nicholas and Wagner, David}, booktitle={ICML},
      year={2018}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import Tensor, nn

from deepshield.attacks.autoattack import autoattack

Rows = Sequence[Mapping[str, Any]]
# {sweep key: {str(eps): accuracy under the stronger re-run}}; the re-run's description in "attack"
Reruns = Mapping[str, Any]
LARGE_EPS_MAX_ACCURACY = 0.05  # "~0": at most this share (or two samples) survives the probe
RERUN_ATTACK = "APGD-CE then APGD-DLR (margin loss for 2 classes), 100 steps each, from x"
RERUN_KEYS = {"pgd_linf": "linf", "pgd_l2": "l2"}


@dataclass(frozen=True)
class Check:
    """One warning sign: its name, pass / warn / skipped, a one-line finding and the numbers."""

    name: str
    status: str
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tolerance(n: int) -> float:
    """Accuracy difference treated as noise for n samples: two samples, at least 0.02."""
    return max(0.02, 2 / max(n, 1))


def _by_eps(rows: Rows) -> dict[float, float]:
    return {float(r["eps"]): float(r["accuracy"]) for r in rows}


def _skipped(name: str, missing: str) -> Check:
    return Check(name, "skipped", f"not checked: the {missing} sweep is missing")


def eps_text(eps: float, norm: str = "linf") -> str:
    """A budget for people: an L-inf multiple of 1/255 (image ladders) as '8/255', any other
    budget (L2, speech waveforms) as a number ('0.5', '0.001')."""
    k = eps * 255
    if eps == 0:
        return "0"
    return f"{k:.3g}/255" if norm == "linf" and abs(k - round(k)) < 1e-6 else f"{eps:g}"


def _reran(reruns: Reruns | None, key: str) -> dict[float, float]:
    """{eps: accuracy} of the stronger re-run of sweep `key` (empty when none ran)."""
    return {float(e): float(a) for e, a in ((reruns or {}).get(key) or {}).items()}


def _with_reruns(rows: Rows, reran: Mapping[float, float]) -> dict[float, float]:
    """{eps: accuracy} of a sweep, each re-run budget at the lower of the two accuracies."""
    return {e: min(a, reran.get(e, a)) for e, a in _by_eps(rows).items()}


def _rise(accuracy: Mapping[float, float]) -> tuple[float, float | None]:
    """(largest rise of accuracy over a smaller budget, the eps where it happens)."""
    acc = sorted(accuracy.items())
    rises = [(a - min(b for _, b in acc[:k]), e) for k, (e, a) in enumerate(acc) if k > 0]
    return max(rises, default=(0.0, None))


def suspicious_budgets(sweeps: Mapping[str, Rows | None], n: int) -> dict[str, list[float]]:
    """{sweep key: budgets to re-run}: the largest budget of pgd_linf when it leaves more than
    ~0 accuracy, and every budget of pgd_linf / pgd_l2 whose accuracy exceeds a smaller one's."""
    tol, bound = tolerance(n), max(LARGE_EPS_MAX_ACCURACY, 2 / max(n, 1))
    out: dict[str, list[float]] = {}
    for key in RERUN_KEYS:
        rows = sweeps.get(key)
        if not rows:
            continue
        acc = sorted(_by_eps(rows).items())
        todo = {e for k, (e, a) in enumerate(acc) if k and a - min(b for _, b in acc[:k]) > tol}
        if key == "pgd_linf" and acc[-1][1] > bound:
            todo.add(acc[-1][0])
        if todo:
            out[key] = sorted(todo)
    return out


def rerun_suspicious(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    sweeps: Mapping[str, Rows | None],
    *,
    seed: int = 0,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Re-run the `suspicious_budgets` of the PGD sweeps on x: [n,...] (the attacked images),
    y: [n], with RERUN_ATTACK -> {"attack": RERUN_ATTACK, key: {str(eps): accuracy}}.
    Nothing runs (and the dict has no sweep keys) when no budget is suspicious."""
    out: dict[str, Any] = {"attack": RERUN_ATTACK}
    device = next(model.parameters(), x).device
    for key, budgets in suspicious_budgets(sweeps, len(y)).items():
        out[key] = {}
        for eps in budgets:
            correct = 0
            for i in range(0, len(y), batch_size):
                xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
                _, report = autoattack(model, xb, yb, eps, norm=RERUN_KEYS[key], version="fast",
                                       seed=seed, random_start=False)  # fmt: skip
                correct += int(report.robust[-1].sum())
            out[key][str(eps)] = correct / len(y)
    return out


def iterative_weaker_than_single_step(pgd: Rows | None, fgsm: Rows | None, n: int) -> Check:
    """Warn when PGD leaves a higher accuracy than FGSM at some eps (an iterative attack should
    never be weaker than its first step)."""
    name = "iterative attack at least as strong as single-step"
    if not pgd or not fgsm:
        return _skipped(name, "PGD" if not pgd else "FGSM")
    tol, single = tolerance(n), _by_eps(fgsm)
    gaps = {e: a - single[e] for e, a in _by_eps(pgd).items() if e > 0 and e in single}
    worse = {e: g for e, g in gaps.items() if g > tol}
    evidence = {"pgd_minus_fgsm": {str(e): g for e, g in gaps.items()}, "tolerance": tol}
    if worse:
        e = max(worse, key=worse.get)
        detail = f"PGD leaves {worse[e]:.2f} more accuracy than FGSM at eps {eps_text(e)}"
        return Check(name, "warn", detail, evidence)
    return Check(name, "pass", "PGD is at least as strong as FGSM at every eps", evidence)


def large_eps_not_reaching_zero(
    pgd: Rows | None, n: int, reran: Mapping[float, float] | None = None
) -> Check:
    """Warn when PGD at the ladder's largest eps leaves more than ~0 accuracy (an attack with a
    budget this large should fool a detector on every image) and so does the stronger re-run
    (`reran`: {eps: accuracy}) when one ran there."""
    name = "accuracy reaches ~0 at a large eps"
    if not pgd:
        return _skipped(name, "PGD")
    reran = reran or {}
    eps, acc = max(_by_eps(pgd).items())
    bound = max(LARGE_EPS_MAX_ACCURACY, 2 / max(n, 1))
    evidence = {"eps": eps, "accuracy": acc, "bound": bound}
    found = f"PGD leaves accuracy {acc:.2f} at eps {eps_text(eps)}"
    if acc > bound and eps in reran:
        evidence.update(rerun_attack=RERUN_ATTACK, rerun_accuracy=reran[eps])
        found += f"; re-run with {RERUN_ATTACK}: {reran[eps]:.2f}"
        if reran[eps] <= bound:
            return Check(name, "pass", f"{found} (the PGD sweep failed, not the gradients)",
                         evidence)  # fmt: skip
    if min(acc, reran.get(eps, acc)) > bound:
        return Check(name, "warn", f"{found} (expected <= {bound:.2f})", evidence)
    return Check(name, "pass", f"PGD accuracy {acc:.2f} at eps {eps_text(eps)}", evidence)


def accuracy_rises_with_eps(
    sweeps: Mapping[str, Rows | None], n: int, reruns: Reruns | None = None
) -> Check:
    """Warn when a larger budget leaves a higher accuracy than a smaller one in a sweep
    (a larger ball contains the smaller one), after the stronger re-runs (`reruns`)."""
    name = "accuracy falls as eps grows"
    present = {k: v for k, v in sweeps.items() if v}
    if not present:
        return _skipped(name, " and ".join(sweeps) or "PGD")
    tol, rises, before = tolerance(n), {}, {}
    for key, rows in present.items():
        before[key] = _rise(_by_eps(rows))[0]
        rises[key] = _rise(_with_reruns(rows, _reran(reruns, key)))[0]
    evidence = {"largest_rise": rises, "tolerance": tol}
    removed = [k for k in present if before[k] > tol >= rises[k]]
    note = ""
    if removed or any(_reran(reruns, k) for k in present):
        evidence.update(rerun_attack=RERUN_ATTACK, largest_rise_before_rerun=before)
        note = f"; re-run with {RERUN_ATTACK}" + (
            f" removed the rise in {', '.join(removed)}" if removed else ""
        )
    bad = {k: r for k, r in rises.items() if r > tol}
    if bad:
        key = max(bad, key=bad.get)
        return Check(
            name, "warn", f"{key}: accuracy rises by {bad[key]:.2f} with eps{note}", evidence
        )
    return Check(
        name, "pass", f"accuracy never rises with eps ({', '.join(present)}){note}", evidence
    )


def noise_beats_gradient(noise: Rows | None, gradient: Mapping[str, Rows | None], n: int) -> Check:
    """Warn when random noise in the eps-ball leaves a lower accuracy than every gradient
    attack at some eps."""
    name = "gradient attacks beat random noise"
    present = {k: _by_eps(v) for k, v in gradient.items() if v}
    if not noise or not present:
        return _skipped(name, "random-noise" if not noise else "gradient-attack")
    tol, gaps = tolerance(n), {}
    for e, a in _by_eps(noise).items():
        best = min((acc[e] for acc in present.values() if e in acc), default=None)
        if e > 0 and best is not None:
            gaps[e] = best - a  # > 0: noise did better
    evidence = {"best_gradient_minus_noise": {str(e): g for e, g in gaps.items()}, "tolerance": tol}
    better = {e: g for e, g in gaps.items() if g > tol}
    if better:
        e = max(better, key=better.get)
        detail = (
            f"random noise leaves {better[e]:.2f} less accuracy than the best gradient attack "
            f"at eps {eps_text(e)}"
        )
        return Check(name, "warn", detail, evidence)
    return Check(name, "pass", "every gradient attack beats random noise", evidence)


def blackbox_beats_whitebox(
    transfer: Rows | None, whitebox: Mapping[str, Rows | None], n: int
) -> Check:
    """Warn when examples transferred from a surrogate leave a lower accuracy than every
    white-box attack at some eps (the model's own gradient should be the better guide)."""
    name = "white-box attacks beat transfer (black-box)"
    present = {k: _by_eps(v) for k, v in whitebox.items() if v}
    if not transfer or not present:
        return _skipped(name, "transfer" if not transfer else "white-box")
    tol, gaps = tolerance(n), {}
    for e, a in _by_eps(transfer).items():
        best = min((acc[e] for acc in present.values() if e in acc), default=None)
        if e > 0 and best is not None:
            gaps[e] = best - a  # > 0: transfer did better
    evidence = {"best_whitebox_minus_transfer": {str(e): g for e, g in gaps.items()},
                "tolerance": tol}  # fmt: skip
    better = {e: g for e, g in gaps.items() if g > tol}
    if better:
        e = max(better, key=better.get)
        detail = (
            f"the transfer attack leaves {better[e]:.2f} less accuracy than the best white-box "
            f"attack at eps {eps_text(e)}"
        )
        return Check(name, "warn", detail, evidence)
    return Check(name, "pass", "white-box attacks are at least as strong as transfer", evidence)


def masking_checks(
    sweeps: Mapping[str, Rows | None], n: int, reruns: Reruns | None = None
) -> list[Check]:
    """Every check on the audit's sweeps {"fgsm", "pgd_linf", "pgd_l2", "noise", "transfer",
    "autoattack"} (rows, or None when missing), n images attacked; reruns: what
    `rerun_suspicious` found (None: nothing re-run)."""
    pgd, fgsm = sweeps.get("pgd_linf"), sweeps.get("fgsm")
    linf = {k: sweeps.get(k) for k in ("fgsm", "pgd_linf", "autoattack")}
    return [
        iterative_weaker_than_single_step(pgd, fgsm, n),
        large_eps_not_reaching_zero(pgd, n, _reran(reruns, "pgd_linf")),
        accuracy_rises_with_eps({k: sweeps.get(k) for k in RERUN_KEYS}, n, reruns),
        noise_beats_gradient(sweeps.get("noise"), linf, n),
        blackbox_beats_whitebox(sweeps.get("transfer"), linf, n),
    ]
