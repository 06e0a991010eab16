"""`deepshield demo`: the main job on built-in synthetic data, in a few minutes on a laptop CPU.

Each capability adds one short step; every step writes its section into runs/demo/report.html.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deepshield.config import TrainConfig
from deepshield.run import RunDir


@dataclass
class DemoContext:
    """What the steps share: the run folder, the trained detector's config, timings."""

    out: Path
    seed: int = 0
    run: RunDir | None = None
    cfg: TrainConfig | None = None
    timings: dict[str, float] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


def train_detector(ctx: DemoContext) -> None:
    """Train simplenet on synthetic-faces:easy and evaluate it (the foundation)."""
    from deepshield.train.training_run import run_training

    ctx.cfg = TrainConfig(
        name="demo",
        dataset="synthetic-faces:easy",
        data_kwargs={"n": 2000, "size": 64},
        model="simplenet",
        lr=2e-3,
        batch_size=32,
        epochs=4,
        optimizer="Adam",
        seed=ctx.seed,
    )
    ctx.run = run_training(ctx.cfg, ctx.out, force=True)
    m = ctx.run.read_json("metrics.json")["test"]
    ctx.lines.append(
        f"detector simplenet on synthetic-faces:easy: test accuracy {m['accuracy']:.3f}, "
        f"AUC {m['auc']:.3f}, EER {m['eer']:.3f}"
    )


def disrupt_generator(ctx: DemoContext) -> None:
    """Train a tiny StarGAN on the real images, disrupt 6 test images with I-FGSM (eps 0.05)."""
    from deepshield.disrupt import disrupt_images, load_generator, train_generator
    from deepshield.disrupt.config import GeneratorConfig
    from deepshield.disrupt.evaluate import write_disruption
    from deepshield.disrupt.generators import real_images
    from deepshield.disrupt.views import one_hot_classes

    data = {"dataset": "synthetic-faces:easy", "data_kwargs": {"n": 2000, "size": 64}}
    cfg = GeneratorConfig(
        model="stargan", model_kwargs={"conv_dim": 16, "n_res": 2}, steps=60, seed=ctx.seed, **data
    )
    g_run = train_generator(cfg, ctx.out / "generator", force=True)
    generator = load_generator(g_run.path)
    x01 = real_images(cfg.dataset, cfg.data_kwargs, ctx.seed, "test")[:6]
    summary, tensors = disrupt_images(generator, x01, one_hot_classes(generator.c_dim))
    report = ctx.run or RunDir.create(ctx.out)
    write_disruption(report, generator, summary, tensors, metrics_file="disruption.json")
    d = summary["distortion"]
    ctx.lines.append(
        f"disruption of a tiny StarGAN ({cfg.steps} steps): I-FGSM eps 0.05 disrupts "
        f"{100 * d['disrupted']:.0f}% of {d['n']} (image, edit) pairs, L2 {d['l2']:.3f}"
    )


STEPS: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("train and evaluate a detector", train_detector),
    ("disrupt an image-translation generator", disrupt_generator),
]


def run_demo(
    out: str | Path = "runs/demo", seed: int = 0, log: Callable[[str], None] = print
) -> DemoContext:
    """Run every demo step in order; return the context (run folder, timings, summary lines)."""
    ctx = DemoContext(out=Path(out), seed=seed)
    for title, step in STEPS:
        log(f"[demo] {title} ...")
        t0 = time.perf_counter()
        step(ctx)
        ctx.timings[title] = round(time.perf_counter() - t0, 1)
        log(f"[demo]   {ctx.lines[-1] if ctx.lines else 'done'} ({ctx.timings[title]} s)")
    return ctx
