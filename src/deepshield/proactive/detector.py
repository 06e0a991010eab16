"""The proactive detector: an encoder that recovers the template and a classifier on it.

net(x) = (s, r): x [B, 3, H, W] in [0, 1] is mapped to [-1, 1] inside; the encoder (`depth`
3x3 convs at full resolution, `width` channels, BN + ReLU between them, as the paper's
template-recovery encoder) returns r [B, C, H, W], its estimate of the template in x; the
classifier (three stride-2 3x3 conv-BN-ReLU blocks 16-32-64, global mean, Linear) reads r only
and returns s [B], the logit of P(untouched). Both parts are fully convolutional, so any image
size works. The passive baseline is the same network trained with L_b alone on images that
carry no template; its r is then just a learned residual.

deepshield's label convention is 1 = manipulated: `p_manipulated(x) = sigmoid(-s)`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from deepshield.errors import ModelError
from deepshield.files import atomic_write_text
from deepshield.models import load_weights, save_weights

FORMAT = "deepshield.proactive.detector/1"


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class ProactiveDetector(nn.Module):
    """x [B, 3, H, W] in [0, 1] -> (logit of P(untouched) [B], recovered template [B, C, H, W])."""

    def __init__(self, channels: int = 1, width: int = 32, depth: int = 5) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += _conv_bn_relu(width, width)
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.encoder = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            *_conv_bn_relu(channels, 16, 2), *_conv_bn_relu(16, 32, 2), *_conv_bn_relu(32, 64, 2)
        )
        self.fc = nn.Linear(64, 1)
        self.config = {"channels": channels, "width": width, "depth": depth}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, 3, H, W] in [0, 1] -> (s [B], r [B, C, H, W])."""
        r = self.encoder(x * 2 - 1)  # [B, C, H, W]
        feats = self.classifier(r).mean(dim=(2, 3))  # [B, 64]
        return self.fc(feats).squeeze(1), r

    @torch.no_grad()
    def p_manipulated(self, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """x: [N, 3, H, W] in [0, 1] -> P(manipulated) [N] in [0, 1], in eval mode."""
        was_training = self.training
        self.eval()
        try:
            s = torch.cat([self(x[i : i + batch_size])[0] for i in range(0, len(x), batch_size)])
        finally:
            self.train(was_training)
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
        raise ModelError(f"{meta}: not a {FORMAT} file; pass one written by `deepshield protect train`")
    net = ProactiveDetector(**info)
    return load_weights(net, path.with_suffix(".safetensors")).eval()
