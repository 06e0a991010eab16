"""Deep Image Prior reconstruction (Ulyanov et al.) with early stopping, one image or many at once.

Each image x_i gets its own network f_i (`dip_net.DipSkip`), noise z_i ~ U(0, 0.1) and generator
(seeded seed + i); f_i(z_i + reg_noise * N(0, 1)) is fitted to x_i with Adam on the mean squared
error. A DIP fits image structure long before it fits noise, so stopping early removes most of an
adversarial perturbation. Stopping rule, per image: the first iteration at which
PSNR(output, x_i) >= stop_psnr, else after `iters` iterations. The output kept is the network
output of that iteration (or its exponential average, `smoothing` > 0, as in the reference code).

Batch modes (same stopping rule):
- "per-image": one network at a time (the reference setting; slow).
- "grouped": `chunk` images at once as one grouped model (groups = images); image i follows
  exactly the trajectory it follows alone (same parameters, noise and updates), so results do not
  depend on the other images of the batch.
- "shared": one network for the whole chunk, images told apart by their noise; its weights and
  batch norm statistics are shared, so images do interact.

On the device: each image's generator lives on the images' device (a CUDA generator for CUDA
images), so its network, input noise and per-iteration noise are drawn there, per image, and the
same seed gives the same image whatever the chunk. The stopping rule is applied on the device
(masked updates); the host reads the stop flags every `check_every` iterations only, to end the
loop once every image has stopped. On the CPU the streams are those of CPU generators seeded as
before, so CPU results are unchanged; a CUDA generator draws a different stream (Philox), so a GPU
reconstruction differs from the CPU one for the same seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from deepshield.defenses.dip_net import DipSkip, init_dip
from deepshield.errors import ConfigError, InputError

MODES = ("grouped", "per-image", "shared")
NOISE_SCALE = 0.1  # z ~ U(0, 0.1), the reference implementation's input noise
ACCELERATOR_CHECK_EVERY = 25  # iterations between reads of the stop flags off a CPU


@dataclass(frozen=True)
class DipConfig:
    """How each image is reconstructed (defaults: the fast configuration for 64x64 images)."""

    channels: tuple[int, ...] = (8, 16, 32, 64)
    skip: tuple[int, ...] = (0, 0, 4, 4)
    depth: int = 32
    lr: float = 0.01
    iters: int = 500
    stop_psnr: float | None = 27.0  # dB against the input; None: always run `iters`
    reg_noise: float = 1.0 / 30.0
    smoothing: float = 0.0  # weight of the running average of outputs (0.99 in the reference)

    def __post_init__(self) -> None:
        if self.iters < 1 or self.lr <= 0 or not 0 <= self.smoothing < 1 or self.reg_noise < 0:
            raise ConfigError(
                f"DIP config iters={self.iters}, lr={self.lr}, smoothing={self.smoothing}, "
                f"reg_noise={self.reg_noise}: need iters >= 1, lr > 0, 0 <= smoothing < 1, "
                "reg_noise >= 0"
            )
        if len(self.channels) != len(self.skip) or not self.channels:
            raise ConfigError(
                f"DIP config channels={self.channels}, skip={self.skip}: give one skip width "
                "per scale"
            )


FAST = DipConfig()  # the defaults: grouped batches with early stopping

# Gandhi & Jain's setting (their dip_template.py, after Ulyanov's JPEG-artefact notebook): five
# scales of 8..128 channels, skips of 4 on the two deepest, a running average of 0.99 and a fixed
# number of iterations. Their 10,000 iterations were for 512x512 inputs; here 1,500 for 64x64
# (docs/defenses.md, DIP section, has the measured recall of both presets).
PAPER = DipConfig(
    channels=(8, 16, 32, 64, 128),
    skip=(0, 0, 0, 4, 4),
    iters=1500,
    stop_psnr=None,
    smoothing=0.99,
)

# FAST's network run for a fixed 750 iterations, no early stop: a 27 dB stop leaves images
# blurrier than the slow PAPER run, and this detector scores blur as real; at 750 iterations the
# purified fakes' P(fake) is close to the slow run's, at about a fifth of its CPU cost
# (docs/defenses.md, DIP section, "Speed goal").
BALANCED = DipConfig(iters=750, stop_psnr=None)

PRESETS = {"fast": FAST, "balanced": BALANCED, "paper": PAPER}


@dataclass
class Reconstruction:
    """images: [B,C,H,W] in [0,1]; iters: [B] iterations run per image; psnr: [B] dB vs input."""

    images: Tensor
    iters: Tensor
    psnr: Tensor
    seconds: float = 0.0
    cpu_seconds: float = 0.0


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB of images in [0,1]: a, b [B,...] -> [B]."""
    mse = (a - b).square().flatten(1).mean(1).clamp_min(1e-12)  # [B]
    return -10.0 * torch.log10(mse)


def check_mode(mode: str, chunk: int) -> None:
    """ConfigError unless mode is one of MODES and chunk a positive integer."""
    if mode not in MODES:
        raise ConfigError(f"unknown DIP mode {mode!r}: use one of {', '.join(MODES)}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"DIP chunk={chunk!r}: give a positive number of images per model")


def _check(x: Tensor, cfg: DipConfig) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or len(x) == 0 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"DIP input {shape} must be float images [B,C,H,W]: pass a batch")
    side = 2 ** len(cfg.channels)
    if x.shape[-1] % side or x.shape[-2] % side:
        raise InputError(
            f"DIP input is {x.shape[-2]}x{x.shape[-1]} but a {len(cfg.channels)}-scale network "
            f"needs sides divisible by {side}: resize (e.g. to 64x64) or use fewer scales"
        )
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise InputError("DIP input must be finite and in [0, 1]: pass un-normalised images")


