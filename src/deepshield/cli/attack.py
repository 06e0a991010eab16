"""`deepshield attack`: an attack sweep (accuracy, AUC, EER, fakes passed as real vs eps) on a run."""

from __future__ import annotations

from pathlib import Path

import typer

from deepshield.cli.app import app, parse_floats, parse_kv
from deepshield.cli.checks import (
    COUNT,
    NONNEGATIVE,
    amp_option,
    channels_last_option,
    check_linf,
    choice,
    mask,
    split_choice,
)


@app.command("attack")
def attack_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder written by `deepshield train`."),
    attack: str = typer.Option(
        "pgd",
        "--attack",
        "-a",
        help="fgsm, ifgsm, pgd, cw_l2, apgd, apgd-dlr, apgd-t, square, autoattack, autoattack-fast.",
    ),
    eps: str = typer.Option(
        "0,2/255,4/255,8/255",
        "--eps",
        help="Budgets, comma-separated; fractions allowed (L-inf: in [0, 1]).",
        callback=NONNEGATIVE,
    ),
    steps: int = typer.Option(
        None,
        "--steps",
        help="Iterations (Square: queries) [the attack's: pgd 10, apgd/cw_l2 100, square 5000].",
        **COUNT,
    ),
    norm: str = typer.Option(
        "linf", "--norm", help="linf or l2 (PGD).", callback=choice("linf", "l2")
    ),
    restarts: int = typer.Option(
        1,
        "--restarts",
        help="Restarts (pgd, apgd): one start from x and N-1 random starts.",
        **COUNT,
    ),
    mask: str = typer.Option(
        "full", "--mask", help="full, center:SIZE or patch:SIZE.", callback=mask
    ),
    dataset: str = typer.Option(None, "-d", "--dataset", help="Attack another dataset's split."),
    data_arg: list[str] = typer.Option(None, "--data-arg", help="Dataset option KEY=VALUE."),
    split: str = typer.Option("test", "--split", help="train, val or test.", callback=split_choice),
    n: int = typer.Option(
        None, "--n", help="Attack N samples of the split, class-stratified by --seed.", **COUNT
    ),
    batch_size: int = typer.Option(128, "--batch-size", "-b", help="Attack batch size.", **COUNT),
    seed: int = typer.Option(
        0, "--seed", help="Seed of random starts, patch positions and the --n draw."
    ),
    surrogate: Path = typer.Option(
        None, "--surrogate", help="Transfer attack: craft on this run's model instead."
    ),
    out: str = typer.Option(None, "--out", help="Result name: attack_<NAME>.json [from flags]."),
    force: bool = typer.Option(
        False, "--force", help="Replace an attack_<NAME>.json of other settings (else refused)."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda[:N] or auto [cpu]."),
    amp: str = amp_option("the forwards and gradients"),
    channels_last: bool = channels_last_option(),
    purify: str = typer.Option(
        None, "--purify", help="Evaluate the model behind a purifier: dip (Deep Image Prior)."
    ),
    adaptive: str = typer.Option(
        None,
        "--adaptive",
        help="With --purify: none (craft on the bare model), bpda or eot [bpda].",
    ),
    eot_samples: int = typer.Option(
        None,
        "--eot-samples",
        help="With --adaptive eot: passes averaged per gradient [8].",
        **COUNT,
    ),
    dip_iters: int = typer.Option(
        None, "--dip-iters", help="With --purify dip: iterations [500].", **COUNT
    ),
    eot_transforms: str = typer.Option(
        None,
        "--eot-transforms",
        help="Craft through differentiable processing, e.g. jpeg75,resize0.75,blur1 (images).",
    ),
    eval_after: str = typer.Option(
        None, "--eval-after", help="Score every image after this real processing, e.g. jpeg75."
    ),
) -> None:
    """Attack a trained model at several budgets; writes attack_<name>.json, plots, report section.

    Detectors also get the evasion view (only fakes attacked). --purify dip evaluates the model
    behind Deep Image Prior purification, attacked --adaptive none|bpda|eot (docs/robustness.md).
    --eot-transforms crafts examples that survive processing, --eval-after scores them after
    the real encoder (docs/robustness-eot.md).
    Sharded over N processes with
    `torchrun --nproc_per_node=N -m deepshield attack ...` (same numbers as one process)."""
    from deepshield.attacks.sweep import AttackSpec
    from deepshield.defenses.adaptive import purifier_threat
    from deepshield.precision import autocast
    from deepshield.runs.attack_sweep import attack_run, check_options
    from deepshield.train import distributed

    threat, passes = purifier_threat(purify, adaptive, eot_samples, dip_iters)
    spec = AttackSpec(
        attack=attack,
        eps=tuple(parse_floats(eps, "--eps")),
        steps=steps,
        norm=norm,
        restarts=restarts,
        mask=mask,
        seed=seed,
        eot_samples=passes,
        eot_transforms=tuple(eot_transforms.split(",")) if eot_transforms is not None else (),
        eval_after=eval_after,
    ).checked()
    check_linf(list(spec.eps), "--eps", spec.norm)
    check_options(split, n, batch_size)
    kwargs = parse_kv(data_arg, "--data-arg") if data_arg else None
    with distributed.session(device) as dev, autocast(amp, dev):
        record = attack_run(
            run_dir,
            spec,
            dataset=dataset,
            data_kwargs=kwargs,
            split=split,
            n=n,
            batch_size=batch_size,
            surrogate=surrogate,
            name=out,
            device=dev,
            threat=threat,
            channels_last=channels_last,
            replace=force,
        )
        if distributed.is_main():  # inside the session: rank() is still known
            _print_rows(record)


