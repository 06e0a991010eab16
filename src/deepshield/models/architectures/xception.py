"""Xception with timm's `legacy_xception` layout and numerics, and the Xception deepfake detector.

`xception` equals `timm.create_model("legacy_xception")` (the Keras/Cadene Xception, 22,855,952
params at 1000 classes, BN eps 1e-5): same keys, shapes, order and outputs, so timm weight files
load with strict=True. Cadene / FaceForensics++ checkpoints, which store the pointwise convs as
2-d [out, in] matrices and may name the classifier `last_linear`, are mapped explicitly by
`Xception.remap_state_dict` (pointwise weights gain their 1x1 dims, `last_linear.*` -> `fc.*`).

`xception_detector` is xception(num_classes=1000) followed by the head
Linear(1000, 256)-ReLU-Linear(256, 64)-ReLU-Linear(64, num_classes) (23,128,786 params at
2 classes). Its keys are `backbone.*` (the bare Xception) and `head.0/2/4.*`. To start from a
bare legacy_xception file, load it into the backbone, strictly:

    model = create("xception_detector")           # Normalized: the detector is model.net
    load_weights(model.net.backbone, "legacy_xception.safetensors")

@inproceedings{chollet2017xception,
  title     = {Xception: Deep Learning with Depthwise Separable Convolutions},
  author    = {Chollet, Fran{\\c{c}}ois},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {1251--1258},
  year      = {2017}
}
@inproceedings{rossler2019faceforensics,
  title     = {FaceForensics++: Learning to Detect Manipulated Facial Images},
  author    = {R{\\"o}ssler, Andreas and Cozzolino, Davide and Verdoliva, Luisa and Riess,
               Christian and Thies, Justus and Nie{\\ss}ner, Matthias},
  booktitle = {IEEE/CVF International Conference on Computer Vision (ICCV)},
  pages     = {1--11},
  year      = {2019}
}
"""

from __future__ import annotations

import torch
from torch import nn

from deepshield.errors import ModelError
from deepshield.models.registry import HALF, register


class SeparableConv2d(nn.Module):
    """Depthwise 3x3 conv (`conv1`) then pointwise 1x1 conv, nothing in between, no bias."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, in_ch, kernel_size, padding=padding, groups=in_ch, bias=False)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C_in, H, W] -> [B, C_out, H, W]."""
        return self.pointwise(self.conv1(x))


