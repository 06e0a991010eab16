"""Joint learning of a template set and its detector; the passive baseline on the same data.

Per step, B clean images x are drawn. Proactive: each gets a random template, x_u = clamp(x +
eta_i, 0, 1) (untouched); passive: x_u = x. Each x_u is then manipulated by one of the seen
manipulations drawn at random, x_m = M(x_u) (no gradient: the manipulator is a third party).
With probability `benign.p` an image (untouched or manipulated alike, so the processing says
nothing about the label) goes through a differentiable JPEG (quality ~ U(jpeg_quality)) or a
resize round trip (scale ~ U(resize_scale)), half each. The detector sees [x_u; x_m] in one
batch and the loss is

    proactive: l_b L_b + l_m L_m + l_c L_c + l_s L_s + l_p L_p + l_r L_r   (see losses.py)
    passive:   L_b

One Adam optimiser updates the detector (lr) and the templates (template_lr).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from deepshield.errors import InputError, TrainingError
from deepshield.proactive import losses
from deepshield.proactive.benign import jpeg_like, resize_roundtrip
from deepshield.proactive.config import BenignSpec, ProactiveConfig
from deepshield.proactive.detector import ProactiveDetector
from deepshield.proactive.manipulations import Manipulation, apply_mixed
from deepshield.proactive.templates import TemplateSet, add_template
from deepshield.progress import track


def _uniform(bounds: tuple[float, float], generator: torch.Generator) -> float:
    lo, hi = bounds
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def apply_benign(x: torch.Tensor, spec: BenignSpec, generator: torch.Generator) -> torch.Tensor:
    """x: [B, 3, H, W] in [0, 1] -> a share `spec.p` JPEG-compressed or resized (differentiable)."""
    if spec.p == 0:
        return x
    u = torch.rand(x.shape[0], generator=generator).view(-1, 1, 1, 1)  # [B, 1, 1, 1]
    quality = _uniform(spec.jpeg_quality, generator)
    scale = _uniform(spec.resize_scale, generator)
    x = torch.where(u < spec.p / 2, jpeg_like(x, quality), x)
    return torch.where((u >= spec.p / 2) & (u < spec.p), resize_roundtrip(x, scale), x)


class DetectorTrainer:
    """Fits a ProactiveDetector (and, when `proactive`, a TemplateSet) on clean images.

    images: [N, 3, H, W] in [0, 1]; manipulations: the seen group. `fit(steps)`, `history`.
    """

    def __init__(
        self,
        cfg: ProactiveConfig,
        images: torch.Tensor,
        manipulations: Sequence[Manipulation],
        *,
        proactive: bool = True,
    ) -> None:
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] < 2:
            raise InputError(
                f"training images have shape {tuple(images.shape)}; pass [N >= 2, 3, H, W]"
            )
        if not manipulations:
            raise InputError("no manipulation to train on; list at least one under `seen`")
        self.cfg = cfg
        self.images = images.float()
        self.manipulations = list(manipulations)
        self.rng = torch.Generator().manual_seed(cfg.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.detector = ProactiveDetector(cfg.channels, cfg.width, cfg.depth)
        groups = [{"params": self.detector.parameters(), "lr": cfg.lr}]
        self.templates = None
        if proactive:
            size = (images.shape[2], images.shape[3])
            self.templates = TemplateSet(cfg.n, size, cfg.channels, cfg.eps_max, seed=cfg.seed)
            groups.append({"params": self.templates.parameters(), "lr": cfg.template_lr})
        self.opt = torch.optim.Adam(groups)
        self.history: list[dict[str, float]] = []

    def losses(self) -> dict[str, torch.Tensor]:
        """One batch's weighted loss terms ("total" is their sum)."""
        cfg, b = self.cfg, self.cfg.batch_size
        x = self.images[torch.randint(self.images.shape[0], (b,), generator=self.rng)]
        eta_all = None if self.templates is None else self.templates()  # [n, C, H, W]
        if eta_all is not None:
            eta = eta_all[self.templates.random_indices(b, self.rng)]  # [B, C, H, W]
            x_u = add_template(x, eta)
        else:
            x_u = x
        x_m = apply_mixed(x_u.detach(), self.manipulations, self.rng)
        both = apply_benign(torch.cat([x_u, x_m]), cfg.benign, self.rng)  # [2B, 3, H, W]
        s, r = self.detector(both, eta_all)  # [2B], [2B, C, H, W]
        target = torch.cat([torch.ones(b), torch.zeros(b)])  # 1 = untouched
        lam = cfg.lambdas
        terms = {"b": lam.b * losses.bce_loss(s, target)}
        if eta_all is not None:
            terms["m"] = lam.m * losses.magnitude_loss(eta)
            terms["c"] = lam.c * losses.low_frequency_loss(eta, cfg.k)
            terms["s"] = lam.s * losses.separation_loss(eta_all, r[b:])
            terms["p"] = lam.p * losses.pairwise_loss(eta_all)
            terms["r"] = lam.r * losses.recovery_loss(eta, r[:b])
        terms["total"] = sum(terms.values())
        with torch.no_grad():
            terms["acc"] = ((s > 0).float() == target).float().mean()
        return terms

    def step(self) -> dict[str, float]:
        """One optimiser step; returns the step's loss terms as floats."""
        self.detector.train()
        terms = self.losses()
        self.opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        self.opt.step()
        record = {"step": len(self.history) + 1, **{k: v.item() for k, v in terms.items()}}
        if not math.isfinite(record["total"]):
            raise TrainingError(
                f"loss became non-finite at step {record['step']} ({record}); lower lr or lambdas"
            )
        self.history.append(record)
        return record

    def fit(self, steps: int) -> list[dict[str, float]]:
        """Run `steps` more steps; returns `history`."""
        what = "proactive" if self.templates is not None else "passive"
        for _ in track(range(steps), description=f"training {what} detector", total=steps):
            self.step()
        return self.history
