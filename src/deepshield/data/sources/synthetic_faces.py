"""Built-in real/fake image set made from scikit-image's bundled photographs and LFW faces.

Real images are random crops (scale, position, flip, mild colour jitter) of the sample photographs
that ship inside scikit-image (no download) and of its 200 LFW faces (upsampled). Fakes start from
crops drawn the same way:

- easy: face-swap-style splices. An ellipse or box from another crop is pasted with a colour
  mismatch and a visible blending seam.
- hard: resynthesis by a small encoder/decoder with transposed-convolution upsampling, trained
  for a fixed number of steps (seeded) to reconstruct real crops. The fake is its output, or
  (localized=True) its output blended into a soft region, so the traces are subtle
  (upsampling pattern, slight blur).

meta["boxes"]: [N,4] int64 (x0, y0, x1, y1), x1/y1 exclusive, bounding every pixel a fake changed;
(-1, -1, -1, -1) for real images. With localized=True each fake's box is a sub-region of at most
about half the image side. Built sets are cached in $DEEPSHIELD_CACHE (see data.cache).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from torch import nn
from torch.nn import functional as F

from deepshield.data.cache import cached_arrays
from deepshield.data.registry import register_source
from deepshield.data.split import DEFAULT_FRACTIONS, stratified_split
from deepshield.data.splits import Splits, TensorSet
from deepshield.data.summary import counts_note
from deepshield.errors import ConfigError, DataError
from deepshield.progress import track

FORMAT_VERSION = 1
VARIANTS = ("easy", "hard")
# Natural photographs bundled in skimage/data (grayscale ones become gray RGB).
PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png",
    "coffee.png", "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png",
    "moon.png", "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg",
)  # fmt: skip
FACE_SHARE = 0.4  # fraction of crops taken from the LFW faces
GENERATOR_STEPS = 200
GENERATOR_CROPS = 256
# Half-extents of fake regions, as fractions of the image side.
SPLICE_EXTENT = (0.15, 0.35)  # easy
RESYNTH_EXTENT = (0.25, 0.45)  # hard
LOCAL_EXTENT = (0.12, 0.22)  # either, localized=True


def skimage_data_folder() -> Path:
    """The `data` folder inside the installed scikit-image package."""
    import skimage

    return Path(skimage.__file__).parent / "data"


class CropPool:
    """Random RGB crops of the bundled photographs and LFW faces, as float32 [S,S,3] in [0,1].

    Each crop: random scale and position, flip, mild blur half of the time, colour jitter.
    """

    def __init__(self, folder: Path | None = None) -> None:
        folder = folder or skimage_data_folder()
        self.photos = [
            (f, Image.open(folder / f).convert("RGB")) for f in PHOTOS if (folder / f).is_file()
        ]
        lfw = folder / "lfw_subset.npy"
        if len(self.photos) < 4 or not lfw.is_file():
            raise DataError(
                f"{folder}: scikit-image's bundled sample images are missing "
                f"(found {len(self.photos)} of {len(PHOTOS)} photographs, lfw_subset.npy "
                f"{'present' if lfw.is_file() else 'absent'}): reinstall scikit-image >= 0.21"
            )
        faces = np.load(lfw, allow_pickle=False)  # [200, 25, 25] float in [0, 1]
        self.faces = [
            Image.fromarray(np.round(f * 255).astype(np.uint8), mode="L").convert("RGB")
            for f in faces
        ]

    def crop(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
        """One jittered crop [size,size,3] in [0,1] and the name of its source image."""
        if rng.random() < FACE_SHARE:
            i = int(rng.integers(len(self.faces)))
            name, im = f"lfw{i:03d}", self.faces[i]
            lo = 0.7  # faces are 25x25: upsampled whatever the size
        else:
            name, im = self.photos[int(rng.integers(len(self.photos)))]
            name = name.rsplit(".", 1)[0]
            lo = min(0.75 * size / min(im.size), 1.0)
        side_max = min(im.size)
        side = round(side_max * np.exp(rng.uniform(np.log(lo), 0.0)))
        x0 = int(rng.integers(im.size[0] - side + 1))
        y0 = int(rng.integers(im.size[1] - side + 1))
        box = (x0, y0, x0 + side, y0 + side)
        out = im.resize((size, size), Image.Resampling.BILINEAR, box=box)
        a = np.asarray(out, dtype=np.float32) / 255.0  # [S, S, 3]
        if rng.random() < 0.5:
            a = a[:, ::-1]
        if rng.random() < 0.5:  # mild camera softness
            s = rng.uniform(0.3, 1.0)
            a = gaussian_filter(a, sigma=(s, s, 0.0), truncate=2.0)
        return _jitter(a, rng), name


def _jitter(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mild colour jitter: brightness, contrast, saturation and per-channel gain; [S,S,3]."""
    gray = a.mean(axis=2, keepdims=True)  # [S, S, 1]
    a = gray + rng.uniform(0.8, 1.2) * (a - gray)  # saturation
    mean = a.mean()
    a = mean + rng.uniform(0.85, 1.15) * (a - mean)  # contrast
    a = a * rng.uniform(0.9, 1.1) * rng.uniform(0.96, 1.04, size=3)  # brightness, channel gain
    return np.clip(a, 0.0, 1.0).astype(np.float32)


