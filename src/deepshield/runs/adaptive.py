"""Adaptive attacks on a run's detector guarded by an adversarial-example detector: the table
written into the run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deepshield.defenses.adaptive import detector_attack_table
from deepshield.errors import ConfigError


def attack_detector_run(
    run_dir: str | Path,
    *,
    eps: Sequence[float] = (0.03, 0.07),
    steps: int = 20,
    n: int | None = 500,
    split: str = "test",
    seed: int = 0,
) -> dict[str, Any]:
    """`detector_attack_table` of an adversarial-example detector run (`deepshield defend
    detector`) and its protected model, on n samples (class-stratified by seed) of `split` of the
    protected run's dataset; writes adaptive_detector.json and a report section into the run."""
    from deepshield.attacks.checks import check_count, check_number
    from deepshield.defenses.adversarial_detector import DetectorConfig
    from deepshield.report.html import table
    from deepshield.run import RunDir
    from deepshield.runs.attack_sweep import check_options, load_attack_data, run_config

    check_options(split, n, 1)
    check_count("steps", steps)
    eps = [check_number("eps", e, strict=True) for e in eps]
    run = RunDir.open(run_dir)
    cfg = run.read_config(DetectorConfig)
    if not run.exists("best.safetensors"):
        raise ConfigError(f"{run.path}: no trained detector (best.safetensors); finish its "
                          "training with `deepshield defend detector --config ...` first")  # fmt: skip
    protected_run = RunDir.open(cfg.protect)
    batch = load_attack_data(run_config(protected_run), split=split, n=n, seed=seed)
    protected, detector = protected_run.load_model("best"), run.load_model("best")
    rows = detector_attack_table(protected, detector, batch.x, batch.y, eps, steps=steps, seed=seed)
    command = (
        f"deepshield defend attack-detector {run.path} --eps {','.join(f'{e:g}' for e in eps)} "
        f"--steps {steps} --split {split} --seed {seed}" + (f" --n {n}" if n else "")
    )
    result = {
        "protected": str(protected_run.path),
        "dataset": batch.dataset,
        "split": split,
        "trained_on": {"attack": cfg.attack, "eps": cfg.eps},
        "steps": steps,
        "seed": seed,
        "rows": rows,
        "command": command,
    }
    run.write_json("adaptive_detector.json", result)
    html = (
        f"<p>{batch.subset} of the {split} split of {batch.dataset}. Non-adaptive attacks target the "
        "protected classifier alone; the detector-aware PGD targets classifier and detector "
        "together (Carlini &amp; Wagner's margin on the joint model: a wrong class, not "
        f"'adversarial'). PGD: {steps} steps; examples rounded to 8 bits. 'detected': share the "
        "detector flags; 'fooled, undetected': the classifier is wrong and the detector passes "
        "the image, the attacker's goal; 'success': that share among the images the classifier "
        "gets right and the detector passes when clean; 'attack broke': of those images, how many "
        "the classifier gets wrong under attack (NO: the row's attack fooled none).</p>"
        + table(rows)
        + f"<p>Reproduce: <code>{command}</code></p>"
    )
    run.add_section("adaptive_detector", "Adaptive (detector-aware) attack", html, order=16)
    return result
