"""mel_cnn: the log-mel CNN speech detector."""

from __future__ import annotations

import torch

from deepshield import models


def test_mel_cnn_interface_and_shapes():
    assert {"mel_cnn", "aasist", "aasist_l"} <= set(models.names("audio"))
    torch.manual_seed(0)
    m = models.create("mel_cnn").eval()
    x = 0.1 * torch.randn(3, 16000)
    assert m(x).shape == (3, 2)
    assert m.forward_features(x).shape == (3, m.num_features)
    assert m(0.1 * torch.randn(2, 64600)).shape == (2, 2)  # any length
    cam = {}
    m.get_submodule(m.cam_layer).register_forward_hook(lambda mod, i, o: cam.setdefault("o", o))
    m(x)
    assert cam["o"].shape == (3, 128, 4, 6)  # [B, C, 64 mels / 16, 101 frames // 16]
    # logits = head(features) in eval mode
    torch.testing.assert_close(m(x), m.head(m.forward_features(x)))


def test_mel_cnn_gradients_reach_the_waveform():
    m = models.create("mel_cnn").eval()
    x = (0.1 * torch.randn(2, 8000)).requires_grad_(True)
    torch.nn.functional.cross_entropy(m(x), torch.tensor([0, 1])).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and (x.grad.abs().sum(1) > 0).all()


def test_mel_cnn_weights_round_trip(tmp_path):
    torch.manual_seed(1)
    a = models.create("mel_cnn").eval()
    models.save_weights(a, tmp_path / "w.safetensors")
    torch.manual_seed(2)
    b = models.load_weights(models.create("mel_cnn"), tmp_path / "w.safetensors").eval()
    x = 0.1 * torch.randn(2, 8000)
    torch.testing.assert_close(a(x), b(x))


def test_mel_cnn_learns_a_spectral_cue():
    """A few steps separate white noise from low-passed noise: the front end carries the cue."""
    g = torch.Generator().manual_seed(0)
    white = 0.1 * torch.randn(8, 2400, generator=g)
    kernel = torch.ones(1, 1, 9) / 9  # moving average: a low-pass "vocoder"
    smooth = torch.nn.functional.conv1d(white.unsqueeze(1), kernel, padding=4).squeeze(1)
    x, y = torch.cat([white, smooth]), torch.tensor([0] * 8 + [1] * 8)
    torch.manual_seed(0)
    m = models.create("mel_cnn")
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    for _ in range(10):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        p = torch.softmax(m(x), 1)[:, 1]
    assert p[8:].min() > p[:8].max()
