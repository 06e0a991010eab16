"""Calibration: is a P(fake) of 0.9 right nine times in ten? Brier score, expected calibration
error (ECE) with stated bins, reliability-diagram data, Cllr / minCllr (PAV) of log-likelihood
ratios, and a `Calibrator` (Platt / logistic or isotonic) fitted on validation scores.

Orientation: deepshield's, y_true [N] in {0, 1} with 1 = fake, scores grow with "fake";
LLRs are ln p(score | fake) / p(score | real), natural log.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from deepshield.errors import ConfigError, InputError
from deepshield.metrics import inputs

ECE_BINS = 15  # equal-width bins on [0, 1]


def probabilities(p: Any, name: str = "probabilities") -> np.ndarray:
    """Finite values in [0, 1] as float64 [N]; InputError naming the first value outside."""
    a = inputs.scores(p, name)
    bad = np.flatnonzero((a < 0) | (a > 1))
    if bad.size:
        raise InputError(
            f"{name}[{bad[0]}] = {float(a[bad[0]])!r} is outside [0, 1]; pass probabilities "
            "(P(fake)), not logits or percentages"
        )
    return a


def _labelled_probabilities(y_true: Any, p_fake: Any) -> tuple[np.ndarray, np.ndarray]:
    y, p = inputs.binary_labels(y_true), probabilities(p_fake, "p_fake")
    inputs.same_length(y, p, ("y_true", "p_fake"))
    return y, p


def brier(y_true: Any, p_fake: Any) -> float:
    """Mean squared gap between P(fake) [N] and the label [N]: 0 is perfect, 0.25 is a coin."""
    y, p = _labelled_probabilities(y_true, p_fake)
    return float(np.mean((p - y) ** 2))


class Reliability(NamedTuple):
    """Reliability-diagram data over B bins: edges [B+1]; per bin mean P(fake) [B], share of
    fakes [B] (NaN where the bin is empty) and count [B]."""

    edges: np.ndarray
    mean_p_fake: np.ndarray
    fraction_fake: np.ndarray
    counts: np.ndarray


def reliability(y_true: Any, p_fake: Any, n_bins: int = ECE_BINS) -> Reliability:
    """Bin P(fake) into n_bins equal-width bins: bin k holds (k/B, (k+1)/B], the first also 0
    (scikit-learn's `calibration_curve` bins)."""
    if n_bins < 1:
        raise InputError(f"n_bins={n_bins}; pass at least 1 bin")
    y, p = _labelled_probabilities(y_true, p_fake)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], p)  # [N] in 0..B-1
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(bins, weights=p, minlength=n_bins) / counts
        frac = np.bincount(bins, weights=y, minlength=n_bins) / counts
    return Reliability(edges, mean_p, frac, counts)


