"""The audit's budgets: how many samples, which budgets (eps), how many steps, per level of effort.

A budget is data: `BUDGETS[name]` is one frozen `AuditBudget` for images, `SPEECH_BUDGETS[name]`
its speech version (waveform ladders, noise SNRs, a mel_cnn surrogate). The L-inf ladder ends
with a large probe (64/255; 0.1 of the [-1, 1] waveform) at which any detector should fall to ~0
accuracy (the "unbounded attack" check).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from deepshield.errors import ConfigError

LINF_LADDER = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255, 64 / 255)
L2_LADDER = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
# Budgets the card's robustness scores are read at (pixels in [0, 1]; L2 over the whole image).
REFERENCE_EPS = {"linf": 4 / 255, "l2": 1.0}
# Speech: waveforms in [-1, 1]. An L-inf eps of 1e-3 on a clip of RMS 0.05 is an SNR of 34 dB at
# worst (every sample moved by eps); L2 is over the whole clip (0.1 over 1 s: RMS 7.9e-4).
SPEECH_LINF_LADDER = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 0.1)
SPEECH_L2_LADDER = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
SPEECH_MINIMAL_LINF_LADDER = (0.0, 1e-4, 1e-3, 1e-2, 0.1)  # decades: 4 attacked budgets
SPEECH_REFERENCE_EPS = {"linf": 1e-3, "l2": 0.1}
SPEECH_SNR_DB = (40.0, 30.0, 20.0, 10.0)  # white noise at these SNRs (the noise item of speech)
SPEECH_REFERENCE_SNR = 20.0  # the SNR the card's noise score is read at


@dataclass(frozen=True)
class AuditBudget:
    """One level of effort of `deepshield audit`.

    n: test images attacked (the first n of the split); eps_linf / eps_l2: the budget ladders
    (0 = clean); steps / restarts: PGD; cw_n / cw_steps: CW-L2 on the first cw_n images (steps
    per binary-search step); autoattack: registry name of the AutoAttack version run on
    autoattack_eps (None: skipped); noise_draws: random points per image in the random-noise
    baseline; surrogate_epochs / surrogate_widths: the simplenet trained as transfer surrogate
    when none is given; sanity_samples / sanity_repeats / explain_samples: the explanation
    sanity check and class-mean maps; grid_fakes: fakes in the Grad-CAM grid of evasions;
    batch_size: images per attack batch; reference_eps: {norm: eps} the card's scores are read
    at; snr_db: SNRs of the white-noise item (speech; empty: no such item); attacks: the
    white-box sweeps run (their order on the card); rerun: re-run suspicious PGD budgets with
    APGD (100 steps each); note: what the budget leaves out, said on the card.
    """

    name: str
    n: int
    steps: int
    restarts: int
    cw_n: int
    cw_steps: int
    autoattack: str | None
    autoattack_eps: tuple[float, ...]
    noise_draws: int
    surrogate_epochs: int
    surrogate_widths: tuple[int, ...]
    sanity_samples: int
    sanity_repeats: int
    explain_samples: int
    grid_fakes: int
    eps_linf: tuple[float, ...] = LINF_LADDER
    eps_l2: tuple[float, ...] = L2_LADDER
    batch_size: int = 32  # CPU: batches of 128 64 px images spent a third in page faults
    reference_eps: tuple[tuple[str, float], ...] = tuple(REFERENCE_EPS.items())
    snr_db: tuple[float, ...] = ()
    attacks: tuple[str, ...] = ("fgsm", "pgd_linf", "pgd_l2", "cw_l2", "autoattack")
    rerun: bool = True
    note: str = ""

    @property
    def reference(self) -> dict[str, float]:
        """{norm: eps} the card's robustness scores are read at."""
        return dict(self.reference_eps)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists, as audit.json reads them back)."""
        return json.loads(json.dumps(asdict(self)))


BUDGETS: dict[str, AuditBudget] = {
    "quick": AuditBudget(
        name="quick",
        n=100,
        steps=10,
        restarts=1,
        cw_n=16,
        cw_steps=20,
        autoattack=None,
        autoattack_eps=(),
        noise_draws=8,
        surrogate_epochs=2,
        surrogate_widths=(12, 24, 48, 96),
        sanity_samples=8,
        sanity_repeats=2,
        explain_samples=64,
        grid_fakes=4,
    ),
    "standard": AuditBudget(
        name="standard",
        n=256,
        steps=20,
        restarts=1,
        cw_n=64,
        cw_steps=50,
        autoattack="autoattack-fast",
        autoattack_eps=(0.0, 2 / 255, 4 / 255, 8 / 255),
        noise_draws=20,
        surrogate_epochs=4,
        surrogate_widths=(24, 48, 96, 192),
        sanity_samples=16,
        sanity_repeats=3,
        explain_samples=200,
        grid_fakes=6,
    ),
    "thorough": AuditBudget(
        name="thorough",
        n=512,
        steps=50,
        restarts=5,
        cw_n=128,
        cw_steps=100,
        autoattack="autoattack",
        autoattack_eps=(0.0, 2 / 255, 4 / 255, 8 / 255),
        noise_draws=50,
        surrogate_epochs=8,
        surrogate_widths=(24, 48, 96, 192),
        sanity_samples=32,
        sanity_repeats=5,
        explain_samples=500,
        grid_fakes=8,
    ),
}


BUDGETS["minimal"] = replace(
    BUDGETS["quick"],
    name="minimal",
    n=10,
    steps=3,
    attacks=("fgsm", "pgd_linf"),
    noise_draws=2,
    surrogate_epochs=1,
    sanity_samples=4,
    sanity_repeats=1,
    explain_samples=10,
    grid_fakes=2,
    batch_size=10,
    rerun=False,
    note="minimal budget (for costly models such as AASIST-L on a CPU): 10 samples, FGSM and "
    "PGD L-inf with 3 steps only (no L2 attacks; speech: L-inf budgets 1e-4, 1e-3, 1e-2, 0.1), "
    "2 noise draws, no APGD re-run of suspicious budgets, sanity check on 4 samples x 1 repeat",
)


def _speech(b: AuditBudget) -> AuditBudget:
    """The speech version of an image budget: waveform ladders (minimal: decades only) and
    references, white noise at SPEECH_SNR_DB, a mel_cnn surrogate of half the default widths
    (quick, minimal)."""
    small = b.name in ("quick", "minimal")
    return replace(
        b,
        eps_linf=SPEECH_MINIMAL_LINF_LADDER if b.name == "minimal" else SPEECH_LINF_LADDER,
        eps_l2=SPEECH_L2_LADDER,
        reference_eps=tuple(SPEECH_REFERENCE_EPS.items()),
        snr_db=SPEECH_SNR_DB,
        surrogate_widths=(8, 16, 32, 64) if small else (16, 32, 64, 128),
        batch_size=min(b.batch_size, 16),  # clips of 1-4 s: fewer per batch than 64 px images
    )


SPEECH_BUDGETS: dict[str, AuditBudget] = {k: _speech(b) for k, b in BUDGETS.items()}


def get_budget(name: str, modality: str = "image") -> AuditBudget:
    """The budget called `name` for 'image' or 'audio' runs; ConfigError naming the choices."""
    key = name.strip().lower()
    if key not in BUDGETS:
        raise ConfigError(f"--budget {name!r}: use one of {', '.join(BUDGETS)}")
    return (SPEECH_BUDGETS if modality == "audio" else BUDGETS)[key]
