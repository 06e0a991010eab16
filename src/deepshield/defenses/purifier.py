"""Input purification: classify a reconstruction of the input instead of the input (Gandhi & Jain's
Deep Image Prior defence), the `Purified` classifier wrapper, and the paper's evaluation table.

The table (Gandhi & Jain, DIP defence), per decision threshold t on P(fake) of the purified image:
- perturbed fakes: fakes the detector caught whose adversarial version fools it (P < 0.5);
  recall = share called fake (P >= t) after purification;
- unperturbed fakes: fakes the detector caught; recall after purification;
- reals: reals the detector classified correctly; retained = share still called real (P < t).
A threshold below 0.5 (the paper's 0.25) trades some real-image accuracy for recall, since a
reconstruction loses part of the evidence of a fake.

Beside "none" (the detector alone) and "purified", the rows "blur alone" score each selected
image Gaussian-blurred to the PSNR its purification reached (`defenses.blur.blur_to_psnr`):
a recall gain that blur alone gives is detail loss, not purification. The result also holds the
PSNR of the purified images to their inputs and, in `purify_run`, the stop target and how many
images reached it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from deepshield.defenses.blur import blur_to_psnr
from deepshield.defenses.dip import DipConfig, Reconstruction, check_mode, dip_reconstruct, psnr
from deepshield.predict import fake_scores, predict_logits

PAPER_THRESHOLD = 0.25


class DipPurifier:
    """x [B,C,H,W] in [0,1] -> its DIP reconstruction (see `dip.dip_reconstruct`); keeps the last
    Reconstruction (iterations, PSNR, time) in `last`.

    Image i of every call is seeded seed + i (the same input, the same output), or with
    reseed=True seed + (images reconstructed before) + i: every reconstruction draws a new random
    network and noise, the randomness an EOT attack averages over.
    """

    def __init__(
        self,
        cfg: DipConfig = DipConfig(),
        *,
        mode: str = "grouped",
        chunk: int = 16,
        seed: int = 0,
        reseed: bool = False,
    ) -> None:
        check_mode(mode, chunk)
        self.cfg, self.mode, self.chunk, self.seed, self.reseed = cfg, mode, chunk, seed, reseed
        self.last: Reconstruction | None = None
        self.images = 0  # reconstructed so far

    def __call__(self, x: Tensor) -> Tensor:
        seed = self.seed + self.images if self.reseed else self.seed
        self.last = dip_reconstruct(x, self.cfg, mode=self.mode, chunk=self.chunk, seed=seed)
        self.images += len(x)
        return self.last.images


class Purified(nn.Module):
    """model(purifier(x)): x [B,C,H,W] in [0,1] -> the model's logits on the purified input.

    The purifier runs its own optimisation and returns a detached image, so no gradient reaches
    x: a white-box attack on this wrapper must approximate the purifier's gradient (BPDA, EOT;
    see `defenses.adaptive`).
    """

    def __init__(self, model: nn.Module, purifier: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.model = model
        self.purifier = purifier

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.purifier(x).detach())


def _scores(model: nn.Module, x: Tensor) -> Tensor:
    return fake_scores(predict_logits(model, x)) if len(x) else torch.zeros(0)


def _share(mask: Tensor) -> float | None:
    """Share of True in a bool mask [n] as an exact ratio (0.7, not float32's 0.69999...)."""
    return int(mask.sum()) / len(mask) if len(mask) else None


def purification_table(
    detector: nn.Module,
    purifier: Callable[[Tensor], Tensor],
    fakes: Tensor,
    fakes_adv: Tensor,
    reals: Tensor,
    thresholds: Sequence[float] = (PAPER_THRESHOLD, 0.5),
    *,
    blur_baseline: bool = True,
) -> dict[str, Any]:
    """The DIP-defence table for one detector and purifier.

    fakes, fakes_adv: [N,C,H,W] (clean fakes and their adversarial versions), reals: [M,C,H,W],
    all in [0,1]. Selects the samples as in the module docstring, purifies them (one call) and
    returns counts and, per threshold, recall on perturbed / unperturbed fakes and the share of
    reals retained: without purification ("none"), after it ("purified") and, with
    blur_baseline, after a Gaussian blur to the same per-image PSNR ("blur alone"). "psnr" holds
    the purified images' PSNR to their inputs [n] (dB) and "blur_sigma" the blur's sigma [n]
    (px); "images" the selected inputs and their purified versions [n,C,H,W] (for plots).
    """
    s_fake, s_adv, s_real = _scores(detector, fakes), _scores(detector, fakes_adv), _scores(
        detector, reals
    )  # fmt: skip
    caught = s_fake >= 0.5  # [N]
    groups = {
        "perturbed": fakes_adv[caught & (s_adv < 0.5)],
        "unperturbed": fakes[caught],
        "reals": reals[s_real < 0.5],
    }
    sizes = [len(g) for g in groups.values()]
    batch = torch.cat(list(groups.values()))
    purified = purifier(batch) if len(batch) else batch
    reached = psnr(purified, batch).cpu() if len(batch) else torch.zeros(0)  # [n] dB
    stages = {"none": batch, "purified": purified}
    sigma = None
    if blur_baseline and len(batch):
        stages["blur alone"], sigma = blur_to_psnr(batch, reached)
    scores = {k: _scores(detector, v).split(sizes) for k, v in stages.items()}
    rows = []
    for t in thresholds:
        for stage, (p, u, r) in scores.items():
            rows.append(
                {
                    "threshold": t,
                    "defence": stage,
                    "recall_perturbed": _share(p >= t),
                    "recall_unperturbed": _share(u >= t),
                    "real_retained": _share(r < t),
                }
            )
    return {
        "counts": {k: len(v) for k, v in groups.items()},
        "fakes": len(fakes),
        "attack_success": _share(s_adv[caught] < 0.5),
        "rows": rows,
        "psnr": reached.tolist(),
        "blur_sigma": None if sigma is None else sigma.tolist(),
        "images": {"input": batch, "purified": purified},
    }


def psnr_summary(values: Sequence[float], target: float | None) -> dict[str, Any]:
    """Mean / min PSNR (dB) of purified images and how many reached the stop target."""
    v = torch.tensor(list(values), dtype=torch.float64)
    return {
        "mean": float(v.mean()) if len(v) else None,
        "min": float(v.min()) if len(v) else None,
        "target": target,
        "reached": None if target is None else int((v >= target).sum()),
        "images": len(v),
    }


def psnr_line(result: dict[str, Any]) -> str:
    """One sentence: the purified images' PSNR to their inputs against the stop target."""
    p = result["psnr"]
    if not p["images"]:
        return "No image was purified."
    line = f"PSNR to the input: mean {p['mean']:.3f} dB (lowest {p['min']:.3f})"
    if p["target"] is None:
        return line + ", no stop target (fixed iterations)."
    return line + f"; stop target {p['target']:.3f} dB reached by {p['reached']} of {p['images']}."


def timing(rec: Reconstruction | None, n: int) -> dict[str, Any]:
    """Per-image wall and CPU seconds, mean iterations and PSNR of a purifier's last run."""
    if rec is None or n == 0:
        return {}
    return {
        "seconds_per_image": rec.seconds / n,
        "cpu_seconds_per_image": rec.cpu_seconds / n,
        "mean_iters": float(rec.iters.float().mean()),
        "mean_psnr_to_input": float(rec.psnr.mean()),
        "threads": torch.get_num_threads(),
    }
