"""Train an image-translation generator on CPU in minutes: the paired (pix2pix) objective.

The target of G(x, c) is the deterministic edit `apply_edit(x, c)` (deepshield.data.edits), so
the generator learns from pairs instead of from StarGAN's unpaired domain-classification and
cycle-reconstruction terms, which need far more steps than a CPU budget gives. Per step, with
x, y = apply_edit(x, c) mapped to [-1, 1] and z = [x, c tiled, image] on the channels:

    D:  0.5 * (D(z_real) - 1)^2 + 0.5 * D(z_fake)^2          (least-squares GAN, Mao et al.)
    G:  lambda_l1 * |G(x, c) - y|_1 + lambda_adv * (D(z_fake) - 1)^2

with a conditional PatchGAN D (pix2pix). Least squares rather than WGAN-GP: it needs no extra
critic steps or gradient penalty and is stable at batch 8 (CycleGAN's choice). lambda_adv = 0
trains with L1 only, without a discriminator. Unconditional generators (pix2pix, cyclegan)
learn one fixed edit (`fixed_edit`).

Build StarGAN for training with `track_running_stats=False`: after a short run its InstanceNorm
running averages lag the weights, and eval() (used by `evaluate` and by attacks) normalises with
them (measured, conv_dim 16, 100 steps: eval L1 0.181 with running stats vs 0.120 without).

GAN adversarial training (Ruiz et al. 2020, sec. 3.4): `perturb(G, x, c) -> x_adv` ([-1, 1],
e.g. a disruption attack) is called every step. adv_mode "generator": the fake term uses
G(x_adv, c) and its target stays the edit of the clean x; "generator+discriminator": D is also
trained on perturbed inputs (its condition image is x_adv in both the real and the fake pair).

@inproceedings{ruiz2020disrupting,
  title     = {Disrupting Deepfakes: Adversarial Attacks Against Conditional Image Translation
               Networks and Facial Manipulation Systems},
  author    = {Ruiz, Nataniel and Bargal, Sarah Adel and Sclaroff, Stan},
  booktitle = {European Conference on Computer Vision Workshops (ECCVW)},
  pages     = {236--251},
  year      = {2020}
}
@inproceedings{mao2017lsgan,
  title     = {Least Squares Generative Adversarial Networks},
  author    = {Mao, Xudong and Li, Qing and Xie, Haoran and Lau, Raymond Y. K. and Wang, Zhen and
               Smolley, Stephen Paul},
  booktitle = {IEEE International Conference on Computer Vision (ICCV)},
  pages     = {2794--2802},
  year      = {2017}
}
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import nn

from deepshield.data.edits import EDITS, apply_edit, attributes, sample_attributes
from deepshield.errors import ConfigError, InputError, ModelError, TrainingError
from deepshield.files import atomic_write_bytes
from deepshield.models.discriminators import PatchDiscriminator
from deepshield.models.frozen import frozen_eval
from deepshield.progress import track

Perturb = Callable[[nn.Module, torch.Tensor, torch.Tensor | None], torch.Tensor]
ADV_MODES = ("generator", "generator+discriminator")


def _pair(x: torch.Tensor, c: torch.Tensor | None, image: torch.Tensor) -> torch.Tensor:
    """D's input: x [B, 3, H, W], c [B, k] tiled, image [B, 3, H, W] -> [B, 6 + k, H, W]."""
    parts = [x]
    if c is not None:
        parts.append(c[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3]))
    return torch.cat([*parts, image], dim=1)


