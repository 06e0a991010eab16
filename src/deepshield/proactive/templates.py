"""A learned set of imperceptible templates {eta_1 .. eta_n} added to images before release.

eta_k = eps_max * tanh(raw_k): every template value lies in [-eps_max, eps_max] whatever the
optimiser does to `raw` [n, C, H, W]. C = 1 (default) is one luminance pattern added equally to
R, G and B; C = 3 gives one pattern per channel. A protected image is
`clamp(x + eta_k, 0, 1)` in pixel space; images larger or smaller than the template get the
template tiled from the top-left corner (period H x W).

Saved as two files: `<stem>.safetensors` (the `raw` tensor) and `<stem>.json` (n, channels,
size, eps_max, format), so a set reloads bit-exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from deepshield.errors import InputError, ModelError
from deepshield.files import atomic_write_bytes, atomic_write_text

FORMAT = "deepshield.proactive.templates/1"


class TemplateSet(nn.Module):
    """n templates [n, C, H, W] in [-eps_max, eps_max]; `forward()` returns them."""

    def __init__(
        self,
        n: int = 8,
        size: tuple[int, int] = (64, 64),
        channels: int = 1,
        eps_max: float = 0.03,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if n < 1 or channels not in (1, 3) or min(size) < 1 or not 0 < eps_max <= 1:
            raise InputError(
                f"TemplateSet(n={n}, size={size}, channels={channels}, eps_max={eps_max}): "
                "need n >= 1, channels 1 or 3, a positive size and 0 < eps_max <= 1"
            )
        self.eps_max = float(eps_max)
        g = torch.Generator().manual_seed(seed)
        self.raw = nn.Parameter(torch.randn(n, channels, *size, generator=g))  # [n, C, H, W]

    @property
    def n(self) -> int:
        return self.raw.shape[0]

    @property
    def channels(self) -> int:
        return self.raw.shape[1]

    @property
    def size(self) -> tuple[int, int]:
        return (self.raw.shape[2], self.raw.shape[3])

    def forward(self) -> torch.Tensor:
        """-> templates [n, C, H, W] in [-eps_max, eps_max]."""
        return self.eps_max * torch.tanh(self.raw)

    def random_indices(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """One template index per image: int64 [batch] in [0, n)."""
        return torch.randint(self.n, (batch,), generator=generator)

    def protect(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H', W'] in [0, 1], index: [B] -> clamp(x + eta_index, 0, 1) [B, 3, H', W']."""
        if index.shape != (x.shape[0],):
            raise InputError(
                f"protect: index has shape {tuple(index.shape)}; pass one index per image "
                f"[{x.shape[0]}]"
            )
        if bool((index < 0).any() or (index >= self.n).any()):
            raise InputError(f"protect: template index outside [0, {self.n}); the set has {self.n}")
        return add_template(x, self()[index])

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write <stem>.safetensors and <stem>.json; returns both paths."""
        path = Path(path)
        weights, meta = path.with_suffix(".safetensors"), path.with_suffix(".json")
        atomic_write_bytes(weights, save({"raw": self.raw.detach().cpu().contiguous()}))
        info = {
            "format": FORMAT,
            "n": self.n,
            "channels": self.channels,
            "size": list(self.size),
            "eps_max": self.eps_max,
        }
        atomic_write_text(meta, json.dumps(info, indent=2) + "\n")
        return weights, meta

    @classmethod
    def load(cls, path: str | Path) -> TemplateSet:
        """Read a set written by `save` (path with or without suffix); ModelError when unfit."""
        path = Path(path)
        weights, meta = path.with_suffix(".safetensors"), path.with_suffix(".json")
        for p in (weights, meta):
            if not p.is_file():
                raise ModelError(
                    f"{p}: missing; a template set is a .safetensors + .json pair written by "
                    "`deepshield protect train`"
                )
        try:
            info = json.loads(meta.read_text())
            raw = load_file(str(weights))["raw"]
        except (json.JSONDecodeError, SafetensorError, OSError, KeyError) as e:
            raise ModelError(
                f"{path}: not a readable template set ({type(e).__name__}); re-create it with "
                "`deepshield protect train`"
            ) from e
        shape = (info.get("n"), info.get("channels"), *info.get("size", []))
        if info.get("format") != FORMAT or tuple(raw.shape) != shape:
            raise ModelError(
                f"{meta}: format {info.get('format')!r}, shape {tuple(raw.shape)} do not match "
                f"{FORMAT} {shape}; use a file pair written by `deepshield protect train`"
            )
        out = cls(info["n"], tuple(info["size"]), info["channels"], info["eps_max"])
        with torch.no_grad():
            out.raw.copy_(raw)
        return out


def tile_to(eta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """eta: [B, C, H, W] -> [B, C, height, width], repeated from the top-left corner."""
    reps_h, reps_w = -(-height // eta.shape[2]), -(-width // eta.shape[3])
    return eta.repeat(1, 1, reps_h, reps_w)[:, :, :height, :width]


def add_template(x: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
    """x: [B, 3, H, W] in [0, 1], eta: [B, 1 or 3, h, w] -> clamp(x + tiled eta, 0, 1)."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise InputError(f"protect: x has shape {tuple(x.shape)}; pass RGB images [B, 3, H, W]")
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise InputError("protect: x is outside [0, 1] or not finite; pass pixels in [0, 1]")
    eta = tile_to(eta, x.shape[2], x.shape[3])  # [B, C, H, W]; C = 1 broadcasts over RGB
    return (x + eta).clamp(0, 1)