class Block(nn.Module):
    """`reps` x (ReLU, SeparableConv, BN) [+ MaxPool], plus a shortcut on the un-activated input.

    `rep` indices count the ReLU and MaxPool slots (as timm's keys do). The first ReLU is not
    in-place, so the shortcut sees the block input; there is no ReLU after the residual add.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        reps: int,
        stride: int = 1,
        start_with_relu: bool = True,
        grow_first: bool = True,
    ) -> None:
        super().__init__()
        self.skip: nn.Module | None = None
        if out_ch != in_ch or stride != 1:
            self.skip = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)
            self.skipbn = nn.BatchNorm2d(out_ch)
        rep: list[nn.Module] = []
        for i in range(reps):
            if grow_first:
                inc, outc = (in_ch if i == 0 else out_ch), out_ch
            else:
                inc, outc = in_ch, (in_ch if i < reps - 1 else out_ch)
            rep += [nn.ReLU(inplace=i > 0), SeparableConv2d(inc, outc), nn.BatchNorm2d(outc)]
        if not start_with_relu:
            rep = rep[1:]
        if stride != 1:
            rep.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*rep)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        """inp: [B, C_in, H, W] -> [B, C_out, ceil(H/stride), ceil(W/stride)]."""
        x = self.rep(inp)
        skip = inp if self.skip is None else self.skipbn(self.skip(inp))
        x += skip
        return x


class Xception(nn.Module):
    """Xception (entry, 8 middle and exit flow), timm `legacy_xception` layout."""

    cam_layer = "act4"

    def __init__(self, num_classes: int = 1000, in_chans: int = 3) -> None:
        super().__init__()
        self.num_features = 2048
        # Entry flow stem: two valid-padded 3x3 convs.
        self.conv1 = nn.Conv2d(in_chans, 32, 3, stride=2, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(32, 64, 3, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.act2 = nn.ReLU(inplace=True)
        self.block1 = Block(64, 128, 2, 2, start_with_relu=False)
        self.block2 = Block(128, 256, 2, 2)
        self.block3 = Block(256, 728, 2, 2)
        for i in range(4, 12):  # middle flow
            self.add_module(f"block{i}", Block(728, 728, 3, 1))
        self.block12 = Block(728, 1024, 2, 2, grow_first=False)
        # Exit flow.
        self.conv3 = SeparableConv2d(1024, 1536)
        self.bn3 = nn.BatchNorm2d(1536)
        self.act3 = nn.ReLU(inplace=True)
        self.conv4 = SeparableConv2d(1536, self.num_features)
        self.bn4 = nn.BatchNorm2d(self.num_features)
        self.act4 = nn.ReLU(inplace=True)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.num_features, num_classes)
        for m in self.modules():  # timm's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def remap_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cadene/FF++ keys -> ours: 2-d pointwise weights get [.., 1, 1]; last_linear -> fc."""
        out = {}
        for k, v in sd.items():
            if k.endswith("pointwise.weight") and v.dim() == 2:
                v = v[:, :, None, None]  # [out, in] -> [out, in, 1, 1]
            if k.startswith("last_linear."):
                k = "fc." + k[len("last_linear.") :]
            out[k] = v
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] normalised -> pooled features [B, 2048]."""
        x = self.act1(self.bn1(self.conv1(x)))  # [B, 32, (H-3)/2+1, .]  (299 -> 149)
        x = self.act2(self.bn2(self.conv2(x)))  # [B, 64, H1-2, .]  (147)
        x = self.block3(self.block2(self.block1(x)))  # [B, 728, ~H/16, .]  (74, 37, 19)
        for i in range(4, 12):
            x = getattr(self, f"block{i}")(x)  # [B, 728, ~H/16, .]
        x = self.block12(x)  # [B, 1024, ~H/32, .]  (10)
        x = self.act3(self.bn3(self.conv3(x)))  # [B, 1536, ~H/32, .]
        x = self.act4(self.bn4(self.conv4(x)))  # [B, 2048, ~H/32, .]
        return self.global_pool(x).flatten(1)  # [B, 2048]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] normalised -> logits [B, num_classes]."""
        return self.fc(self.forward_features(x))


class XceptionDetector(nn.Module):
    """Xception with its 1000-way fc kept, followed by a 1000-256-64-num_classes MLP head."""

    cam_layer = "backbone.act4"

    def __init__(self, num_classes: int = 2, hidden: tuple[int, int] = (256, 64)) -> None:
        super().__init__()
        self.backbone = Xception(num_classes=1000)
        self.head = nn.Sequential(
            nn.Linear(1000, hidden[0]),
            nn.ReLU(inplace=True),
            nn.Linear(hidden[0], hidden[1]),
            nn.ReLU(inplace=True),
            nn.Linear(hidden[1], num_classes),
        )
        self.num_features = hidden[1]

    @staticmethod
    def remap_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Refuse a bare Xception file with the way to load it (into the backbone)."""
        if "conv1.weight" in sd and "backbone.conv1.weight" not in sd:
            raise ModelError(
                "the file holds a bare Xception state dict, not a detector's; load it into the "
                "backbone: load_weights(model.net.backbone, path) (model.backbone if normalize=False)"
            )
        return sd

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] normalised -> head embedding [B, 64] (input of the last Linear)."""
        return self.head[:-1](self.backbone(x))  # [B, 1000] -> [B, 64]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] normalised -> logits [B, num_classes]."""
        return self.head[-1](self.forward_features(x))


@register("xception", mean=HALF, std=HALF, input_size=(3, 96, 96))
def xception(num_classes: int = 2, **kw) -> Xception:
    """Xception, timm legacy_xception layout; 20,811,050 params at 2 classes."""
    return Xception(num_classes=num_classes, **kw)


@register("xception_detector", mean=HALF, std=HALF, input_size=(3, 96, 96))
def xception_detector(num_classes: int = 2, **kw) -> XceptionDetector:
    """Xception(1000 classes) + MLP head 1000-256-64-num_classes; 23,128,786 params at 2."""
    return XceptionDetector(num_classes=num_classes, **kw)
