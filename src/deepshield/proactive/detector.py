"""The proactive detector: an encoder that recovers the template and a classifier on it.

net(x, templates) = (s, r): x [B, 3, H, W] in [0, 1] is mapped to [-1, 1] inside; the encoder
returns r [B, C, H, W], its estimate of the template in x, as a fixed high-pass residual (x
minus its 3x3 box mean; of the RGB mean when C = 1, where the template is the same on R, G, B)
plus a learned correction (`depth` 3x3 convs at full resolution, `width` channels, BN + ReLU
between them, as the paper's template-recovery encoder; its last conv starts at zero, so
training starts from the high-pass estimate). The fixed residual is the classic forensic
SRM-style start; without it, the learned encoder alone did not recover a template of amplitude
0.016 within a CPU budget of 600 steps (cos(r, eta) ~ 0.13, where the 3x3 high-pass alone
matches random binary templates at cos ~ 0.38). The
classifier reads r only: three stride-2 3x3 conv-BN-ReLU blocks (16-32-64) and a global mean
give 64 features; with a template set [n, C, h, w] a 65th feature is the best match
sqrt(D) max_k cos(r, eta_k) (eta_k tiled to r's size, D = C H W; the paper scores images by
this similarity, and sqrt(D) cos is ~N(0, 1) for an r unrelated to eta_k, so the feature is a
z-score on the scale of the others), 0 without one; a Linear layer turns the 65 features into s [B], the logit of P(untouched).
Everything is fully convolutional or global, so any image size works. The passive baseline is
the same network trained with L_b alone, on images without templates and with no template set
(its 65th feature stays 0, its r is just a learned residual).

deepshield's label convention is 1 = manipulated: `p_manipulated(x) = sigmoid(-s)`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from deepshield.errors import ModelError
from deepshield.files import atomic_write_text
from deepshield.models import load_weights, save_weights
from deepshield.models.frozen import frozen_eval
from deepshield.proactive.templates import tile_to

FORMAT = "deepshield.proactive.detector/1"


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


def high_pass(x: torch.Tensor, channels: int) -> torch.Tensor:
    """x: [B, 3, H, W] -> x minus its 3x3 box mean (edge-replicated) [B, channels, H, W];
    channels = 1 uses the mean of R, G and B."""
    if channels == 1:
        x = x.mean(dim=1, keepdim=True)  # [B, 1, H, W]
    return x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


class ProactiveDetector(nn.Module):
    """x [B, 3, H, W] in [0, 1] -> (logit of P(untouched) [B], recovered template [B, C, H, W])."""

    def __init__(self, channels: int = 1, width: int = 32, depth: int = 5) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += _conv_bn_relu(width, width)
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        self.encoder = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            *_conv_bn_relu(channels, 16, 2), *_conv_bn_relu(16, 32, 2), *_conv_bn_relu(32, 64, 2)
        )
        self.fc = nn.Linear(64 + 1, 1)
        self.config = {"channels": channels, "width": width, "depth": depth}

    def forward(
        self, x: torch.Tensor, templates: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, 3, H, W] in [0, 1], templates: [n, C, h, w] or None -> (s [B], r [B, C, H, W])."""
        x = x * 2 - 1
        r = high_pass(x, self.config["channels"]) + self.encoder(x)  # [B, C, H, W]
        feats = self.classifier(r).mean(dim=(2, 3))  # [B, 64]
        if templates is None:
            match = feats.new_zeros(len(x), 1)
        else:
            eta = F.normalize(tile_to(templates, *r.shape[2:]).flatten(1), dim=1)  # [n, D]
            cos = F.normalize(r.flatten(1), dim=1) @ eta.T  # [B, n]
            match = cos.amax(dim=1, keepdim=True) * eta.shape[1] ** 0.5  # [B, 1]
        return self.fc(torch.cat([feats, match], dim=1)).squeeze(1), r

    @torch.no_grad()
    def p_manipulated(
        self, x: torch.Tensor, templates: torch.Tensor | None = None, batch_size: int = 64
    ) -> torch.Tensor:
        """x: [N, 3, H, W] in [0, 1] -> P(manipulated) [N] in [0, 1], in eval mode."""
        with frozen_eval(self):
            s = torch.cat(
                [self(x[i : i + batch_size], templates)[0] for i in range(0, len(x), batch_size)]
            )
        return torch.sigmoid(-s)


def save_detector(net: ProactiveDetector, path: str | Path) -> tuple[Path, Path]:
    """Write <stem>.safetensors (weights) and <stem>.json (architecture); returns both paths."""
    path = Path(path)
    weights = save_weights(net, path.with_suffix(".safetensors"))
    meta = atomic_write_text(
        path.with_suffix(".json"), json.dumps({"format": FORMAT, **net.config}, indent=2) + "\n"
    )
    return weights, meta


def load_detector(path: str | Path) -> ProactiveDetector:
    """Rebuild a detector written by `save_detector` (path with or without suffix), in eval."""
    path = Path(path)
    meta = path.with_suffix(".json")
    try:
        info = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(
            f"{meta}: missing or not JSON ({type(e).__name__}); pass a detector written by "
            "`deepshield protect train`"
        ) from e
    if info.pop("format", None) != FORMAT:
        raise ModelError(
            f"{meta}: not a {FORMAT} file; pass one written by `deepshield protect train`"
        )
    net = ProactiveDetector(**info)
    return load_weights(net, path.with_suffix(".safetensors")).eval()
