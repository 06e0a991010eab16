"""`deepshield explain`: saliency / SmoothGrad / Grad-CAM grids and checks for a trained run."""

from __future__ import annotations

from pathlib import Path

import typer

from deepshield.cli.app import app, parse_kv
from deepshield.cli.checks import COUNT, split_choice
from deepshield.explain.sanity import sanity_text


@app.command("explain")
def explain_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder written by `deepshield train`."),
    method: str = typer.Option(
        "gradcam", "--method", "-M", help="saliency, gradcam or smoothgrad."
    ),
    dataset: str = typer.Option(None, "-d", "--dataset", help="Explain on another dataset."),
    data_arg: list[str] = typer.Option(
        None, "--data-arg", help="Dataset option KEY=VALUE, e.g. localized=true (repeatable)."
    ),
    split: str = typer.Option("test", "--split", help="train, val or test.", callback=split_choice),
    n: int = typer.Option(16, "--n", help="Image / map pairs per outcome grid.", **COUNT),
    layer: str = typer.Option(
        None, "--layer", help="Grad-CAM layer (default: the model's cam_layer)."
    ),
    max_samples: int = typer.Option(
        None,
        "--max-samples",
        help="Samples for the per-class mean maps (default: the whole split).",
        **COUNT,
    ),
    sanity_samples: int = typer.Option(
        16, "--sanity-samples", help="Samples of the sanity check.", **COUNT
    ),
    sanity_repeats: int = typer.Option(
        3, "--sanity-repeats", help="Random re-initialisations.", **COUNT
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample choice and re-initialisations."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
) -> None:
    """Explain a trained detector: grids of real/fake, correct/wrong samples with their maps,
    mean map per class, the weight-randomisation sanity check and (synthetic-faces) the
    localisation check; writes explain_<method>.json, plots/explain_*.png and report.html."""
    from deepshield.runs.explain import explain_run
    from deepshield.runtime import resolve_device

    s = explain_run(
        run_dir,
        method,
        dataset=dataset,
        data_kwargs=parse_kv(data_arg, "--data-arg") if data_arg else None,
        split=split,
        n=n,
        layer=layer,
        max_samples=max_samples,
        sanity_samples=sanity_samples,
        sanity_repeats=sanity_repeats,
        seed=seed,
        device=resolve_device(device),
    )
    san = s["sanity"]
    typer.echo(
        f"{s['dataset']} [{split}] {s['method']}: {s['samples']} samples, "
        "sanity Spearman " + sanity_text(san["spearman_mean"], san["bound"], san["undefined_pairs"])
    )
    loc = s["localization"]
    if loc and loc.get("samples"):
        typer.echo(
            f"localisation on {loc['samples']} detected fakes: energy in box "
            f"{loc['energy_in_box_mean']:.3f} vs box area {loc['box_area_share_mean']:.3f} "
            f"(ratio mean {loc['ratio_mean']:.2f}, median {loc['ratio_median']:.2f})"
        )
    json_path = Path(run_dir) / f"explain_{s['tag']}.json"
    typer.echo(f"wrote {json_path} and {len(s['grids']) + 1} plots")
    typer.echo(f"report: {Path(run_dir) / 'report.html'}")
