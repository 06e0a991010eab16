"""A run's decision: a calibrator and an operating threshold fitted on its validation split.

decision.json holds the rule, the threshold on the calibrated P(fake), the "unsure" band around
it, the calibrator's parameters, the counts it was fitted on and its level: "crop" (fitted on a
run's validation samples, each face crop or clip scored alone; a file's P(fake) is then the
mean of its calibrated frame scores) or "file" (fitted on the file scores of a scan of labelled
files, `runs.scan_calibration`; a file's P(fake) is the calibrator applied to its raw file
score). A run without one gets an explicit "uncalibrated" decision: raw P(fake), threshold 0.5,
said so in every output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from deepshield.errors import ConfigError, RunError
from deepshield.metrics import UNSURE_BAND, Calibrator, operating_threshold, verdict
from deepshield.metrics.decision import few_per_class
from deepshield.run import RunDir

if TYPE_CHECKING:  # deepshield.media (PyAV, dlib, Pillow plug-ins) is not imported for this
    from deepshield.media.aggregate import VideoScore

DECISION_FILE = "decision.json"
UNCALIBRATED_NOTE = "uncalibrated: raw P(fake) of the model, threshold 0.5 ({})"
LEVELS = ("crop", "file")  # what a decision was fitted on: scored samples, or files as scanned


@dataclass(frozen=True)
class Decision:
    """Verdict rule: fake when P >= threshold + band, real when P < threshold - band, else unsure.

    `calibrator` None = uncalibrated (P is the model's raw P(fake)); `note` says so in outputs.
    `level` "crop" or "file" (module doc); `fitted_for` (file level): the detector and scan
    settings whose file scores it was fitted on, which a scan using it must share.
    """

    rule: str
    threshold: float
    band: float = UNSURE_BAND
    calibrator: Calibrator | None = None
    val_counts: dict[str, int] = field(default_factory=dict)
    note: str = ""
    level: str = "crop"
    fitted_for: dict[str, Any] = field(default_factory=dict)
    caution: str = ""  # what the fit found wrong with the detector's scores (said with warning)
    conditions: dict[str, Any] = field(default_factory=dict)  # file level: the files' face sizes

    @property
    def warning(self) -> str | None:
        """Said wherever the threshold is used: it was fitted on few samples of a class, and
        the `caution` of the fit."""
        few = None
        if self.val_counts:
            what = "files" if self.level == "file" else "validation samples"
            real, fake = self.val_counts.get("real", 0), self.val_counts.get("fake", 0)
            few = few_per_class(real, fake, what)
        return "; ".join(filter(None, (few, self.caution))) or None

    @property
    def calibrated(self) -> bool:
        """True when scores pass through a calibrator fitted on the run's validation split."""
        return self.calibrator is not None

    def calibrate(self, raw: Any) -> np.ndarray:
        """Raw P(fake) [N] -> calibrated P(fake) [N] in [0, 1] (unchanged when uncalibrated)."""
        raw = np.asarray(raw, dtype=np.float64).reshape(-1)
        return raw if self.calibrator is None else self.calibrator.apply(raw)

    def verdict(self, p: float | None) -> str | None:
        """'fake' / 'real' / 'unsure' for a calibrated P(fake); None for no score."""
        return None if p is None else self.explained_verdict(p)[0]

    def explained_verdict(self, p: float) -> tuple[str, str | None]:
        """(verdict, why unsure) for a calibrated P(fake): `metrics.verdict` at this decision."""
        return verdict(p, self.threshold, self.band)

    def file_score(self, calibrated: VideoScore, raw: VideoScore) -> VideoScore:
        """A file's P(fake) from its aggregated calibrated and raw part scores (frames, audio
        windows): the calibrated aggregate at crop level; at file level the calibrator applied
        to the raw aggregate (mean, max, top-k mean), the scale the threshold was fitted on."""
        if self.level != "file" or raw.score is None:
            return calibrated

        def cal(v: float | None) -> float | None:
            return None if v is None else float(self.calibrate([v])[0])

        return replace(
            calibrated, score=cal(raw.score), max=cal(raw.max), top_k_mean=cal(raw.top_k_mean)
        )

    def face_size_note(self, face_px: float | None) -> str | None:
        """A note when a file's median face width (px) lies outside the 5-95 % range of the
        calibration files' (`conditions["face_px"]`): its error rates were not measured on
        faces of that size (resizing alone moved a calibrated decision's errors, docs)."""
        got = self.conditions.get("face_px")
        if face_px is None or not got or got["p05"] <= face_px <= got["p95"]:
            return None
        side = "smaller" if face_px < got["p05"] else "larger"
        return (
            f"faces {side} than in the calibration files ({face_px:.0f} px wide against "
            f"{got['p05']:.0f}-{got['p95']:.0f} px for 90 % of them): the decision's error rates "
            "may not hold"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; an infinite threshold (flag nothing) is written as the string 'inf'."""
        t = self.threshold
        return {
            "rule": self.rule,
            "threshold": "inf" if math.isinf(t) else t,
            "unsure_band": None
            if math.isinf(t)
            else [max(0.0, t - self.band), min(1.0, t + self.band)],
            "band": self.band,
            "calibrated": self.calibrated,
            "calibrator": self.calibrator.to_dict() if self.calibrator else None,
            "val_counts": self.val_counts,
            "note": self.note,
            "warning": self.warning,
            "level": self.level,
            "fitted_for": self.fitted_for,
            "caution": self.caution,
            "conditions": self.conditions,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = DECISION_FILE) -> Decision:
        """The decision `to_dict` wrote; RunError naming `source` when malformed."""
        try:
            cal = d["calibrator"]
            return cls(
                rule=str(d["rule"]),
                threshold=float(d["threshold"]),
                band=float(d["band"]),
                calibrator=Calibrator.from_dict(cal) if cal is not None else None,
                val_counts={str(k): int(v) for k, v in d.get("val_counts", {}).items()},
                note=str(d.get("note", "")),
                level=_level(d.get("level", "crop")),
                fitted_for=dict(d.get("fitted_for") or {}),
                caution=str(d.get("caution") or ""),
                conditions=dict(d.get("conditions") or {}),
            )
        except (KeyError, TypeError, ValueError, ConfigError) as e:
            raise RunError(
                f"{source}: not a decision file ({type(e).__name__}: {e}); rewrite it with "
                "`deepshield calibrate RUN`"
            ) from e


def _level(level: Any) -> str:
    if level not in LEVELS:
        raise ValueError(f"level {level!r} is not one of {', '.join(LEVELS)}")
    return str(level)


def uncalibrated(why: str) -> Decision:
    """The explicit fallback: raw P(fake), threshold 0.5, the note saying so."""
    return Decision("none", 0.5, UNSURE_BAND, None, {}, UNCALIBRATED_NOTE.format(why))


def fit_decision(
    y_val: Any,
    scores_val: Any,
    *,
    rule: str = "eer",
    calibration: str = "platt",
    band: float = UNSURE_BAND,
) -> Decision:
    """Fit the calibrator on validation P(fake) [N] and labels [N] (1 = fake), then the threshold
    by `rule` (eer | fpr=F | cost) on the calibrated validation scores."""
    if not 0.0 <= band < 0.5:
        raise ConfigError(f"--unsure {band}: give a half-width in [0, 0.5) of calibrated P(fake)")
    y = np.asarray(y_val).reshape(-1)
    cal = Calibrator(calibration).fit(scores_val, y)
    threshold = operating_threshold(y, cal.apply(scores_val), rule)
    counts = {"n": int(y.size), "fake": int((y == 1).sum()), "real": int((y == 0).sum())}
    note = f"{calibration} calibration and the {rule} threshold fitted on the validation split"
    return Decision(rule, float(threshold), band, cal, counts, note)


def run_val_scores(
    run: RunDir, device: str | torch.device = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """(labels [N], raw P(fake) [N]) of the run's best model on its validation split."""
    from deepshield import data
    from deepshield.config import TrainConfig
    from deepshield.predict import fake_scores, predict_logits

    cfg = run.read_config(TrainConfig)
    val = data.load(cfg.dataset, seed=cfg.seed, **cfg.data_kwargs).split("val")
    model = run.load_model("best").to(device)
    scores = fake_scores(predict_logits(model, val, device=device)).numpy()
    return val.y.numpy(), scores.astype(np.float64)


def calibrate_run(
    run_path: str | Path,
    *,
    rule: str = "eer",
    calibration: str = "platt",
    band: float = UNSURE_BAND,
    device: str | torch.device = "cpu",
) -> Decision:
    """Fit the run's decision on its validation split and write decision.json; return it."""
    run = RunDir.open(run_path)
    operating_threshold([0, 1], [0.0, 1.0], rule)  # a bad rule fails here, before any work
    y, scores = run_val_scores(run, device)
    decision = fit_decision(y, scores, rule=rule, calibration=calibration, band=band)
    run.write_json(DECISION_FILE, decision.to_dict())
    return decision


def load_decision(run_path: str | Path | None) -> Decision:
    """The run's decision.json, or the explicit uncalibrated decision (None or none written)."""
    if run_path is None:
        return uncalibrated("no run given, so no calibrator")
    run = RunDir(run_path)
    if not run.exists(DECISION_FILE):
        return uncalibrated(
            f"no decision.json in {run.path}; write one with `deepshield calibrate {run.path}`"
        )
    return Decision.from_dict(run.read_json(DECISION_FILE), str(run.file(DECISION_FILE)))


def _json_threshold(t: float) -> float | str:
    return "inf" if math.isinf(t) else float(t)


def _llrs(raw: np.ndarray, decision: Decision) -> tuple[np.ndarray, np.ndarray]:
    """(LLRs of the raw P(fake) read as a posterior at the validation prior, calibrated LLRs)."""
    prior = decision.calibrator.params["prior_log_odds"] if decision.calibrated else 0.0
    p = np.clip(raw, 0.0, 1.0)
    with np.errstate(divide="ignore"):
        raw_llr = np.log(p) - np.log1p(-p) - prior
    return raw_llr, decision.calibrator.llr(raw) if decision.calibrated else raw_llr


def decision_metrics(y: Any, raw: Any, decision: Decision) -> dict[str, Any]:
    """The `decision` entry of an evaluation, from labels [N] (1 = fake) and raw P(fake) [N]:
    operating points (threshold, FPR, FNR) on the calibrated P(fake) at this split's EER, at
    FPR <= 1 % on this split and at the run's threshold (its actual error rates), and ECE / Brier
    of the raw and the calibrated P(fake), Cllr of both read as LLRs with minCllr, and the
    ASVspoof 5 minDCF / actDCF (raw and calibrated)."""
    from deepshield.metrics import brier, cllr, ece, min_cllr
    from deepshield.metrics.calibration import ECE_BINS
    from deepshield.metrics.decision import rates_at, tpr_at_fpr

    y = np.asarray(y).reshape(-1)
    raw = np.asarray(raw, dtype=np.float64).reshape(-1)
    p = decision.calibrate(raw)
    raw_llr, cal_llr = _llrs(raw, decision)
    points = {
        "eer": operating_threshold(y, p, "eer"),
        "fpr=0.01": tpr_at_fpr(y, p, 0.01).threshold,
        "run": decision.threshold,
    }
    rows = []
    for name, t in points.items():
        r = rates_at(y, p, t)
        rows.append(
            {"point": name, "threshold": _json_threshold(t), "fpr": r["fpr"], "fnr": r["fnr"]}
        )
    return {
        "rule": decision.rule,
        "calibrated": decision.calibrated,
        "note": decision.note,
        "warning": decision.warning,
        "score": "calibrated P(fake)" if decision.calibrated else "raw P(fake)",
        "operating_points": rows,
        "ece_bins": f"{ECE_BINS} equal-width bins on [0, 1]",
        "ece_raw": ece(y, raw),
        "ece_calibrated": ece(y, p),
        "brier_raw": brier(y, raw),
        "brier_calibrated": brier(y, p),
        "cllr_raw": _json_threshold(cllr(y, raw_llr)),
        "cllr_calibrated": _json_threshold(cllr(y, cal_llr)),
        "min_cllr": min_cllr(y, raw),
        **_dcfs(y, raw, raw_llr, cal_llr),
    }


def _dcfs(y: np.ndarray, raw: np.ndarray, raw_llr: np.ndarray, cal_llr: np.ndarray) -> dict:
    """ASVspoof 5 minDCF of the raw scores and actDCF of the raw and calibrated LLRs (bona fide =
    real = label 0; an LLR for "bona fide" is minus the fake LLR)."""
    from deepshield.metrics import asvspoof5

    real, fake = y == 0, y == 1
    return {
        "min_dcf": asvspoof5.min_dcf(-raw[real], -raw[fake]).value,
        "act_dcf_raw": asvspoof5.act_dcf(-raw_llr[real], -raw_llr[fake]).value,
        "act_dcf_calibrated": asvspoof5.act_dcf(-cal_llr[real], -cal_llr[fake]).value,
    }


def at_threshold(y: Any, raw: Any, decision: Decision) -> dict[str, float | None]:
    """Actual error rates at the run's threshold from labels [N] (1 = fake) and raw P(fake) [N]:
    fakes_passed_at_threshold (share of fakes whose calibrated P(fake) is below the threshold,
    i.e. called real), reals_flagged_at_threshold (share of reals at or above it) and
    p_fake_calibrated_mean (over all samples); None for a class with no sample."""
    y = np.asarray(y).reshape(-1)
    p = decision.calibrate(raw)
    flagged = p >= decision.threshold  # [N]
    fakes, reals = flagged[y == 1], flagged[y == 0]
    return {
        "fakes_passed_at_threshold": float(1 - fakes.mean()) if fakes.size else None,
        "reals_flagged_at_threshold": float(reals.mean()) if reals.size else None,
        "p_fake_calibrated_mean": float(p.mean()) if p.size else None,
    }


def decision_summary(decision: Decision) -> dict[str, Any]:
    """The decision a table's at-threshold columns used: rule, threshold, calibrated, note."""
    return {
        "rule": decision.rule,
        "threshold": _json_threshold(decision.threshold),
        "calibrated": decision.calibrated,
        "note": decision.note,
    }
