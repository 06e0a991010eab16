"""Generator runs: train an image-translation generator (optionally adversarially) into a run
folder, report it and load it back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from deepshield.data.edits import EDITS, apply_edit, attributes, sample_attributes
from deepshield.disrupt.attack import to_pixels
from deepshield.disrupt.config import GeneratorConfig
from deepshield.disrupt.generators import disruption_perturb, real_images, training_kwargs
from deepshield.disrupt.views import is_conditional
from deepshield.errors import RunError
from deepshield.models import create, load_weights
from deepshield.report.grids import image_grid
from deepshield.report.html import table
from deepshield.run import RunDir, check_run, start_run
from deepshield.runtime import resolve_device
from deepshield.train.gan import GANTrainer


def build_generator(cfg: GeneratorConfig) -> nn.Module:
    """The untrained (or `init`-loaded) generator of cfg, seeded by cfg.seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        generator = create(cfg.model, **training_kwargs(cfg.model, cfg.model_kwargs))
    if cfg.init is not None:
        load_weights(generator, RunDir.open(cfg.init).file("best.safetensors"))
    return generator


def train_generator(
    cfg: GeneratorConfig,
    out: str | Path,
    *,
    force: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> RunDir:
    """Train cfg's generator on the dataset's real train images; write the run folder `out`."""
    run, complete, replace = check_run(out, "disrupt train-generator", cfg, force=force)
    if complete:
        log(f"{run.path}: finished run with this config, reused")
        return run
    device = resolve_device(cfg.device)
    images = real_images(cfg.dataset, cfg.data_kwargs, cfg.seed, "train")
    generator = build_generator(cfg).to(device)
    start_run(run, "disrupt train-generator", cfg, replace=replace)  # inputs are good
    adv = cfg.adversarial
    trainer = GANTrainer(
        generator,
        images,
        fixed_edit=tuple(cfg.fixed_edit),
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        lambda_l1=cfg.lambda_l1,
        lambda_adv=cfg.lambda_adv,
        perturb=None if adv.mode == "none" else disruption_perturb(adv),
        adv_mode="generator" if adv.mode == "none" else adv.mode,
        seed=cfg.seed,
    )
    checkpoint = run.output("trainer.safetensors")
    if checkpoint.is_file():
        trainer.load(checkpoint)
        log(f"{run.path}: resumed at step {trainer.step}")
    while trainer.step < cfg.steps:
        trainer.fit(min(cfg.checkpoint_every, cfg.steps - trainer.step))
        trainer.save(checkpoint)
        log(
            f"{cfg.model}: step {trainer.step}/{cfg.steps}, loss_l1 {trainer.history[-1]['loss_l1']:.4f}"
        )
    test = real_images(cfg.dataset, cfg.data_kwargs, cfg.seed, "test")
    metrics = {
        "steps": trainer.step,
        "train": trainer.evaluate(),
        "test": trainer.evaluate(test),
        "parameters": sum(p.numel() for p in generator.parameters()),
    }
    run.save_model(generator)
    run.write_json("history.json", trainer.history)
    run.write_json("metrics.json", metrics)
    _report(run, cfg, generator.eval(), test, metrics)
    run.set_done("disrupt train-generator")
    return run


def _report(
    run: RunDir, cfg: GeneratorConfig, generator: nn.Module, test: torch.Tensor, metrics: dict
) -> None:
    """Sample grid (input, edit target, output) and the L1 table into report.html."""
    x = test[:6]
    if is_conditional(generator):
        c = sample_attributes(len(x), torch.Generator().manual_seed(cfg.seed), multi_hot=False)
    else:
        c = attributes(*cfg.fixed_edit, batch=len(x))
    device = next(generator.parameters()).device
    with torch.no_grad():
        x_g = (x * 2 - 1).to(device)
        y = generator(x_g, c.to(device)) if is_conditional(generator) else generator(x_g)
    names = [", ".join(e for e, on in zip(EDITS, row.tolist(), strict=True) if on) for row in c]
    fig = image_grid(
        [x, apply_edit(x, c), to_pixels(y.cpu())], ["input", "edit (target)", "generator"], names
    )
    run.save_plot(fig, "generator_samples")
    rows = [
        {"split": s, "L1 generator": metrics[s]["l1"], "L1 identity": metrics[s]["l1_identity"]}
        for s in ("train", "test")
    ]
    html = (
        f"<p>{cfg.model} {cfg.model_kwargs or ''} ({metrics['parameters']:,} parameters), "
        f"{metrics['steps']} steps on the real images of {cfg.dataset}; adversarial training: "
        f"{cfg.adversarial.mode}. Mean L1 to the edit target in [0, 1] pixels (identity: "
        "returning the input unchanged).</p>"
        + table(rows)
        + '<p><img src="plots/generator_samples.png"></p>'
    )
    run.add_section("generator", "Generator", html, order=10)


def load_generator(
    path: str | Path, model: str | None = None, model_kwargs: dict | None = None
) -> nn.Module:
    """A generator in eval mode from a run folder, or from a weights file (.safetensors, .pth,
    .ckpt) with `model` (+ model_kwargs) naming its architecture, or beside a model.json."""
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path}: no such generator run folder or weights file; check the path")
    if path.is_dir():
        generator = RunDir.open(path).load_model("best")
    elif model is not None:
        generator = load_weights(create(model, **(model_kwargs or {})), path).eval()
    elif (path.parent / "model.json").is_file():
        spec_ = RunDir(path.parent).read_json("model.json")
        generator = create(spec_["name"], num_classes=spec_["num_classes"], **spec_["kwargs"])
        generator = load_weights(generator, path).eval()
    else:
        raise RunError(
            f"{path}: not a generator run folder and no --model given: pass a folder written "
            "by `deepshield train-generator` or the weights with --model NAME"
        )
    if getattr(generator, "bounds", None) is None:
        raise RunError(
            f"{path}: {type(generator).__name__} is not an image-translation generator (no "
            "bounds): pass a generator (stargan, ganimation, pix2pix, cyclegan)"
        )
    return generator