def ece(y_true: Any, p_fake: Any, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error of P(fake): sum over the `reliability` bins of
    (bin count / N) * |share of fakes - mean P(fake)|; in [0, 1], 0 is calibrated."""
    r = reliability(y_true, p_fake, n_bins)
    full = r.counts > 0
    gaps = np.abs(r.fraction_fake[full] - r.mean_p_fake[full])
    return float(np.sum(r.counts[full] * gaps) / np.sum(r.counts))


def _cllr_terms(fake_llr: np.ndarray, real_llr: np.ndarray) -> float:
    return float(
        0.5 * (np.mean(np.logaddexp(0, -fake_llr)) + np.mean(np.logaddexp(0, real_llr))) / np.log(2)
    )


def llr_values(x: Any, name: str = "llr") -> np.ndarray:
    """Log-likelihood ratios as float64 [N]; +-inf allowed (a certain call), NaN refused."""
    a = inputs.as_array(x, name)
    if a.dtype.kind not in "biuf":
        raise InputError(f"{name} has dtype {a.dtype}; pass real-valued LLRs")
    a = a.astype(np.float64)
    if np.isnan(a).any():
        raise InputError(f"{name} holds {int(np.isnan(a).sum())} NaN values; fix those first")
    return a


def cllr(y_true: Any, llr: Any) -> float:
    """Cost of log-likelihood ratios [N] (ln, growing with fake) in bits, both classes weighted
    1/2: 0 is perfect, 1 is an uninformative LLR = 0 everywhere, above 1 is misleading; inf when
    an infinite LLR points the wrong way."""
    y, s = inputs.binary_labels(y_true), llr_values(llr)
    inputs.same_length(y, s, ("y_true", "llr"))
    if y.min() == y.max():
        raise InputError("y_true holds one class only; Cllr needs both real and fake samples")
    return _cllr_terms(s[y == 1], s[y == 0])


def pav(y_sorted: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pool-adjacent-violators: the non-decreasing fit [M] to values y_sorted [M] with weights
    [M] > 0 minimising the weighted squared error."""
    means: list[float] = []
    sizes: list[float] = []
    lengths: list[int] = []
    for value, w in zip(y_sorted.tolist(), weights.tolist(), strict=True):
        means.append(value)
        sizes.append(w)
        lengths.append(1)
        while len(means) > 1 and means[-2] >= means[-1]:
            w2, m2, n2 = sizes.pop(), means.pop(), lengths.pop()
            total = sizes[-1] + w2
            means[-1] = (means[-1] * sizes[-1] + m2 * w2) / total
            sizes[-1] = total
            lengths[-1] += n2
    return np.repeat(means, lengths)


def _tie_blocks(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unique scores [M] ascending, fakes [M], trials [M]) with tied scores pooled."""
    xs, inverse = np.unique(scores, return_inverse=True)
    trials = np.bincount(inverse, minlength=xs.size).astype(np.float64)
    fakes = np.bincount(inverse, weights=y.astype(np.float64), minlength=xs.size)
    return xs, fakes, trials


def min_cllr(y_true: Any, scores: Any) -> float:
    """Cllr after the best monotone recalibration (PAV of the labels on the scores, tied scores
    pooled, LLR = logit(P_pav) - ln(N_fake / N_real)): the part of Cllr ranking alone explains."""
    y, s = inputs.labelled_scores(y_true, scores)
    _, fakes, trials = _tie_blocks(s, y)
    p = pav(fakes / trials, trials)  # [M] P(fake) per tie block
    reals = trials - fakes
    offset = np.log(fakes.sum() / reals.sum())
    with np.errstate(divide="ignore"):
        llr = np.log(p) - np.log1p(-p) - offset  # +-inf only where one class is absent
    fake_cost = np.where(fakes > 0, fakes * np.logaddexp(0, -np.where(fakes > 0, llr, 0)), 0)
    real_cost = np.where(reals > 0, reals * np.logaddexp(0, np.where(reals > 0, llr, 0)), 0)
    return float(0.5 * (fake_cost.sum() / fakes.sum() + real_cost.sum() / reals.sum()) / np.log(2))


def _platt(s: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) of P(fake) = sigmoid(a s + b) by Newton's method on Platt's smoothed targets."""
    n_fake, n_real = int(y.sum()), int(y.size - y.sum())
    t = np.where(y == 1, (n_fake + 1) / (n_fake + 2), 1 / (n_real + 2))  # [N]
    x = np.stack([s, np.ones_like(s)], axis=1)  # [N, 2]
    w = np.array([0.0, np.log((n_fake + 1) / (n_real + 1))])

    def loss(v: np.ndarray) -> float:
        z = x @ v
        return float(np.sum(np.logaddexp(0, z) - t * z))

    for _ in range(100):
        p = 1 / (1 + np.exp(-(x @ w)))
        grad = x.T @ (p - t)
        hess = (x * (p * (1 - p))[:, None]).T @ x + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        scale, current = 1.0, loss(w)
        while loss(w - scale * step) > current and scale > 1e-10:
            scale /= 2
        w = w - scale * step
        if np.max(np.abs(scale * step)) < 1e-12:
            break
    return float(w[0]), float(w[1])


class Calibrator:
    """Maps raw detector scores to calibrated P(fake): method "platt" (logistic on the score,
    Platt's smoothed targets) or "isotonic" (PAV, linear between fitted points, clipped at the
    ends). Fit on validation scores only; `to_dict` / `from_dict` round-trip through JSON."""

    METHODS = ("platt", "isotonic")

    def __init__(self, method: str = "platt") -> None:
        if method not in self.METHODS:
            raise ConfigError(f"calibration method {method!r}; use one of {self.METHODS}")
        self.method = method
        self.params: dict[str, Any] = {}

    def fit(self, scores_val: Any, y_val: Any) -> Calibrator:
        """Fit on validation scores [N] (growing with fake) and labels [N] (both classes)."""
        y, s = inputs.labelled_scores(y_val, scores_val)
        prior = float(np.log(y.sum() / (y.size - y.sum())))
        if self.method == "platt":
            a, b = _platt(s, y)
            self.params = {"a": a, "b": b, "prior_log_odds": prior}
        else:
            xs, fakes, trials = _tie_blocks(s, y)
            fitted = pav(fakes / trials, trials)
            self.params = {"x": xs.tolist(), "y": fitted.tolist(), "prior_log_odds": prior}
        return self

    def _require_fit(self) -> None:
        if not self.params:
            raise InputError("the calibrator is not fitted; call fit(scores_val, y_val) first")

    def apply(self, scores: Any) -> np.ndarray:
        """Calibrated P(fake) [N] in [0, 1] for raw scores [N]."""
        self._require_fit()
        s = inputs.scores(scores)
        if self.method == "platt":
            return 1 / (1 + np.exp(-(self.params["a"] * s + self.params["b"])))
        return np.interp(s, self.params["x"], self.params["y"])

    def llr(self, scores: Any) -> np.ndarray:
        """Calibrated log-likelihood ratios [N] (ln, growing with fake): the calibrated log-odds
        minus the validation prior log-odds; +-inf where isotonic P(fake) is 0 or 1."""
        self._require_fit()
        if self.method == "platt":
            z = self.params["a"] * inputs.scores(scores) + self.params["b"]
        else:
            p = self.apply(scores)
            with np.errstate(divide="ignore"):
                z = np.log(p) - np.log1p(-p)
        return z - self.params["prior_log_odds"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready {"method", parameters...}."""
        self._require_fit()
        return {"method": self.method, **self.params}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        """The calibrator `to_dict` wrote; ConfigError on missing or unknown keys."""
        method = d.get("method")
        keys = {"platt": {"a", "b"}, "isotonic": {"x", "y"}}.get(str(method))
        if keys is None or set(d) != keys | {"method", "prior_log_odds"}:
            raise ConfigError(
                f"calibrator dict with keys {sorted(d)}; expected method 'platt' with a, b or "
                "'isotonic' with x, y, plus prior_log_odds (as Calibrator.to_dict writes)"
            )
        c = cls(str(method))
        c.params = {k: v for k, v in d.items() if k != "method"}
        if method == "isotonic":
            x, y = np.asarray(d["x"], dtype=np.float64), np.asarray(d["y"], dtype=np.float64)
            if x.size == 0 or x.shape != y.shape or np.any(np.diff(x) <= 0):
                raise ConfigError(
                    "isotonic calibrator: x and y must be equal-length, non-empty, x increasing"
                )
        return c
