"""Adversarial-example detector: a binary classifier that tells clean inputs (label 0) from
adversarial ones (label 1) crafted against a protected model, and how it generalises to attacks
it never saw.

Data: every sample of the protected run's dataset appears twice, clean and attacked against the
protected model with its own label; the protected run's train/val/test splits stay the splits
(no image is in two splits). Adversarial images are rounded to 8 bits like the clean ones, so
the detector cannot use off-grid pixel values.

`Guarded(protected, detector)` joins both into one (K+1)-class model for detector-aware attacks:
P(class k) = P_protected(k) * (1 - P_adv), P(class K) = P_adv ("rejected as adversarial").

@inproceedings{metzen2017detecting,
  title     = {On Detecting Adversarial Perturbations},
  author    = {Metzen, Jan Hendrik and Genewein, Tim and Fischer, Volker and Bischoff, Bastian},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2017}
}
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn

from deepshield.attacks.evaluate import attack_transform, score_dataset
from deepshield.attacks.registry import get_attack
from deepshield.config import TrainConfig
from deepshield.data.splits import Splits, TensorSet
from deepshield.errors import ConfigError

CLASSES = ["clean", "adversarial"]
DEFAULT_EVALUATE = ["fgsm:0.07", "fgsm:0.03", "fgsm:0.1", "pgd:0.07", "cw_l2"]


class DetectorConfig(BaseModel):
    """An adversarial-example detector study; saved as the run's config.yaml."""

    model_config = ConfigDict(extra="forbid")

    protect: str  # run folder of the protected model
    attack: str = "fgsm"  # attack the detector is trained on
    eps: float = Field(0.07, ge=0, le=1)
    steps: int = Field(10, ge=1)  # iterative attacks (pgd, ifgsm; cw_l2: Adam steps)
    limit: int | None = Field(None, ge=2)  # at most this many samples per split (stratified)
    evaluate: list[str] = Field(default_factory=lambda: list(DEFAULT_EVALUATE))  # ATTACK[:EPS]
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(model="resnet18_cifar", epochs=5, batch_size=64)
    )

    @field_validator("attack")
    @classmethod
    def _known_attack(cls, v: str) -> str:
        get_attack(v)
        return v

    @field_validator("evaluate")
    @classmethod
    def _known_attacks(cls, v: list[str]) -> list[str]:
        for spec in v:
            parse_attack(spec)
        return v


def parse_attack(spec: str, default_eps: float = 0.0) -> tuple[str, float]:
    """'pgd:0.03' -> ('pgd', 0.03); 'cw_l2' -> ('cw_l2', default_eps); ConfigError when bad."""
    name, _, eps = spec.partition(":")
    get_attack(name)
    if not eps:
        return name, default_eps
    try:
        value = float(eps)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise ConfigError(f"attack {spec!r}: eps must be a number in [0, 1], e.g. pgd:0.03")
    return name, value


def eight_bit(x: Tensor) -> Tensor:
    """Images in [0,1] rounded to the 8-bit grid (as stored images are), same shape."""
    return (x * 255).round() / 255


def adversarial_pairs(
    protected: nn.Module,
    ds: TensorSet,
    attack: str,
    eps: float,
    *,
    steps: int = 10,
    seed: int = 0,
    batch_size: int = 256,
) -> TensorSet:
    """Each sample of `ds` clean (label 0) and attacked against `protected` (label 1): 2N samples,
    x uint8 [2N,C,H,W]. meta["fooled"]: [2N] bool, the protected model is wrong on the sample
    (the attacked images judged after rounding to 8 bits, as they are stored)."""
    x, y = ds.tensors()
    transform = attack_transform(
        get_attack(attack), protected, eps, batch_size=batch_size, seed=seed, steps=steps,
        post=eight_bit,
    )  # fmt: skip
    clean = score_dataset(protected, x, y, batch_size=batch_size)
    adv = score_dataset(protected, x, y, transform, batch_size=batch_size, keep=range(len(x)))
    attacked = adv.kept if adv.kept is not None else x[:0]
    as_bytes = [(v * 255).round().to(torch.uint8) for v in (x, attacked)]  # [N, C, H, W] each
    names = list(ds.names) + [f"{n}:{attack}" for n in ds.names]
    fooled = torch.cat([clean.predictions() != y, adv.predictions() != y])  # [2N]
    labels = torch.cat([torch.zeros(len(x)), torch.ones(len(x))]).long()
    return TensorSet(torch.cat(as_bytes), labels, names, {"fooled": fooled})


