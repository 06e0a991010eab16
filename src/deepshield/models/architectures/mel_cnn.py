"""mel_cnn: a log-mel front end (torch ops) and a small VGG-style CNN over the mel map.

Input: float32 waveform [B, T] in [-1, 1] at 16 kHz, any T >= n_fft; output: logits [B, 2]
(index 1 = spoof). Gradients reach the waveform, so waveform attacks and saliency work on it.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from deepshield.models.frontend import LogMel
from deepshield.models.registry import register


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """[B, C_in, M, F] -> [B, C_out, M // 2, F // 2]: two 3x3 conv-BN-ReLU, then 2x2 max-pool."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class MelCNN(nn.Module):
    """Waveform [B, T] -> log-mel [B, 1, n_mels, frames] -> 4 conv blocks -> logits [B, classes]."""

    cam_layer = "blocks.3"  # last conv block, over the (mel x time) map

    def __init__(
        self,
        num_classes: int = 2,
        n_mels: int = 64,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        sample_rate: int = 16000,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.frontend = LogMel(sample_rate=sample_rate, n_mels=n_mels)  # 25 ms / 10 ms frames
        self.input_bn = nn.BatchNorm2d(1)  # learns the spread of the log-mel map
        chans = (1, *widths)
        self.blocks = nn.Sequential(*(_conv_block(a, b) for a, b in pairwise(chans)))
        self.num_features = widths[-1]
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, T] waveform -> pooled embedding [B, num_features]."""
        m = self.frontend(x).unsqueeze(1)  # [B, 1, n_mels, frames]
        m = self.input_bn(m - m.mean(dim=(2, 3), keepdim=True))  # level-invariant
        return self.blocks(m).mean(dim=(2, 3))  # [B, C]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, T] waveform in [-1, 1] -> logits [B, num_classes]."""
        return self.head(self.drop(self.forward_features(x)))


@register("mel_cnn", kind="audio", input_size=(64600,))
def mel_cnn(num_classes: int = 2, **kw) -> MelCNN:
    """Log-mel front end + 4-block CNN (audio; waveform input, 16 kHz)."""
    return MelCNN(num_classes=num_classes, **kw)
