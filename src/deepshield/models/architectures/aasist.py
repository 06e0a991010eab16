"""AASIST and AASIST-L: raw-waveform anti-spoofing with spectro-temporal graph attention.

Jung, Heo, Tak, Shim, Chung, Lee, Yu, Evans, "AASIST: Audio Anti-Spoofing using Integrated
Spectro-Temporal Graph Attention Networks", ICASSP 2022.

@inproceedings{jung2022aasist,
  title={AASIST: Audio Anti-Spoofing using Integrated Spectro-Temporal Graph Attention Networks},
  author={Jung, Jee-weon and Heo, Hee-Soo and Tak, Hemlata and Shim, Hye-jin and Chung, Joon Son
          and Lee, Bong-Jin and Yu, Ha-Jin and Evans, Nicholas},
  booktitle={ICASSP}, year={2022}}

Pipeline: fixed mel-spaced sinc band-pass filters on the waveform -> |.|, 3x3 max-pool -> six
residual blocks over the (sub-band x time) map -> spectral nodes (max over time, + positional
embedding) and temporal nodes (max over sub-bands), each through a graph attention layer and a
graph pool -> two parallel branches of heterogeneous stacking graph attention (HS-GAL) over the
union of both node types with a learnable master node, pooled in between -> element-wise max of
the branches -> readout [max|mean of temporal nodes, max|mean of spectral nodes, master] -> 2 logits.

Input: float32 waveform [B, T] at 16 kHz in [-1, 1] (trained on T = 64,600). Output: logits [B, 2]
with deepshield's order, index 1 = spoof.

Official checkpoints (clovaai/aasist `models/weights/AASIST*.pth`) load strictly through
`deepshield.models.load_weights`: `remap_state_dict` renames their keys (`encoder.i.0.*` ->
`encoder.i.*`, the rest by the table `_OFFICIAL_PREFIXES`) and swaps the two rows of the output layer, because the official model puts bona fide at index 1.
In the official residual block the first convolution reads the block input, so that block's
`bn1` never takes part in the forward pass: its affine weights stay at their initial 1 and 0 in
both checkpoints. This implementation omits that unused BatchNorm; the remap drops its tensors
(and refuses a file where they were trained). Parameter counts are therefore the official files'
297,866 (AASIST) and 85,306 (AASIST-L) less 512 and 272 unused ones: 297,354 and 85,034.
The reference code's training-time frequency masking of the sinc filters is not included.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepshield.errors import ModelError
from deepshield.models.registry import register

_OFFICIAL_PREFIXES = (  # official key prefix -> deepshield key prefix
    ("pos_S", "pos_spectral"),
    ("master1", "branches.0.master"),
    ("master2", "branches.1.master"),
    ("GAT_layer_S.", "gat_spectral."),
    ("GAT_layer_T.", "gat_temporal."),
    ("pool_S.", "pool_spectral."),
    ("pool_T.", "pool_temporal."),
    ("HtrgGAT_layer_ST11.", "branches.0.hsgal1."),
    ("HtrgGAT_layer_ST12.", "branches.0.hsgal2."),
    ("HtrgGAT_layer_ST21.", "branches.1.hsgal1."),
    ("HtrgGAT_layer_ST22.", "branches.1.hsgal2."),
    ("pool_hS1.", "branches.0.pool_spectral."),
    ("pool_hT1.", "branches.0.pool_temporal."),
    ("pool_hS2.", "branches.1.pool_spectral."),
    ("pool_hT2.", "branches.1.pool_temporal."),
    ("out_layer.", "head."),
)


class SincFilterbank(nn.Module):
    """Fixed sinc band-pass filters with mel-spaced edges (0 to Nyquist), Hamming-windowed.

    x: [B, 1, T] -> [B, out_channels, T - kernel_size + 1]. An even kernel size is made odd.
    """

    def __init__(self, out_channels: int, kernel_size: int, sample_rate: int = 16000) -> None:
        super().__init__()
        kernel_size += 1 - kernel_size % 2
        mel_max = 2595.0 * np.log10(1.0 + (sample_rate / 2) / 700.0)
        edges = 700.0 * (10 ** (np.linspace(0.0, mel_max, out_channels + 1) / 2595.0) - 1.0)
        n = np.arange(kernel_size) - (kernel_size - 1) / 2  # symmetric support
        lowpass = 2 * edges[:, None] / sample_rate * np.sinc(2 * edges[:, None] * n / sample_rate)
        bandpass = (lowpass[1:] - lowpass[:-1]) * np.hamming(kernel_size)  # [C, K]
        filters = torch.tensor(bandpass, dtype=torch.float32).unsqueeze(1)  # [C, 1, K]
        self.register_buffer("filters", filters, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.filters.to(x.dtype))


class ResidualBlock(nn.Module):
    """conv(2x3) -> BN -> SELU -> conv(2x3) (+ 1x3 conv shortcut when widths differ) -> max-pool(1x3).

    x: [B, C_in, F, T] -> [B, C_out, F, T // 3]. As in the trained reference model, the first
    convolution reads the block input directly (no pre-activation).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, (2, 3), padding=(1, 1))
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, (2, 3), padding=(0, 1))
        self.conv_downsample = (
            nn.Conv2d(in_channels, out_channels, (1, 3), padding=(0, 1))
            if in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.selu(self.bn2(self.conv1(x)))  # [B, C_out, F + 1, T]
        out = self.conv2(out)  # [B, C_out, F, T]
        shortcut = x if self.conv_downsample is None else self.conv_downsample(x)
        return F.max_pool2d(out + shortcut, (1, 3))  # [B, C_out, F, T // 3]


def _attention_vector(dim: int) -> nn.Parameter:
    w = torch.empty(dim, 1)
    nn.init.xavier_normal_(w)
    return nn.Parameter(w)


def _node_batch_norm(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm over every node of every graph: x [B, N, D] -> [B, N, D]."""
    return bn(x.reshape(-1, x.shape[-1])).view_as(x)


class GraphAttention(nn.Module):
    """Graph attention over a fully connected graph of nodes: x [B, N, D_in] -> [B, N, D_out].

    Edge weight a_ij = softmax_j(w . tanh(W (x_i * x_j)) / temperature); output
    SELU(BN(W1 sum_j a_ij x_j + W2 x_i)).
    """

    def __init__(self, in_dim: int, out_dim: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_weight = _attention_vector(out_dim)
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_drop = nn.Dropout(0.2)
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_drop(x)
        pairs = x.unsqueeze(2) * x.unsqueeze(1)  # [B, N, N, D_in]
        logits = torch.tanh(self.att_proj(pairs)) @ self.att_weight  # [B, N, N, 1]
        att = torch.softmax(logits.squeeze(-1) / self.temperature, dim=-1)  # [B, N, N]
        out = self.proj_with_att(att @ x) + self.proj_without_att(x)  # [B, N, D_out]
        return F.selu(_node_batch_norm(self.bn, out))


class HeterogeneousGraphAttention(nn.Module):
    """HS-GAL: attention over two node types joined in one graph, plus a master node.

    x1: [B, N1, D_in], x2: [B, N2, D_in], master: [B, 1, D_in] ->
    ([B, N1, D_out], [B, N2, D_out], [B, 1, D_out]). Edges within type 1, within type 2 and across
    types each have their own attention vector; the master node attends to all nodes.
    """

    def __init__(self, in_dim: int, out_dim: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.proj_type1 = nn.Linear(in_dim, in_dim)
        self.proj_type2 = nn.Linear(in_dim, in_dim)
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_projM = nn.Linear(in_dim, out_dim)
        self.att_weight11 = _attention_vector(out_dim)
        self.att_weight22 = _attention_vector(out_dim)
        self.att_weight12 = _attention_vector(out_dim)
        self.att_weightM = _attention_vector(out_dim)
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.proj_with_attM = nn.Linear(in_dim, out_dim)
        self.proj_without_attM = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_drop = nn.Dropout(0.2)
        self.temperature = temperature

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor, master: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n1 = x1.shape[1]
        x = torch.cat([self.proj_type1(x1), self.proj_type2(x2)], dim=1)  # [B, N, D_in]
        x = self.input_drop(x)

        # node-to-node attention, one attention vector per (type, type) block
        pairs = torch.tanh(self.att_proj(x.unsqueeze(2) * x.unsqueeze(1)))  # [B, N, N, D_out]
        vectors = torch.cat([self.att_weight11, self.att_weight22, self.att_weight12], dim=1)
        scores = pairs @ vectors  # [B, N, N, 3]
        is1 = torch.arange(x.shape[1], device=x.device) < n1  # [N]
        block = torch.full((x.shape[1], x.shape[1]), 2, dtype=torch.long, device=x.device)
        block[is1[:, None] & is1[None, :]] = 0
        block[~is1[:, None] & ~is1[None, :]] = 1
        logits = scores.gather(-1, block.expand(x.shape[0], -1, -1).unsqueeze(-1)).squeeze(-1)
        att = torch.softmax(logits / self.temperature, dim=-1)  # [B, N, N]

        # master node: attends to every node
        m_logits = torch.tanh(self.att_projM(x * master)) @ self.att_weightM  # [B, N, 1]
        m_att = torch.softmax(m_logits / self.temperature, dim=1)  # [B, N, 1]
        master = self.proj_with_attM(m_att.transpose(1, 2) @ x) + self.proj_without_attM(master)

        out = self.proj_with_att(att @ x) + self.proj_without_att(x)  # [B, N, D_out]
        out = F.selu(_node_batch_norm(self.bn, out))
        return out[:, :n1], out[:, n1:], master


class GraphPool(nn.Module):
    """Keeps the top `ratio` of nodes by a learned sigmoid score, scaled by that score.

    h: [B, N, D] -> [B, max(int(N * ratio), 1), D].
    """

    def __init__(self, ratio: float, dim: int, dropout: float = 0.3) -> None:
        super().__init__()
        self.ratio = ratio
        self.proj = nn.Linear(dim, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        scores = torch.sigmoid(self.proj(self.drop(h)))  # [B, N, 1]
        keep = max(int(h.shape[1] * self.ratio), 1)
        idx = scores.topk(keep, dim=1).indices  # [B, keep, 1]
        return (h * scores).gather(1, idx.expand(-1, -1, h.shape[-1]))  # [B, keep, D]


class Branch(nn.Module):
    """One inference branch: HS-GAL -> graph pools -> HS-GAL (residual), with its master node.

    temporal [B, Nt, D0], spectral [B, Ns, D0] -> ([B, Nt', D1], [B, Ns', D1], master [B, 1, D1]).
    """

    def __init__(self, in_dim: int, dim: int, pool_ratio: float, temperature: float) -> None:
        super().__init__()
        self.master = nn.Parameter(torch.randn(1, 1, in_dim))
        self.hsgal1 = HeterogeneousGraphAttention(in_dim, dim, temperature)
        self.pool_spectral = GraphPool(pool_ratio, dim)
        self.pool_temporal = GraphPool(pool_ratio, dim)
        self.hsgal2 = HeterogeneousGraphAttention(dim, dim, temperature)

    def forward(
        self, temporal: torch.Tensor, spectral: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        master = self.master.expand(temporal.shape[0], -1, -1)  # [B, 1, D0]
        t, s, master = self.hsgal1(temporal, spectral, master)
        t, s = self.pool_temporal(t), self.pool_spectral(s)
        t_aug, s_aug, m_aug = self.hsgal2(t, s, master)
        return t + t_aug, s + s_aug, master + m_aug


class AASIST(nn.Module):
    """AASIST: waveform [B, T] in [-1, 1] at 16 kHz -> logits [B, num_classes] (index 1 = spoof)."""

    cam_layer = "encoder.5"  # last residual block: a (sub-band x time) map

    def __init__(
        self,
        num_classes: int = 2,
        first_conv: int = 128,
        filts: tuple = (70, (1, 32), (32, 32), (32, 64), (64, 64)),
        gat_dims: tuple[int, int] = (64, 32),
        pool_ratios: tuple[float, float, float, float] = (0.5, 0.7, 0.5, 0.5),
        temperatures: tuple[float, float, float, float] = (2.0, 2.0, 100.0, 100.0),
        spectral_nodes: int = 23,
    ) -> None:
        super().__init__()
        widths = [filts[1], filts[2], filts[3], filts[4], filts[4], filts[4]]
        channels = widths[-1][1]
        self.sinc = SincFilterbank(filts[0], first_conv)
        self.first_bn = nn.BatchNorm2d(1)
        self.encoder = nn.Sequential(*(ResidualBlock(a, b) for a, b in widths))
        self.pos_spectral = nn.Parameter(torch.randn(1, spectral_nodes, channels))
        self.gat_spectral = GraphAttention(channels, gat_dims[0], temperatures[0])
        self.gat_temporal = GraphAttention(channels, gat_dims[0], temperatures[1])
        self.pool_spectral = GraphPool(pool_ratios[0], gat_dims[0])
        self.pool_temporal = GraphPool(pool_ratios[1], gat_dims[0])
        self.branches = nn.ModuleList(
            Branch(gat_dims[0], gat_dims[1], pool_ratios[2], temperatures[2]) for _ in range(2)
        )
        self.drop_way = nn.Dropout(0.2)
        self.drop = nn.Dropout(0.5)
        self.num_features = 5 * gat_dims[1]
        self.head = nn.Linear(self.num_features, num_classes)
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, T] waveform -> readout embedding [B, 5 * gat_dims[1]]."""
        x = self.sinc(x.unsqueeze(1))  # [B, 70, T - 128]
        x = F.max_pool2d(x.abs().unsqueeze(1), 3)  # [B, 1, 23, (T - 128) // 3]
        x = F.selu(self.first_bn(x))
        e = self.encoder(x)  # [B, C, 23, T'] (T' = 29 for T = 64,600)
        e = e.abs()

        spectral = e.amax(dim=3).transpose(1, 2) + self.pos_spectral  # [B, 23, C]
        spectral = self.pool_spectral(self.gat_spectral(spectral))  # [B, 11, D0]
        temporal = e.amax(dim=2).transpose(1, 2)  # [B, T', C]
        temporal = self.pool_temporal(self.gat_temporal(temporal))  # [B, 0.7 T', D0]

        outs = [[self.drop_way(o) for o in branch(temporal, spectral)] for branch in self.branches]
        t, s, master = (torch.maximum(a, b) for a, b in zip(*outs, strict=True))
        return torch.cat(
            [t.abs().amax(1), t.mean(1), s.abs().amax(1), s.mean(1), master.squeeze(1)], dim=1
        )  # [B, 5 * D1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, T] waveform in [-1, 1] -> logits [B, num_classes]."""
        return self.head(self.drop(self.forward_features(x)))

    def remap_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Official clovaai/aasist keys -> this module's; output rows swapped (bona fide was 1).

        A state dict already in deepshield's layout is returned unchanged.
        """
        if "GAT_layer_S.att_weight" not in sd:
            return sd
        if self.num_classes != 2:
            raise ModelError("official AASIST weights have 2 classes: create the model with 2")
        out: dict[str, torch.Tensor] = {}
        for key, value in sd.items():
            if ".bn1." in key and key.startswith("encoder."):
                trained = key.endswith("weight") and not torch.all(value == 1)
                trained |= key.endswith("bias") and bool(torch.any(value != 0))
                if trained:
                    raise ModelError(
                        f"{key} holds trained values, but AASIST's first conv bypasses bn1; "
                        "this file is not an official AASIST checkpoint"
                    )
                continue
            parts = key.split(".")
            new = ".".join(parts[:2] + parts[3:]) if parts[0] == "encoder" else key  # drop ".0"
            for old, repl in _OFFICIAL_PREFIXES:
                if new.startswith(old):
                    new = repl + new[len(old) :]
                    break
            out[new] = value
        # official rows [spoof, bona fide] -> deepshield's [bona fide, spoof]
        out["head.weight"] = out["head.weight"].flip(0)
        out["head.bias"] = out["head.bias"].flip(0)
        return out


@register("aasist", kind="audio", input_size=(64600,))
def aasist(num_classes: int = 2, **kw) -> AASIST:
    """AASIST (Jung et al., ICASSP 2022), 297K parameters; raw 16 kHz waveform input."""
    return AASIST(num_classes=num_classes, **kw)


@register("aasist_l", kind="audio", input_size=(64600,))
def aasist_l(num_classes: int = 2, **kw) -> AASIST:
    """AASIST-L, the 85K-parameter light AASIST; raw 16 kHz waveform input."""
    return AASIST(
        num_classes=num_classes,
        filts=(70, (1, 32), (32, 32), (32, 24), (24, 24)),
        gat_dims=(24, 32),
        pool_ratios=(0.4, 0.5, 0.7, 0.5),
        **kw,
    )