def adversarial_splits(
    protected: nn.Module, splits: Splits, attack: str, eps: float, *, steps: int, seed: int
) -> Splits:
    """adversarial_pairs of every split of `splits` (classes: clean, adversarial)."""
    parts = {
        s: adversarial_pairs(protected, splits.split(s), attack, eps, steps=steps, seed=seed)
        for s in ("train", "val", "test")
    }
    return Splits(
        name=f"{attack}:{eps:g} vs {splits.name}",
        classes=list(CLASSES),
        notes=f"clean and {attack} (eps={eps:g}) images of {splits.name}, one of each per sample",
        **parts,
    )


def detection_row(
    detector: nn.Module, pairs: TensorSet, attack: str, eps: float, threshold: float = 0.5
) -> tuple[dict[str, Any], Tensor]:
    """Detection numbers of `detector` on a clean/adversarial set (`adversarial_pairs`: N clean
    then their N attacked versions) and its scores P(adversarial) [2N].

    Besides accuracy, balanced accuracy, AUC and EER: "successes" / "attacked" (attacked images
    the protected model gets right clean and wrong attacked / images it gets right clean),
    attack_success (their ratio), "real attack" (at least one success) and detected_successes
    (share of the successful adversarial images the detector flags: the detection rate that
    matters; None when the attack fooled nothing, so a harmless row never reads as a success)."""
    from deepshield.metrics import detector_metrics

    scores = score_dataset(detector, *pairs.tensors(), batch_size=128).scores()  # P(adv) [2N]
    m = detector_metrics(pairs.y.numpy(), scores.numpy(), threshold=threshold)
    n = len(pairs) // 2
    wrong_clean, wrong_adv = pairs.meta["fooled"][:n], pairs.meta["fooled"][n:]  # [N] each
    success = ~wrong_clean & wrong_adv  # [N]: this attack broke the image
    attacked, successes = int((~wrong_clean).sum()), int(success.sum())
    flagged = scores[n:] >= threshold  # [N]
    row = {
        "attack": attack,
        "eps": None if get_attack(attack).minimal else eps,
        "n": m["n"],
        "accuracy": m["accuracy"],
        "balanced_accuracy": m["balanced_accuracy"],
        "auc": m["auc"],
        "eer": m["eer"],
        "missed_adversarial": m["fake_passed_as_real"],
        "clean_flagged": m["real_flagged_as_fake"],
        "attacked": attacked,
        "successes": successes,
        "attack_success": successes / attacked if attacked else None,
        "real attack": successes > 0,
        "detected_successes": float(flagged[success].float().mean()) if successes else None,
    }
    return row, scores


def real_attack_note(rows: list[dict[str, Any]]) -> str:
    """ "k of R rows are real attacks ..." for detection_row rows, naming the rows that are not."""
    harmless = [f"{r['attack']}:{r['eps']}" for r in rows if not r["real attack"]]
    note = (
        f"{len(rows) - len(harmless)} of {len(rows)} rows are real attacks (they fool the "
        "protected model on at least one image it classifies correctly when clean)"
    )
    if harmless:
        note += (
            f"; {', '.join(harmless)} fooled no image, so detecting it says nothing about "
            "detecting adversarial examples"
        )
    return note


def plot_detection_rocs(curves: dict[str, tuple[Tensor, Tensor]]) -> Any:
    """One ROC curve per attack: curves[name] = (labels [N] in {0,1}, scores [N])."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from deepshield.metrics import auc, roc

    fig = Figure(figsize=(5, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for name, (y, s) in curves.items():
        fpr, tpr, _ = roc(y.numpy(), s.numpy())
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc(y.numpy(), s.numpy()):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="clean flagged (FPR)", ylabel="adversarial detected (TPR)", title="Detection ROC")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


class Guarded(nn.Module):
    """Protected classifier + adversarial-example detector as one (K+1)-class model.

    x: [B,C,H,W] in [0,1] -> logits [B, K+1]: log P_protected(k) + log(1 - P_adv) for k < K and
    log P_adv for class K (the detector's verdict "adversarial"); their softmax is that joint
    distribution. A detector-aware attack must move x away from y and keep class K unlikely.
    """

    def __init__(self, protected: nn.Module, detector: nn.Module) -> None:
        super().__init__()
        self.protected = protected
        self.detector = detector

    def forward(self, x: Tensor) -> Tensor:
        log_p = F.log_softmax(self.protected(x), dim=1)  # [B, K]
        d = self.detector(x)  # [B, 2]
        log_odds = d[:, 1] - d[:, 0]  # [B]: log P_adv / (1 - P_adv)
        kept = log_p + F.logsigmoid(-log_odds)[:, None]  # [B, K]
        return torch.cat([kept, F.logsigmoid(log_odds)[:, None]], dim=1)  # [B, K+1]