def _print_rows(record: dict) -> None:
    from deepshield.runs.attack_sweep import attack_outcome, clean_warning

    typer.echo(f"attacked {record['subset']}")
    warning = clean_warning(record)
    if warning:
        typer.echo(warning)
    for row in record["rows"]:
        shown = [f"eps {row['eps']:.4g}", f"accuracy {row['accuracy']:.4f}"]
        if record["detector"]:
            shown.append(f"balanced accuracy {row['balanced_accuracy']:.4f}")
        if record["detector"] and row["fake_passed_as_real"] is not None:
            shown.append(f"fakes passed as real {row['fake_passed_as_real']:.4f}")
        if record["detector"] and row["real_flagged_as_fake"] is not None:
            shown.append(f"reals flagged as fake {row['real_flagged_as_fake']:.4f}")
        if record["detector"] and row["auc"] is not None:
            shown.append(f"AUC {row['auc']:.4f}")
        if record["detector"] and row["evasion"]["auc"] is not None:
            shown.append(f"evasion AUC {row['evasion']['auc']:.4f}")
        shown.append(f"attack broke {attack_outcome(row)}")
        if row.get("l2_median_success") is not None:
            shown.append(
                f"L2 of successes median {row['l2_median_success']:.4f} "
                f"mean {row['l2_mean_success']:.4f}"
            )
        if row.get("queries_median_success") is not None:
            shown.append(
                f"queries per success median {row['queries_median_success']:.0f} "
                f"mean {row['queries_mean_success']:.1f}"
            )
        typer.echo(", ".join(shown))
    video = record.get("video_level")
    for row, v in zip(record["rows"], (video or {}).get("rows", []), strict=False):
        if v is not None:
            typer.echo(
                f"  videos at eps {row['eps']:.4g}: {v['n']} videos, AUC {v['auc']:.4f}, fakes "
                f"passed {v['fake_passed_as_real']:.4f}, reals flagged "
                f"{v['real_flagged_as_fake']:.4f} at {video['threshold']:.4g}"
            )
    typer.echo(f"wrote {Path(record['run']) / ('attack_' + record['name'] + '.json')}")
