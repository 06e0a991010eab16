"""What the audit adds for speech runs: attack budgets stated as signal-to-noise ratios, white
noise at given SNRs, and the ASVspoof decision costs of the clean scores.

SNR of a perturbation delta of a clip x [T]: 20 log10(||x||_2 / ||delta||_2) dB (mean powers over
the clip). An L-inf budget eps allows at most |delta_t| = eps at every sample, so its SNR is at
least 20 log10(rms(x) / eps) (`budget_snr_db`; FGSM without clipping moves every sample by
exactly eps and reaches it); an L2 budget eps is the SNR 20 log10(||x||_2 / eps).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deepshield.data.processing import white_noise_snr
from deepshield.errors import InputError
from deepshield.metrics import detector_metrics, min_tdcf
from deepshield.metrics.asvspoof5 import bonafide_high
from deepshield.metrics.score_files import Trials
from deepshield.metrics.summary import score_summary
from deepshield.predict import fake_scores, predict_logits

DETECTOR_KEYS = ("accuracy", "auc", "eer", "fake_passed_as_real", "real_flagged_as_fake",
                 "balanced_accuracy")  # fmt: skip


def snr_db(x: Tensor, delta_l2: Tensor) -> Tensor:
    """Clips x [N, T] and the L2 norms [N] of their perturbations -> SNR [N] in dB (+inf where
    the clip is unchanged)."""
    signal = x.double().flatten(1).norm(dim=1)  # [N]
    return 20 * torch.log10(signal / delta_l2.double())


def budget_snr_db(x: Tensor, eps: float, norm: str) -> Tensor:
    """The lowest SNR [N] (dB) a perturbation within the budget can give each clip x [N, T]:
    L-inf, every sample moved by eps (||delta|| = eps sqrt(T)); L2, ||delta|| = eps."""
    size = eps * math.sqrt(x.shape[1]) if norm == "linf" else eps
    return snr_db(x, torch.full((len(x),), float(size), dtype=torch.float64))


def finite_median(values: Tensor) -> float | None:
    """Median of the finite values [N] as a float (None when there are none)."""
    v = values[torch.isfinite(values)]
    return float(v.median()) if len(v) else None


def snr_columns(x: Tensor, eps: float, norm: str, l2: Tensor) -> dict[str, float | None]:
    """Sweep-row columns of a speech budget: the median over clips of the SNR the budget allows
    at worst (snr_db_budget) and of the SNR of the points the attack used (snr_db_median, over
    the clips it changed)."""
    if eps == 0:
        return {"snr_db_budget": None, "snr_db_median": None}
    return {
        "snr_db_budget": finite_median(budget_snr_db(x, eps, norm)),
        "snr_db_median": finite_median(snr_db(x, l2)),
    }


def noise_rows(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    snrs: tuple[float, ...],
    *,
    seed: int,
    batch_size: int,
) -> tuple[list[dict[str, Any]], list[Tensor]]:
    """White noise at each SNR (dB, per clip, `data.processing.white_noise_snr`) on clips x
    [N, T] with labels y [N] -> (one row per SNR: snr_db and the detector rates at 0.5, the
    P(fake) [N] of each SNR)."""
    device = next(model.parameters()).device
    rows, scores = [], []
    for db in snrs:
        noisy = white_noise_snr(x, db, seed=seed)  # [N, T]; not clipped, as a recording would be
        p = fake_scores(predict_logits(model, noisy, batch_size, device))  # [N]
        m = detector_metrics(y.numpy(), p.numpy(), threshold=0.5)
        rows.append({"snr_db": db, **{k: m[k] for k in DETECTOR_KEYS}})
        scores.append(p)
    return rows, scores


def countermeasure_costs(y: Any, p_fake: Any) -> dict[str, Any]:
    """ASVspoof numbers of clean P(fake) [N] (calibrated where the run has a calibrator) and
    labels y [N] (1 = spoof): min t-DCF (2021 form, ideal ASV as `deepshield evaluate`), and
    `metrics.summary.score_summary`'s EER, minDCF, actDCF (the scores read as LLRs: the log-odds
    of bona fide), Cllr, minCllr; a metric that cannot be computed is None with its reason."""
    y = np.asarray(y).reshape(-1)
    p = np.asarray(p_fake, dtype=np.float64).reshape(-1)
    out = score_summary(Trials("deepshield-pfake", "fake-high", y, -p, bonafide_high(p)))
    try:
        out["min_tdcf"] = float(min_tdcf(y, p)[0])
    except InputError as e:
        out["min_tdcf"] = None
        out["undefined"]["min_tdcf"] = str(e)
    keys = ("min_tdcf", "min_dcf", "act_dcf", "cllr", "min_cllr", "undefined")
    return {k: out[k] for k in keys}