class GANTrainer:
    """Fits `generator` so that G(x, c) = apply_edit(x, c); `fit(steps)`, `history`, save/load.

    images: [N, 3, H, W] in [0, 1] (H, W as the generator needs, e.g. 64). Randomness (batches,
    attribute vectors, dropout, the discriminator's init) comes from `seed`: the same seed gives
    the same numbers, also across a save / load in the middle.
    """

    def __init__(
        self,
        generator: nn.Module,
        images: torch.Tensor,
        *,
        discriminator: nn.Module | None = None,
        fixed_edit: Sequence[str] = ("warm",),
        batch_size: int = 8,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        lambda_l1: float = 100.0,
        lambda_adv: float = 1.0,
        multi_hot: bool = True,
        perturb: Perturb | None = None,
        adv_mode: str = "generator",
        seed: int = 0,
    ) -> None:
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0:
            raise InputError(
                f"GANTrainer: images have shape {tuple(images.shape)}; pass [N, 3, H, W]"
            )
        if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise InputError(
                "GANTrainer: images are outside [0, 1] or not finite; pass pixels in [0, 1]"
            )
        if adv_mode not in ADV_MODES:
            raise ConfigError(f"adv_mode={adv_mode!r}; choose one of {ADV_MODES}")
        self.conditional = hasattr(generator, "c_dim")
        if self.conditional and generator.c_dim != len(EDITS):
            raise ConfigError(
                f"generator has c_dim={generator.c_dim} but the edits have {len(EDITS)} "
                f"attributes {EDITS}; build it with c_dim={len(EDITS)}"
            )
        self.generator = generator
        self.images = images.float()
        self.fixed_c = attributes(*fixed_edit)  # [1, len(EDITS)], unconditional target
        self.batch_size = batch_size
        self.lambda_l1 = lambda_l1
        self.lambda_adv = lambda_adv
        self.multi_hot = multi_hot
        self.perturb = perturb
        self.adv_mode = adv_mode
        self.rng = torch.Generator().manual_seed(seed)
        self.device = next(generator.parameters()).device
        if discriminator is None and lambda_adv > 0:
            in_channels = 6 + (len(EDITS) if self.conditional else 0)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                discriminator = PatchDiscriminator(in_channels, ndf=32, n_layers=3)
        self.discriminator = None if discriminator is None else discriminator.to(self.device)
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas)
        self.opt_d = (
            None
            if self.discriminator is None
            else torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=betas)
        )
        self.step = 0
        self.history: list[dict[str, float]] = []

    # -- one batch ---------------------------------------------------------------------------
    def _batch(self, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> x [B, 3, H, W] in [-1, 1], c [B, len(EDITS)], target y [B, 3, H, W] in [-1, 1]."""
        idx = torch.randint(self.images.shape[0], (self.batch_size,), generator=rng)
        x01 = self.images[idx]
        if self.conditional:
            c = sample_attributes(self.batch_size, rng, self.multi_hot)
        else:
            c = self.fixed_c.expand(self.batch_size, -1)
        y01 = apply_edit(x01, c)
        return (x01 * 2 - 1).to(self.device), c.to(self.device), (y01 * 2 - 1).to(self.device)

    def _generate(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.generator(x, c) if self.conditional else self.generator(x)

    def train_step(self) -> dict[str, float]:
        """One D update (when adversarial) and one G update; returns the step's losses."""
        step_seed = int(torch.randint(2**62, (1,), generator=self.rng))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(step_seed)  # dropout and perturb's own randomness
            x, c, y = self._batch(self.rng)
            c_g = c if self.conditional else None  # what G and D are conditioned on
            x_in = x
            if self.perturb is not None:
                x_in = self.perturb(self.generator, x, c_g).detach()
                if x_in.shape != x.shape:
                    raise InputError(
                        f"perturb returned shape {tuple(x_in.shape)} for x {tuple(x.shape)}; "
                        "it must return x_adv of the same shape"
                    )
            self.generator.train()
            fake = self._generate(x_in, c)  # [B, 3, H, W] in [-1, 1]
            x_cond = x_in if self.adv_mode == "generator+discriminator" else x
            losses = {}
            if self.discriminator is not None:
                self.discriminator.train()
                d_real = self.discriminator(_pair(x_cond, c_g, y))
                d_fake = self.discriminator(_pair(x_cond, c_g, fake.detach()))
                loss_d = 0.5 * (F.mse_loss(d_real, torch.ones_like(d_real)) + d_fake.pow(2).mean())
                self.opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                self.opt_d.step()
                losses["loss_d"] = loss_d.item()
            loss_l1 = F.l1_loss(fake, y)
            loss_g = self.lambda_l1 * loss_l1
            if self.discriminator is not None:
                d_fake = self.discriminator(_pair(x_cond, c_g, fake))
                loss_adv = F.mse_loss(d_fake, torch.ones_like(d_fake))
                loss_g = loss_g + self.lambda_adv * loss_adv
                losses["loss_adv"] = loss_adv.item()
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
        self.step += 1
        record = {"step": self.step, "loss_g": loss_g.item(), "loss_l1": loss_l1.item(), **losses}
        if not all(math.isfinite(v) for v in record.values()):
            raise TrainingError(
                f"GAN loss became non-finite at step {self.step} ({record}); lower lr or lambda_adv"
            )
        return record

    def fit(self, steps: int) -> list[dict[str, float]]:
        """Run `steps` more training steps; appends to and returns `history`."""
        for _ in track(range(steps), description="GAN training", total=steps):
            self.history.append(self.train_step())
        return self.history

    # -- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, images: torch.Tensor | None = None, seed: int = 1234) -> dict[str, float]:
        """Mean L1 in [0, 1] pixels between G(x, c) and apply_edit(x, c), in eval mode.

        images: [N, 3, H, W] in [0, 1] (default: the first 32 training images); c drawn from
        `seed`, so calls before and after training see the same pairs. "l1_identity" is the L1
        of returning x unchanged, the bar a useful generator must beat.
        """
        x01 = (self.images if images is None else images.float())[:32]
        if self.conditional:
            c = sample_attributes(x01.shape[0], torch.Generator().manual_seed(seed), self.multi_hot)
        else:
            c = self.fixed_c.expand(x01.shape[0], -1)
        y01 = apply_edit(x01, c)
        with frozen_eval(self.generator):
            out = self._generate((x01 * 2 - 1).to(self.device), c.to(self.device))
        out01 = ((out.cpu() + 1) / 2).clamp(0, 1)
        return {
            "l1": (out01 - y01).abs().mean().item(),
            "l1_identity": (x01 - y01).abs().mean().item(),
        }

    # -- checkpoints ---------------------------------------------------------------------------
    def _modules(self) -> dict[str, Any]:
        parts: dict[str, Any] = {"generator": self.generator, "opt_g": self.opt_g}
        if self.discriminator is not None:
            parts.update(discriminator=self.discriminator, opt_d=self.opt_d)
        return parts

    def save(self, path: str | Path) -> Path:
        """Write weights, optimizer moments, RNG state and history to one .safetensors file."""
        tensors: dict[str, torch.Tensor] = {"rng_state": self.rng.get_state()}
        groups: dict[str, Any] = {}
        for name, part in self._modules().items():
            if isinstance(part, nn.Module):
                for k, v in part.state_dict().items():
                    tensors[f"{name}.{k}"] = v.detach().cpu().contiguous()
            else:  # optimizer: per-parameter tensors + JSON param groups
                sd = part.state_dict()
                groups[name] = sd["param_groups"]
                for idx, state in sd["state"].items():
                    for k, v in state.items():
                        tensors[f"{name}.{idx}.{k}"] = v.detach().cpu().contiguous()
        meta = {
            "step": str(self.step),
            "history": json.dumps(self.history),
            "param_groups": json.dumps(groups),
        }
        return atomic_write_bytes(path, save(tensors, metadata=meta))

    def load(self, path: str | Path) -> GANTrainer:
        """Restore a `save`d state into this trainer (same architectures); returns self."""
        path = Path(path)
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except (OSError, SafetensorError) as e:
            raise ModelError(
                f"{path}: cannot read a GAN trainer checkpoint ({e}); pass a file written by "
                "GANTrainer.save"
            ) from e
        if "param_groups" not in meta:
            raise ModelError(
                f"{path}: not a GANTrainer checkpoint; pass a file from GANTrainer.save"
            )
        groups = json.loads(meta["param_groups"])
        for name, part in self._modules().items():
            prefix = f"{name}."
            own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            if isinstance(part, nn.Module):
                expected = set(part.state_dict())
                if set(own) != expected or any(
                    own[k].shape != v.shape for k, v in part.state_dict().items()
                ):
                    diff = sorted(set(own) ^ expected)[:3] or ["(shapes differ)"]
                    raise ModelError(
                        f"{path}: the saved {name} does not fit this trainer's {name} "
                        f"(e.g. {', '.join(diff)}); build the architecture it was saved with"
                    )
                part.load_state_dict(own, strict=True)
            else:
                if name not in groups:
                    raise ModelError(
                        f"{path}: no {name} state; build the trainer as when it was saved"
                    )
                state: dict[int, dict[str, torch.Tensor]] = {}
                for k, v in own.items():
                    idx, field = k.split(".", 1)
                    state.setdefault(int(idx), {})[field] = v
                part.load_state_dict({"state": state, "param_groups": groups[name]})
        self.rng.set_state(tensors["rng_state"])
        self.step = int(meta["step"])
        self.history = json.loads(meta["history"])
        return self