def _region_mask(rng: np.random.Generator, size: int, extent: tuple[float, float]) -> np.ndarray:
    """Hard 0/1 mask [S,S] of an ellipse or box with half-extents in `extent` x size."""
    rx, ry = rng.uniform(*extent, size=2) * size
    cx = rng.uniform(rx, size - rx)
    cy = rng.uniform(ry, size - ry)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    if rng.random() < 0.6:
        inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    else:
        inside = (np.abs(xx - cx) <= rx) & (np.abs(yy - cy) <= ry)
    return inside.astype(np.float32)


def _splice(
    base: np.ndarray, donor: np.ndarray, rng: np.random.Generator, localized: bool
) -> np.ndarray:
    """Paste a region of `donor` into `base` with a colour mismatch and a visible seam; [S,S,3]."""
    hard = _region_mask(rng, base.shape[0], LOCAL_EXTENT if localized else SPLICE_EXTENT)
    soft = gaussian_filter(hard, sigma=rng.uniform(0.5, 1.0), truncate=2.0)[..., None]  # [S, S, 1]
    gain = rng.uniform(0.75, 1.3, size=3)
    gain[rng.integers(3)] = rng.choice([0.65, 1.4])  # at least one channel clearly off
    donor = np.clip(donor * gain + rng.uniform(-0.06, 0.06, size=3), 0.0, 1.0)
    seam = 4.0 * soft * (1.0 - soft) * rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.35)
    return np.clip(soft * donor + (1.0 - soft) * base + seam, 0.0, 1.0).astype(np.float32)


class Resynthesizer(nn.Module):
    """Tiny encoder/decoder: two stride-2 convs down, two transposed convs up, a half-res skip.

    x: [B,3,H,W] in [0,1] (H, W divisible by 4) -> [B,3,H,W] in [0,1].
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.down1 = nn.Sequential(nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2))
        self.down2 = nn.Sequential(nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2))
        self.up2 = nn.Sequential(nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.LeakyReLU(0.2))
        self.mix = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.LeakyReLU(0.2))
        self.up1 = nn.ConvTranspose2d(width, 3, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1 = self.down1(x)  # [B, w, H/2, W/2]
        h2 = self.down2(h1)  # [B, 2w, H/4, W/4]
        u2 = self.mix(self.up2(h2) + h1)  # [B, w, H/2, W/2]
        return torch.sigmoid(self.up1(u2))  # [B, 3, H, W]


def train_resynthesizer(
    crops: np.ndarray, seed: int, steps: int = GENERATOR_STEPS
) -> Resynthesizer:
    """Fit a Resynthesizer to reconstruct `crops` (float32 [N,S,S,3] in [0,1]) with L1 loss.

    Runs on one thread under a forked RNG so the weights depend only on `seed` and the crops.
    """
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()  # [N, 3, S, S]
    order = np.random.default_rng(seed).integers(len(x), size=(steps, 16))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = Resynthesizer()
            opt = torch.optim.Adam(net.parameters(), lr=3e-3)
            for idx in order:
                batch = x[torch.from_numpy(idx)]  # [16, 3, S, S]
                loss = (net(batch) - batch).abs().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


@torch.no_grad()
def resynthesize(net: Resynthesizer, images: np.ndarray, pad: int = 8) -> np.ndarray:
    """float32 [N,S,S,3] in [0,1] -> the generator's output, same shape (one thread).

    Images are reflect-padded by `pad` so the generator's border errors are cut away, and each
    output's channel means are matched to its input (the colour correction of swap pipelines).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = []
        for i in range(0, len(images), 128):
            x = torch.from_numpy(images[i : i + 128]).permute(0, 3, 1, 2)  # [B, 3, S, S]
            g = net(F.pad(x, (pad,) * 4, mode="reflect"))[..., pad:-pad, pad:-pad]  # [B, 3, S, S]
            g = g - g.mean(dim=(2, 3), keepdim=True) + x.mean(dim=(2, 3), keepdim=True)
            out.append(g.clamp(0.0, 1.0).permute(0, 2, 3, 1))  # [B, S, S, 3]
    finally:
        torch.set_num_threads(threads)
    return torch.cat(out).numpy()