def check_interval(device: torch.device, check_every: int | None) -> int:
    """Iterations between host reads of the stop flags: 1 on the CPU (no round trip), else 25."""
    if check_every is None:
        return 1 if device.type == "cpu" else ACCELERATOR_CHECK_EVERY
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ConfigError(f"DIP check_every={check_every!r}: give a positive number of iterations")
    return check_every


Observer = Callable[[int, Tensor], None]  # (iteration, raw network output [G,C,H,W]) per step


def _fit(
    x: Tensor,
    gens: list[torch.Generator],
    cfg: DipConfig,
    shared: bool,
    check_every: int,
    observe: Observer | None = None,
) -> Reconstruction:
    """Reconstruct x [G,C,H,W] with one grouped model (or one shared network); gens: one per image,
    on x's device. Everything stays on the device; the stop flags are read every `check_every`.
    observe, if given, sees every iteration's raw output (detached) and changes nothing."""
    g, c, h, w = x.shape
    net = DipSkip(cfg.depth, cfg.channels, cfg.skip, out_ch=c, groups=1 if shared else g)
    init_dip(net.to(x.device), gens[:1] if shared else gens)
    net = net.to(x.dtype)
    z = torch.cat([torch.rand(cfg.depth, h, w, generator=gen, device=x.device) for gen in gens])
    z = z * NOISE_SCALE
    z = (z.view(g, cfg.depth, h, w) if shared else z.view(1, g * cfg.depth, h, w)).to(x)
    draws = torch.empty(g, cfg.depth, h, w, device=x.device)  # float32: the generators' stream
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    result, avg = x.clone(), None
    iters = torch.full((g,), cfg.iters, dtype=torch.long, device=x.device)
    done = torch.zeros(g, dtype=torch.bool, device=x.device)
    for step in range(1, cfg.iters + 1):
        for draw, gen in zip(draws, gens, strict=True):
            torch.randn(draw.shape, generator=gen, out=draw)  # [depth, H, W], image i's stream
        noise = (draws * cfg.reg_noise).view_as(z).to(x)
        out = net(z + noise).view(g, c, h, w)  # [G, C, H, W]
        mse = (out - x).square().flatten(1).mean(1)  # [G]
        optimizer.zero_grad(set_to_none=True)
        mse.sum().backward()  # each network gets the gradient of its own image's error
        optimizer.step()
        with torch.no_grad():
            out = out.detach()
            if observe is not None:
                observe(step, out)
            avg = (
                out
                if avg is None or not cfg.smoothing
                else avg * cfg.smoothing + out * (1 - cfg.smoothing)
            )
            if step == cfg.iters:
                stop = ~done
            elif cfg.stop_psnr is not None:
                stop = ~done & (psnr(avg, x) >= cfg.stop_psnr)  # [G], decided on the device
            else:
                continue
            result = torch.where(stop.view(g, 1, 1, 1), avg, result)
            iters = torch.where(stop, step, iters)
            done = done | stop
        if step % check_every == 0 and bool(done.all()):  # the only host read in the loop
            break
    return Reconstruction(images=result, iters=iters.cpu(), psnr=psnr(result, x).cpu())


def dip_reconstruct(
    x: Tensor,
    cfg: DipConfig = DipConfig(),
    *,
    mode: str = "grouped",
    chunk: int = 16,
    seed: int = 0,
    check_every: int | None = None,
    observe: Observer | None = None,
) -> Reconstruction:
    """x: [B,C,H,W] in [0,1] -> Reconstruction (images [B,C,H,W] in [0,1], iterations, PSNR).

    Image i is seeded with seed + i. mode: "grouped" (chunk images per grouped model),
    "per-image" or "shared" (chunk images per shared network); see the module docstring.
    check_every: iterations between host reads of the stop flags (default 1 on the CPU, 25 on
    an accelerator); images that stop in between keep their result, so it changes only speed.
    observe(iteration, output): called with each iteration's raw network output of the chunk
    being fitted ([chunk,C,H,W], detached; benchmarks/dip_sweep.py derives many stopping rules
    and averages from one run with it); it must not modify the tensor.
    """
    check_mode(mode, chunk)
    _check(x, cfg)
    every = check_interval(x.device, check_every)
    x = x.detach()
    size = 1 if mode == "per-image" else chunk
    t0, c0 = time.perf_counter(), time.process_time()
    parts = []
    for start in range(0, len(x), size):
        xb = x[start : start + size]
        gens = [torch.Generator(x.device).manual_seed(seed + start + i) for i in range(len(xb))]
        with torch.enable_grad():
            parts.append(_fit(xb, gens, cfg, mode == "shared", every, observe))
    return Reconstruction(
        images=torch.cat([p.images for p in parts]),
        iters=torch.cat([p.iters for p in parts]),
        psnr=torch.cat([p.psnr for p in parts]),
        seconds=time.perf_counter() - t0,
        cpu_seconds=time.process_time() - c0,
    )
