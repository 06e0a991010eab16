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

DEFAULT_OUT = Path("runs/demo")


@dataclass
class DemoContext:
    """What the steps share: the run folder, the trained detector's config, timings."""

    out: Path
    seed: int = 0
    force: bool = False  # only for the demo's own folder, never one the user named
    run: RunDir | None = None
    cfg: TrainConfig | None = None
    timings: dict[str, float] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


def train_detector(ctx: DemoContext) -> None:
    """Train simplenet on synthetic-faces:easy and evaluate it (the foundation)."""
    from deepshield.runs.training import run_training

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
    ctx.run = run_training(ctx.cfg, ctx.out, force=ctx.force)
    m = ctx.run.read_json("metrics.json")["test"]
    ctx.lines.append(
        f"detector simplenet on synthetic-faces:easy: test accuracy {m['accuracy']:.3f}, "
        f"AUC {m['auc']:.3f}, EER {m['eer']:.3f}"
    )


def explain_detector(ctx: DemoContext) -> None:
    """Grad-CAM grids of the detector, its per-class mean maps and the sanity check."""
    from deepshield.explain.sanity import sanity_text
    from deepshield.runs.explain import explain_run

    s = explain_run(ctx.run, "grad_cam", n=4, max_samples=200, sanity_samples=12, seed=ctx.seed)
    san, loc = s["sanity"], s["localization"]
    text = sanity_text(san["spearman_mean"], san["bound"], san["undefined_pairs"])
    line = f"Grad-CAM: rank correlation with a weight-randomised model {text}"
    if loc and loc.get("samples"):
        line += (
            f"; detected fakes put {loc['energy_in_box_mean']:.2f} of the map in the splice box "
            f"({loc['box_area_share_mean']:.2f} of the image)"
        )
    ctx.lines.append(line)


def attack_detector(ctx: DemoContext) -> None:
    """PGD sweep on 100 test images of the detector: fakes passed as real vs eps, and a grid."""
    from deepshield.attacks.sweep import AttackSpec
    from deepshield.runs.attack_sweep import attack_run

    assert ctx.run is not None
    spec = AttackSpec("pgd", (0.0, 2 / 255, 4 / 255, 8 / 255), steps=5, seed=ctx.seed)
    record = attack_run(ctx.run.path, spec, n=100, batch_size=100, name="demo_pgd")
    shown = ", ".join(
        f"{r['fake_passed_as_real']:.2f} at {r['eps'] * 255:g}/255" for r in record["rows"]
    )
    ctx.lines.append(f"PGD-5 on 100 test images: fakes passed as real {shown}")


def purify_adversarial_fakes(ctx: DemoContext) -> None:
    """DIP-purify a few FGSM-perturbed fakes (and clean fakes, reals) of the demo detector."""
    from dataclasses import replace

    from deepshield.defenses.dip import FAST
    from deepshield.runs.purify import purify_run

    assert ctx.run is not None
    r = purify_run(
        ctx.run.path, cfg=replace(FAST, iters=250), eps=0.03, n=3, chunk=9, seed=ctx.seed
    )
    row = next(x for x in r["rows"] if x["threshold"] == 0.5 and x["defence"] == "purified")
    c = r["counts"]

    def caught(share: float | None, n: int) -> str:
        return f"{round((share or 0) * n)}/{n}"

    ctx.lines.append(
        f"DIP purification (Gandhi & Jain): FGSM-perturbed fakes fooling the detector caught "
        f"again {caught(row['recall_perturbed'], c['perturbed'])}, clean fakes "
        f"{caught(row['recall_unperturbed'], c['unperturbed'])}, reals kept "
        f"{caught(row['real_retained'], c['reals'])}"
    )


