"""`deepshield audit` on a speech run (a tiny mel_cnn on the toy speech set of
test_speech_evaluation): the card's sections, values in range and consistent with each other
and with closed forms (the SNR of an L-inf budget), the ASVspoof costs of the clean scores."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

import test_speech_evaluation  # noqa: F401  (registers the test-toy-speech source)
from deepshield.attacks import fgsm
from deepshield.audit import audit_run
from deepshield.audit.budgets import BUDGETS, SPEECH_BUDGETS, get_budget
from deepshield.audit.speech import budget_snr_db, countermeasure_costs, snr_db
from deepshield.config import TrainConfig
from deepshield.data.processing import white_noise_snr
from deepshield.metrics import eer, min_tdcf
from deepshield.predict import fake_scores, predict_logits
from deepshield.runs.attack_sweep import load_attack_data, run_config
from deepshield.runs.decision import load_decision
from deepshield.runs.training import run_training

# The quick speech budget made small: 12 clips, 3 PGD steps, no CW-L2, a 2-block surrogate.
TINY = replace(SPEECH_BUDGETS["quick"], name="tiny", n=12, steps=3, noise_draws=2,
               attacks=("fgsm", "pgd_linf", "pgd_l2"), surrogate_epochs=1,
               surrogate_widths=(4, 8), sanity_samples=4, sanity_repeats=1,
               explain_samples=8, rerun=False)  # fmt: skip


def quiet(_: str) -> None:
    """An audit log that prints nothing."""


@pytest.fixture(scope="module")
def speech_audit(tmp_path_factory):
    """A mel_cnn that separates the toy clips (test accuracy 1.0 here) and its tiny audit."""
    cfg = TrainConfig(dataset="test-toy-speech", model="mel_cnn",
                      model_kwargs={"widths": [4, 8], "n_mels": 32}, epochs=6, batch_size=16,
                      lr=1e-2, device="cpu")  # fmt: skip
    run = run_training(cfg, tmp_path_factory.mktemp("audit") / "speech")
    return run, audit_run(run.path, budget=TINY, log=quiet)


def test_the_speech_budget_states_its_ladders_for_waveforms():
    quick = get_budget("quick", "audio")
    assert quick.eps_linf[-1] == 0.1 and quick.snr_db and quick.reference["linf"] == 1e-3
    assert get_budget("quick").snr_db == () and get_budget("quick").eps_linf[-1] == 64 / 255
    for budget in (*BUDGETS.values(), *SPEECH_BUDGETS.values()):  # the card reads them there
        assert budget.reference["linf"] in budget.eps_linf, budget.name
        assert budget.reference["l2"] in budget.eps_l2, budget.name
        assert budget.eps_linf[0] == 0 and budget.eps_l2[0] == 0  # eps 0: the clean row


def test_snr_of_an_linf_budget_is_the_closed_form_and_fgsm_reaches_it():
    t = torch.arange(16000) / 16000
    amplitude, eps = 0.5, 1e-3
    x = (amplitude * torch.sin(2 * math.pi * 440 * t))[None]  # [1, T], RMS a / sqrt(2)
    closed = 20 * math.log10(amplitude / math.sqrt(2) / eps)
    assert float(budget_snr_db(x, eps, "linf")[0]) == pytest.approx(closed, abs=1e-3)
    norm = amplitude / math.sqrt(2) * math.sqrt(16000)  # ||x||_2 of whole periods of a sine
    assert float(budget_snr_db(x, 0.5, "l2")[0]) == pytest.approx(
        20 * math.log10(norm / 0.5), abs=1e-3
    )
    model = torch.nn.Sequential(torch.nn.Linear(16000, 2))  # gradient sign: +-1 at every sample
    torch.nn.init.normal_(model[0].weight)
    model.bounds = (-1.0, 1.0)
    adv = fgsm(model, x, torch.tensor([1]), eps)
    measured = snr_db(x, (adv - x).norm(dim=1))
    assert float(measured[0]) == pytest.approx(closed, abs=0.01)  # every sample moved by eps


def test_speech_card_has_every_section_in_range(speech_audit):
    run, audit = speech_audit
    assert audit["modality"] == "audio"
    card = {r["item"]: r for r in audit["card"]}
    assert list(card) == ["clean detection", "calibration", "white-box L-inf", "white-box L2",
                          "transfer (black-box)", "white noise (SNR)", "gradient masking",
                          "explanations", "everyday processing"]  # fmt: skip
    assert audit["items"]["everyday"]["grid"] == "quick"  # the speech grid: codecs, noise, band
    for row in audit["card"]:
        assert row["score"] is None or 0 <= row["score"] <= 1, row
        assert row["status"] in ("pass", "warn", "fail"), row
    items = audit["items"]
    assert not any("error" in v for v in items.values())
    assert items["clean"]["accuracy"] >= 0.9  # a working detector, so every item is graded
    assert "SNR >=" in card["white-box L-inf"]["summary"]
    assert "actDCF" in card["clean detection"]["summary"]
    cal = card["calibration"]  # the toy validation split holds 12 bona fide, 12 spoofs
    assert cal["status"] == "warn" and "fitted on 12 real and 12 fake" in cal["summary"]
    html = run.file("report.html").read_text()
    for title in ("White noise at given SNRs", "ASVspoof costs of the clean scores",
                  "SNR (dB) the budget allows at worst"):  # fmt: skip
        assert title in html
    assert run.is_done("audit")


def test_speech_rows_state_budgets_as_snr_consistent_with_the_clips(speech_audit):
    run, audit = speech_audit
    drawn = load_attack_data(run_config(run), n=TINY.n, seed=0)
    rms = drawn.x.double().pow(2).mean(1).sqrt()  # [N]
    for key, norm in (("fgsm", "linf"), ("pgd_linf", "linf"), ("pgd_l2", "l2")):
        rows = audit["items"][key]["rows"]
        assert rows[0]["snr_db_budget"] is None  # eps 0: no perturbation
        for r in rows[1:]:
            signal = rms if norm == "linf" else drawn.x.double().norm(dim=1)  # [N]
            per_clip = 20 * torch.log10(signal / r["eps"])  # the budget's SNR per clip
            assert r["snr_db_budget"] == pytest.approx(float(per_clip.median()), abs=1e-6)
            if r["snr_db_median"] is not None:  # inside the budget: no clip below its SNR
                assert r["snr_db_median"] >= float(per_clip.min()) - 1e-6, (key, r["eps"])
        budgets = [r["snr_db_budget"] for r in rows[1:]]
        assert all(b < a for a, b in itertools.pairwise(budgets))  # larger eps, lower SNR


def test_white_noise_rows_equal_the_detector_on_noisy_clips(speech_audit):
    run, audit = speech_audit
    item = audit["items"]["snr_noise"]
    assert [r["snr_db"] for r in item["rows"]] == list(TINY.snr_db)
    drawn = load_attack_data(run_config(run), n=TINY.n, seed=0)
    model = run.load_model("best")
    decision = load_decision(run.path)
    for r in item["rows"]:
        p = fake_scores(predict_logits(model, white_noise_snr(drawn.x, r["snr_db"]))).numpy()
        y = drawn.y.numpy()
        assert r["fake_passed_as_real"] == pytest.approx(np.mean(p[y == 1] < 0.5))
        passed = np.mean(decision.calibrate(p)[y == 1] < decision.threshold)
        assert r["fakes_passed_at_threshold"] == pytest.approx(passed)


def test_clean_costs_equal_the_metrics_on_the_calibrated_scores(speech_audit):
    run, audit = speech_audit
    clean = audit["items"]["clean"]
    data = load_attack_data(run_config(run))
    raw = fake_scores(predict_logits(run.load_model("best"), data.x)).numpy()
    p = load_decision(run.path).calibrate(raw)
    y = data.y.numpy()
    assert clean["countermeasure"]["min_tdcf"] == pytest.approx(min_tdcf(y, p)[0])
    assert clean["eer"] == pytest.approx(eer(y, raw)[0])
    cm = countermeasure_costs(y, p)
    assert cm == clean["countermeasure"]
    assert 0 <= cm["min_dcf"] <= 1 and cm["act_dcf"] >= cm["min_dcf"] - 1e-12  # act >= min
