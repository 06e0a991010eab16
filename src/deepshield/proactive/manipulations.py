"""Manipulations a protected image may later undergo: attribute edits and trained generators.

A manipulation maps images [B, 3, H, W] in [0, 1] to the same shape and range, drawing any
randomness (a conditional generator's target attribute) from a torch.Generator. Edits are the
deterministic `deepshield.data.edits`; generators are image-translation networks trained with
`GANTrainer` to imitate those edits, cached as `<folder>/<name>.safetensors` + `<name>.json`
(their spec, image size and seed: a changed spec retrains).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from deepshield.data.edits import EDITS, apply_edit, attributes
from deepshield.files import atomic_write_text
from deepshield.models import create, load_weights, save_weights
from deepshield.proactive.config import GeneratorSpec
from deepshield.train.gan import GANTrainer

Manipulation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class Edit:
    """One attribute edit (hair, bright, warm, blur, contrast) applied fully to every image."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.c = attributes(name)  # [1, len(EDITS)]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """x: [B, 3, H, W] in [0, 1] -> edited [B, 3, H, W] in [0, 1]."""
        return apply_edit(x, self.c.expand(x.shape[0], -1).to(x.device))


class GeneratorEdit:
    """A trained translation generator; conditional ones get a one-hot c drawn from `edits`."""

    def __init__(self, name: str, net: nn.Module, edits: Sequence[str]) -> None:
        self.name = name
        self.net = net.eval()
        self.conditional = hasattr(net, "c_dim")
        self.choices = torch.cat([attributes(e) for e in edits])  # [len(edits), len(EDITS)]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """x: [B, 3, H, W] in [0, 1] -> G(x [, c]) [B, 3, H, W] in [0, 1]."""
        x11 = x * 2 - 1  # generators work in [-1, 1]
        if self.conditional:
            pick = torch.randint(len(self.choices), (x.shape[0],), generator=generator)
            out = self.net(x11, self.choices[pick].to(x.device))
        else:
            out = self.net(x11)
        return ((out + 1) / 2).clamp(0, 1)


def generator_net(spec: GeneratorSpec) -> nn.Module:
    """The untrained net of `spec` (conditional ones with c_dim = len(EDITS))."""
    kwargs = dict(spec.kwargs)
    if spec.arch in ("stargan", "ganimation"):
        kwargs.setdefault("c_dim", len(EDITS))
    if spec.arch == "stargan":
        kwargs.setdefault("track_running_stats", False)  # see deepshield.train.gan
    return create(spec.arch, **kwargs)


def train_generator(
    spec: GeneratorSpec, images: torch.Tensor, seed: int
) -> tuple[nn.Module, dict[str, float]]:
    """Fit `spec` on images [N, 3, H, W] in [0, 1] (targets: the edits) -> (net in eval, its
    GANTrainer.evaluate L1 to the edit and the L1 of returning the input unchanged)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = generator_net(spec)
    trainer = GANTrainer(
        net,
        images,
        fixed_edit=spec.edits,
        batch_size=spec.batch_size,
        lr=spec.lr,
        lambda_adv=spec.lambda_adv,
        multi_hot=False,
        seed=seed,
    )
    trainer.fit(spec.steps)
    return net.eval(), trainer.evaluate()


def load_or_train_generators(
    specs: Mapping[str, GeneratorSpec],
    names: Sequence[str],
    images: torch.Tensor,
    folder: str | Path,
    seed: int,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, nn.Module]:
    """The generators among `names`, loaded from `folder` when cached with the same spec.

    `<name>.json` holds the cache key (spec, image shape and count, seed) and the quality
    (`read_quality`)."""
    folder = Path(folder)
    nets = {}
    for k, name in enumerate(n for n in names if n in specs):
        spec = specs[name]
        key = {
            "spec": spec.model_dump(mode="json"),
            "size": list(images.shape[1:]),
            "n_images": images.shape[0],
            "seed": seed + 1000 * (k + 1),
        }
        meta, weights = folder / f"{name}.json", folder / f"{name}.safetensors"
        if weights.is_file() and _cached_key(meta) == key:
            nets[name] = load_weights(generator_net(spec), weights).eval()
            log(f"generator {name}: loaded {weights}")
            continue
        log(f"generator {name}: training {spec.arch} for {spec.steps} steps")
        nets[name], quality = train_generator(spec, images, key["seed"])
        save_weights(nets[name], weights)
        atomic_write_text(meta, json.dumps({"key": key, "quality": quality}, indent=2) + "\n")
        log(
            f"generator {name}: L1 to its edit {quality['l1']:.4f} (input: {quality['l1_identity']:.4f})"
        )
    return nets


def _cached_key(meta: Path) -> dict | None:
    """The cache key in a generator's JSON; None when missing or unreadable (retrain)."""
    try:
        return json.loads(meta.read_text()).get("key")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def read_quality(folder: str | Path, name: str) -> dict[str, float]:
    """The L1 of a cached generator to its edit and of the unchanged input (train images)."""
    return json.loads((Path(folder) / f"{name}.json").read_text())["quality"]


def build(
    names: Sequence[str], specs: Mapping[str, GeneratorSpec], nets: Mapping[str, nn.Module]
) -> dict[str, Manipulation]:
    """Name -> manipulation, for edits and for generators (whose nets must be in `nets`)."""
    return {
        name: GeneratorEdit(name, nets[name], specs[name].edits) if name in specs else Edit(name)
        for name in names
    }


def apply_mixed(
    x: torch.Tensor, manipulations: Sequence[Manipulation], generator: torch.Generator
) -> torch.Tensor:
    """x: [B, 3, H, W] in [0, 1] -> each image manipulated by one of `manipulations` at random."""
    pick = torch.randint(len(manipulations), (x.shape[0],), generator=generator)
    out = torch.empty_like(x)
    for j, manipulate in enumerate(manipulations):
        mask = pick == j
        if bool(mask.any()):
            out[mask] = manipulate(x[mask], generator)
    return out