def speech_detector(ctx: DemoContext) -> None:
    """Train mel_cnn on a tiny synthetic-speech set; EER, min t-DCF and DET into the report."""
    from deepshield.metrics import read_scores
    from deepshield.report.html import figure, table
    from deepshield.report.plots import plot_det
    from deepshield.runs.training import run_training

    cfg = TrainConfig(
        name="demo-speech",
        dataset="synthetic-speech",
        data_kwargs={"n": 240, "length": 8000},  # 0.5 s clips
        model="mel_cnn",
        lr=1e-3,
        batch_size=8,
        epochs=4,
        seed=ctx.seed,
    )
    report = ctx.run or RunDir.create(ctx.out)
    report.claim("speech/")  # a run of its own inside the demo's folder
    speech = run_training(cfg, ctx.out / "speech", force=ctx.force)
    m = speech.read_json("metrics.json")["test"]
    rows = read_scores(speech.file("scores_test.txt"))  # the run's ASVspoof score file
    report.save_plot(plot_det(rows.labels, rows.scores), "speech_det")
    summary = [
        {"metric": "EER", "value": m["eer"]},
        {"metric": "min t-DCF (2021 form)", "value": m["min_tdcf"]},
        {"metric": "min t-DCF (2019 legacy form)", "value": m["min_tdcf_2019"]},
        {"metric": "EER, vocoders seen in training", "value": m["eer_seen"]},
        {"metric": "EER, unseen vocoder (sinusoidal)", "value": m["eer_unseen"]},
    ]
    per = [{"system": k, **v} for k, v in m["per_system"].items()]
    html = (
        f"<p>mel_cnn trained on synthetic-speech (n=240, 0.5 s clips, {cfg.epochs} epochs); "
        f"test split of {m['n']} clips. t-DCF ASV assumption: {m['tdcf_asv']}. "
        f"Full run: <code>{speech.path}</code>.</p>"
        + table(summary)
        + table(per)
        + "<div class='figs'>"
        + figure("plots/speech_det.png")
        + "</div>"
    )
    report.add_section("speech", "Speech deepfake detector", html, order=30)
    ctx.lines.append(
        f"speech detector mel_cnn on synthetic-speech: EER {m['eer']:.3f}, "
        f"min t-DCF {m['min_tdcf']:.3f} (unseen vocoder EER {m['eer_unseen']:.3f})"
    )


def disrupt_generator(ctx: DemoContext) -> None:
    """Train a tiny StarGAN on the real images, disrupt 6 test images with I-FGSM (eps 0.05)."""
    from deepshield.disrupt.config import GeneratorConfig
    from deepshield.disrupt.generators import real_images
    from deepshield.disrupt.views import one_hot_classes
    from deepshield.runs.disrupt_evaluate import disrupt_images, write_disruption
    from deepshield.runs.generators import load_generator, train_generator

    data = {"dataset": "synthetic-faces:easy", "data_kwargs": {"n": 2000, "size": 64}}
    cfg = GeneratorConfig(
        model="stargan", model_kwargs={"conv_dim": 16, "n_res": 2}, steps=60, seed=ctx.seed, **data
    )
    report = ctx.run or RunDir.create(ctx.out)
    report.claim("generator/")  # a run of its own inside the demo's folder
    g_run = train_generator(cfg, ctx.out / "generator", force=ctx.force)
    generator = load_generator(g_run.path)
    x01 = real_images(cfg.dataset, cfg.data_kwargs, ctx.seed, "test")[:6]
    summary, tensors = disrupt_images(generator, x01, one_hot_classes(generator.c_dim))
    write_disruption(report, generator, summary, tensors, metrics_file="disruption.json")
    d = summary["distortion"]
    ctx.lines.append(
        f"disruption of a tiny StarGAN ({cfg.steps} steps): I-FGSM eps 0.05 disrupts "
        f"{100 * d['disrupted']:.0f}% of {d['n']} (image, edit) pairs, L2 {d['l2']:.3f}"
    )


STEPS: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("train and evaluate a detector", train_detector),
    ("explain it with Grad-CAM", explain_detector),
    ("attack it (PGD sweep)", attack_detector),
    ("defend it: purify adversarial fakes", purify_adversarial_fakes),
    ("train and evaluate a speech detector", speech_detector),
    ("disrupt an image-translation generator", disrupt_generator),
]


def run_demo(
    out: str | Path | None = None, seed: int = 0, log: Callable[[str], None] = print
) -> DemoContext:
    """Run every demo step in order; return the context (run folder, timings, summary lines).

    Its own folder (runs/demo, when `out` is None) is replaced when the seed changes; a folder the
    user named is never forced: the same seed resumes there, another one is refused."""
    ctx = DemoContext(out=Path(out or DEFAULT_OUT), seed=seed, force=out is None)
    for title, step in STEPS:
        log(f"[demo] {title} ...")
        t0 = time.perf_counter()
        step(ctx)
        ctx.timings[title] = round(time.perf_counter() - t0, 1)
        log(f"[demo]   {ctx.lines[-1] if ctx.lines else 'done'} ({ctx.timings[title]} s)")
    return ctx
