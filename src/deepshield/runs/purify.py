"""DIP purification of a detector run: its images, the purification table, purify_dip.json and
its report section."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from deepshield.defenses.dip import DipConfig
from deepshield.defenses.purifier import (
    PAPER_THRESHOLD,
    DipPurifier,
    psnr_line,
    psnr_summary,
    purification_table,
    timing,
)


@dataclass
class PurificationInputs:
    """A detector run's images for the purification table (all [n,C,H,W] in [0,1])."""

    detector: nn.Module
    fakes: Tensor
    fakes_adv: Tensor  # white-box `attack` on the detector, label "fake"
    reals: Tensor
    dataset: str


def purification_inputs(
    run_dir: str | Path,
    *,
    attack: str = "fgsm",
    eps: float = 0.02,
    n: int = 32,
    split: str = "test",
    seed: int = 0,
) -> PurificationInputs:
    """n fakes (and their adversarial versions against the run's detector) and n reals drawn
    (by seed) from the `split` of a real/fake image detector run."""
    from deepshield import data
    from deepshield.config import TrainConfig
    from deepshield.defenses.robustness import craft
    from deepshield.errors import ConfigError
    from deepshield.run import RunDir

    if split not in ("train", "val", "test"):
        raise ConfigError(f"--split {split!r}: use train, val or test")
    if n < 1:
        raise ConfigError(f"--n {n}: give a positive number of images per class")
    run = RunDir.open(run_dir)
    tcfg = run.read_config(TrainConfig)
    splits = data.load(tcfg.dataset, seed=tcfg.seed, **tcfg.data_kwargs)
    if splits.num_classes != 2 or splits.modality != "image":
        raise ConfigError(
            f"{run.path}: DIP purification needs a real/fake image detector, not "
            f"{splits.num_classes}-class {splits.modality} data"
        )
    x, y = splits.split(split).tensors()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    fakes, reals = x[y == 1][:n], x[y == 0][:n]
    detector = run.load_model("best")
    fakes_adv = craft(detector, fakes, torch.ones(len(fakes), dtype=torch.long), attack, eps)
    return PurificationInputs(detector, fakes, fakes_adv, reals, splits.name)


def purify_run(
    run_dir: str | Path,
    *,
    cfg: DipConfig = DipConfig(),
    mode: str = "grouped",
    chunk: int = 16,
    attack: str = "fgsm",
    eps: float = 0.02,
    n: int = 32,
    thresholds: Sequence[float] = (PAPER_THRESHOLD, 0.5),
    split: str = "test",
    seed: int = 0,
) -> dict[str, Any]:
    """DIP defence of a trained detector run (`purification_inputs`, `purification_table`);
    writes purify_dip.json, a plot and a report section into the run; returns the result."""
    from deepshield.report.grids import image_grid
    from deepshield.report.html import figure, table
    from deepshield.run import RunDir

    purifier = DipPurifier(cfg, mode=mode, chunk=chunk, seed=seed)
    inputs = purification_inputs(run_dir, attack=attack, eps=eps, n=n, split=split, seed=seed)
    result = purification_table(
        inputs.detector, purifier, inputs.fakes, inputs.fakes_adv, inputs.reals, thresholds
    )
    images = result.pop("images")
    result.update(
        {
            "method": "dip",
            "dip": asdict(cfg),
            "mode": mode,
            "attack": {"name": attack, "eps": eps, "white_box": True},
            "dataset": inputs.dataset,
            "split": split,
            "psnr": psnr_summary(result["psnr"], cfg.stop_psnr),
            **timing(purifier.last, len(images["input"])),
        }
    )
    run = RunDir.open(run_dir)
    run.write_json("purify_dip.json", result)
    shown = min(8, len(images["input"]))
    if shown:
        fig = image_grid(
            [images["input"][:shown], images["purified"][:shown]], ["input", "DIP purified"]
        )
        run.save_plot(fig, "purify_dip")
    counts = result["counts"]
    speed = (
        f" {result['seconds_per_image']:.1f} s ({result['cpu_seconds_per_image']:.1f} CPU-s) per "
        f"image, {result['threads']} threads."
        if shown
        else ""
    )
    stop = "no early stop" if cfg.stop_psnr is None else f"stop at PSNR {cfg.stop_psnr} dB"
    html = (
        f"<p>Deep Image Prior purification ({mode}, at most {cfg.iters} iterations, {stop}) "
        f"of {split} images of {inputs.dataset}: {counts['perturbed']} "
        f"perturbed fakes ({attack}, eps={eps:g}, white-box on this detector, fooling it), "
        f"{counts['unperturbed']} unperturbed fakes and {counts['reals']} reals the detector gets "
        f"right.{speed} 'none': the detector on the unpurified images; 'blur alone': on each "
        f"image Gaussian-blurred to the PSNR its purification reached. {psnr_line(result)}</p>"
        + table(result["rows"], digits=3)
        + (figure("plots/purify_dip.png") if shown else "")
    )
    run.add_section("purify_dip", "Defence: Deep Image Prior purification", html, order=40)
    return result