def _quantize(a: np.ndarray) -> np.ndarray:
    return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)


def _changed_box(fake: np.ndarray, base: np.ndarray) -> list[int]:
    """(x0, y0, x1, y1) bounding the pixels where two uint8 [S,S,3] images differ."""
    ys, xs = np.nonzero((fake != base).any(axis=2))
    if len(xs) == 0:
        return [0, 0, fake.shape[1], fake.shape[0]]
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def build(variant: str, *, n: int, size: int, seed: int, localized: bool) -> dict[str, np.ndarray]:
    """The whole set: x uint8 [N,3,S,S], y int64 [N] (i odd = fake), boxes int64 [N,4], names [N]."""
    pool = CropPool()
    streams = np.random.SeedSequence([seed, VARIANTS.index(variant)]).spawn(n + 1)
    y = np.arange(n, dtype=np.int64) % 2
    x = np.zeros((n, size, size, 3), np.uint8)
    boxes = np.full((n, 4), -1, np.int64)
    names: list[str] = []
    bases: list[tuple[int, np.ndarray, np.random.Generator]] = []  # hard fakes to resynthesise
    for i in track(range(n), f"building synthetic-faces:{variant}"):
        rng = np.random.default_rng(streams[i])
        img, src = pool.crop(rng, size)
        names.append(f"{i:05d}-{'fake' if y[i] else 'real'}-{src}")
        if not y[i]:
            x[i] = _quantize(img)
        elif variant == "easy":
            donor, _ = pool.crop(rng, size)
            x[i] = _quantize(_splice(img, donor, rng, localized))
            boxes[i] = _changed_box(x[i], _quantize(img))
        else:
            bases.append((i, img, rng))
    if bases:
        side = min(size, 64) // 4 * 4
        train_rng = np.random.default_rng(streams[n])
        net = train_resynthesizer(
            np.stack([pool.crop(train_rng, side)[0] for _ in range(GENERATOR_CROPS)]), seed
        )
        outs = resynthesize(net, np.stack([b[1] for b in bases]))
        for (i, img, rng), out in zip(bases, outs, strict=True):
            hard = _region_mask(rng, size, LOCAL_EXTENT if localized else RESYNTH_EXTENT)
            m = gaussian_filter(hard, sigma=2.0 if localized else 3.0, truncate=2.0)[..., None]
            x[i] = _quantize(m * out + (1.0 - m) * img)
            boxes[i] = _changed_box(x[i], _quantize(img))
    return {
        "x": np.ascontiguousarray(x.transpose(0, 3, 1, 2)),  # [N, 3, S, S]
        "y": y,
        "boxes": boxes,
        "names": np.array(names),
    }


@register_source(
    "synthetic-faces",
    description="built-in real/fake crops of scikit-image's photos and LFW faces (no download); "
    "easy = colour-mismatched splices, hard = conv-generator resynthesis",
    builtin=True,
    variants=VARIANTS,
)
def load_synthetic_faces(
    arg: str | None, *, seed: int, n: int = 3000, size: int = 64, localized: bool = False
) -> Splits:
    """n images (half fake) of size x size, split 70/15/15 by seed; x uint8 [N,3,S,S]."""
    variant = arg or "easy"
    if variant not in VARIANTS:
        raise ConfigError(
            f"synthetic-faces:{variant}: unknown variant: use {' or '.join(VARIANTS)}"
        )
    if n < 20 or size < 16 or size % 4:
        raise ConfigError(
            f"synthetic-faces: n={n}, size={size}: need n >= 20 and size >= 16, a multiple of 4"
        )
    params = {
        "format": FORMAT_VERSION,
        "variant": variant,
        "n": n,
        "size": size,
        "seed": seed,
        "localized": localized,
    }
    a = cached_arrays(
        "synthetic-faces",
        params,
        lambda: build(variant, n=n, size=size, seed=seed, localized=localized),
    )
    full = TensorSet(
        torch.from_numpy(a["x"]),
        torch.from_numpy(a["y"]),
        a["names"].tolist(),
        {"boxes": torch.from_numpy(a["boxes"])},
    )
    train, val, test = stratified_split(a["y"], DEFAULT_FRACTIONS, seed=seed)
    splits = Splits(
        name=f"synthetic-faces:{variant}",
        train=full.subset(train),
        val=full.subset(val),
        test=full.subset(test),
    )
    splits.notes = counts_note(splits)
    return splits
