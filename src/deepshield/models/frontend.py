"""Audio front ends as torch ops (STFT, mel, log), so gradients reach the waveform.

`Spectrogram` and `LogMel` match librosa (`librosa.stft` / `librosa.feature.melspectrogram`)
for the same n_fft, hop_length, win_length, periodic Hann window, center/pad_mode, power, and mel
filterbank arguments (htk, norm, fmin, fmax): the filterbank is `librosa.filters.mel`, held as a
non-persistent buffer (rebuilt from the constructor arguments, never stored in weight files).
"""

from __future__ import annotations

import librosa
import torch
from torch import nn


class Spectrogram(nn.Module):
    """x: [B, T] waveform -> |STFT|**power [B, n_fft // 2 + 1, frames] (librosa framing)."""

    def __init__(
        self,
        n_fft: int = 512,
        hop_length: int = 160,
        win_length: int | None = None,
        center: bool = True,
        pad_mode: str = "constant",
        power: float = 2.0,
    ) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.win_length = win_length or n_fft
        self.center = center
        self.pad_mode = pad_mode
        self.power = power
        # float64, cast to the input's dtype in forward (exact for float64 input)
        window = torch.hann_window(self.win_length, periodic=True, dtype=torch.float64)
        self.register_buffer("window", window, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            x,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window.to(x.dtype),
            center=self.center,
            pad_mode=self.pad_mode,
            return_complex=True,
        )  # [B, F, frames] complex
        mag = spec.abs()
        return mag if self.power == 1.0 else mag.pow(self.power)


class LogMel(nn.Module):
    """x: [B, T] waveform in [-1, 1] -> log(mel power + eps) [B, n_mels, frames].

    `mel(x)` gives the mel power itself, equal to librosa.feature.melspectrogram with the same
    arguments (librosa defaults: htk=False, norm="slaney", pad_mode="constant").
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 512,
        hop_length: int = 160,
        win_length: int | None = 400,
        n_mels: int = 64,
        fmin: float = 0.0,
        fmax: float | None = None,
        htk: bool = False,
        norm: str | float | None = "slaney",
        center: bool = True,
        pad_mode: str = "constant",
        power: float = 2.0,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.spectrogram = Spectrogram(n_fft, hop_length, win_length, center, pad_mode, power)
        self.eps = eps
        fb = librosa.filters.mel(
            sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm
        )  # [n_mels, F] float32
        self.register_buffer("filterbank", torch.from_numpy(fb), persistent=False)

    @property
    def n_mels(self) -> int:
        return self.filterbank.shape[0]

    def mel(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, T] -> mel power [B, n_mels, frames]."""
        spec = self.spectrogram(x)  # [B, F, frames]
        return torch.matmul(self.filterbank.to(spec.dtype), spec)  # [B, n_mels, frames]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.mel(x) + self.eps)
