"""Equal error rate: one definition for images and speech, the official ASVspoof one.

The ASVspoof evaluation code (eval_metrics.py `compute_det_curve` / `compute_eer`, also in the
tDCF_python_v2 package) puts a threshold at every score. In its orientation (higher = bona fide /
target) the trials are sorted ascending with a stable sort of [targets..., nontargets...]; operating
point i rejects the first i sorted trials (i = 0..N, point 0 rejects none and carries the threshold
min(score) - 0.001). So trials with score <= threshold are rejected, except that inside a group of
tied scores the targets are rejected before the nontargets (several points then share one threshold
value). The EER is the mean of FRR and FAR at the first point where |FRR - FAR| is smallest.

deepshield's scores grow with "fake", so `eer` runs that procedure on the negated scores with real
(label 0) as the target class, and returns the threshold negated back: flag as fake when
score >= threshold (point 0 becomes max(score) + 0.001, flagging none); among tied scores the
reals are flagged before the fakes.

Kept as the official code has it: when two operating points tie for the smallest |FRR - FAR|
(one each side of the crossing), the first one wins, so swapping the classes and negating the
scores (which reverses the order of the points) can move the EER by half a trial step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deepshield.metrics import inputs


def asvspoof_det_curve(
    target_scores: np.ndarray, nontarget_scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frr, far, thresholds), each [N+1], in ASVspoof orientation (higher = target); the official
    operating points: a threshold at every sorted score, ties rejecting targets first."""
    n_tar, n_non = target_scores.size, nontarget_scores.size
    pooled = np.concatenate([target_scores, nontarget_scores])  # [N], targets first
    is_target = np.concatenate([np.ones(n_tar), np.zeros(n_non)])  # [N]
    order = np.argsort(pooled, kind="stable")  # ascending; ties keep targets before nontargets
    rejected_targets = np.cumsum(is_target[order])  # [N] targets among the first i+1 sorted
    accepted_nontargets = n_non - (np.arange(1, pooled.size + 1) - rejected_targets)  # [N]
    frr = np.concatenate([[0.0], rejected_targets / n_tar])  # [N+1]
    far = np.concatenate([[1.0], accepted_nontargets / n_non])  # [N+1]
    thresholds = np.concatenate([[pooled[order[0]] - 0.001], pooled[order]])  # [N+1]
    return frr, far, thresholds


def asvspoof_eer(target_scores: np.ndarray, nontarget_scores: np.ndarray) -> tuple[float, float]:
    """(eer, threshold) in ASVspoof orientation (higher = target), as official `compute_eer`."""
    frr, far, thresholds = asvspoof_det_curve(target_scores, nontarget_scores)
    i = int(np.argmin(np.abs(frr - far)))
    return float(np.mean((frr[i], far[i]))), float(thresholds[i])


def eer(y_true: Any, scores: Any) -> tuple[float, float]:
    """(eer in [0, 1], threshold) for y_true [N] in {0, 1} (1 = fake) and scores [N] growing with
    "fake"; flag as fake when score >= threshold (ties: see the module docstring)."""
    y, s = inputs.labelled_scores(y_true, scores)
    rate, threshold = asvspoof_eer(-s[y == 0], -s[y == 1])
    return rate, -threshold
