"""Warning signs of gradient masking (Athalye, Carlini & Wagner, ICML 2018, section 3.1), read off
the audit's sweep rows. Each check returns a `Check` whose status is "pass" or "warn" ("skipped"
when a sweep it needs is missing). A warning means the white-box numbers likely overstate the
detector's robustness: attack it adaptively (e.g. BPDA, `deepshield.attacks.BPDA`).

Rows are a sweep's per-eps dicts (`SweepResult.rows()`): {"eps", "accuracy", ...}; accuracies
are compared with a tolerance of `tolerance(n)` (two samples, at least 2 points).

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

Rows = Sequence[Mapping[str, Any]]
LARGE_EPS_MAX_ACCURACY = 0.05  # "~0": at most this share (or two samples) survives the probe


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
    """A budget for people: L-inf in units of 1/255 ('8/255'), L2 as a number ('0.5')."""
    return f"{eps * 255:.3g}/255" if norm == "linf" else f"{eps:g}"


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


def large_eps_not_reaching_zero(pgd: Rows | None, n: int) -> Check:
    """Warn when PGD at the ladder's largest eps leaves more than ~0 accuracy (an attack with a
    budget this large should fool a detector on every image)."""
    name = "accuracy reaches ~0 at a large eps"
    if not pgd:
        return _skipped(name, "PGD")
    eps, acc = max(_by_eps(pgd).items())
    bound = max(LARGE_EPS_MAX_ACCURACY, 2 / max(n, 1))
    evidence = {"eps": eps, "accuracy": acc, "bound": bound}
    if acc > bound:
        detail = f"PGD leaves accuracy {acc:.2f} at eps {eps_text(eps)} (expected <= {bound:.2f})"
        return Check(name, "warn", detail, evidence)
    return Check(name, "pass", f"PGD accuracy {acc:.2f} at eps {eps_text(eps)}", evidence)


def accuracy_rises_with_eps(sweeps: Mapping[str, Rows | None], n: int) -> Check:
    """Warn when a larger budget leaves a higher accuracy than a smaller one in a sweep
    (a larger ball contains the smaller one)."""
    name = "accuracy falls as eps grows"
    present = {k: v for k, v in sweeps.items() if v}
    if not present:
        return _skipped(name, " and ".join(sweeps) or "PGD")
    tol, rises = tolerance(n), {}
    for key, rows in present.items():
        acc = [a for _, a in sorted(_by_eps(rows).items())]
        rise = max((acc[k] - min(acc[:k]) for k in range(1, len(acc))), default=0.0)
        rises[key] = rise
    evidence = {"largest_rise": rises, "tolerance": tol}
    bad = {k: r for k, r in rises.items() if r > tol}
    if bad:
        key = max(bad, key=bad.get)
        return Check(name, "warn", f"{key}: accuracy rises by {bad[key]:.2f} with eps", evidence)
    return Check(name, "pass", f"accuracy never rises with eps ({', '.join(present)})", evidence)


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


def masking_checks(sweeps: Mapping[str, Rows | None], n: int) -> list[Check]:
    """Every check on the audit's sweeps {"fgsm", "pgd_linf", "pgd_l2", "noise", "transfer",
    "autoattack"} (rows, or None when missing), n images attacked."""
    pgd, fgsm = sweeps.get("pgd_linf"), sweeps.get("fgsm")
    linf = {k: sweeps.get(k) for k in ("fgsm", "pgd_linf", "autoattack")}
    return [
        iterative_weaker_than_single_step(pgd, fgsm, n),
        large_eps_not_reaching_zero(pgd, n),
        accuracy_rises_with_eps({k: sweeps.get(k) for k in ("pgd_linf", "pgd_l2")}, n),
        noise_beats_gradient(sweeps.get("noise"), linf, n),
        blackbox_beats_whitebox(sweeps.get("transfer"), linf, n),
    ]
