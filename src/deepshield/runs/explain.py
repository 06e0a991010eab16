"""Explain a trained run: image / map grids per outcome, per-class mean maps, the sanity and
localisation checks, `explain_<method>.json` and a report.html section."""

from __future__ import annotations

import html
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from deepshield.data.split import stratified_take
from deepshield.data.splits import Splits, TensorSet
from deepshield.errors import ConfigError, InputError
from deepshield.explain.class_maps import class_mean_maps
from deepshield.explain.grad_cam import frontend_module, grad_cam
from deepshield.explain.layers import recorded, resolve_layer
from deepshield.explain.localization import (
    box_area_share,
    localization_energy,
    localization_ratio,
)
from deepshield.explain.methods import METHODS, Method
from deepshield.explain.sanity import (
    DEFAULT_BOUND,
    sanity_randomization,
    sanity_text,
    sanity_verdict,
)
from deepshield.predict import fake_scores, predict_logits
from deepshield.report.html import figure, table
from deepshield.report.overlay import explanation_grid, outcome_indices
from deepshield.run import RunDir, data_options, file_tag

# Accepted spellings of each method -> its name in deepshield.explain.METHODS.
METHOD_ALIASES = {
    "saliency": "saliency",
    "smoothgrad": "smoothgrad",
    "gradcam": "grad_cam",
    "grad_cam": "grad_cam",
    "grad-cam": "grad_cam",
}
FILE_TAGS = {"saliency": "saliency", "smoothgrad": "smoothgrad", "grad_cam": "gradcam"}
TITLES = {"saliency": "saliency", "smoothgrad": "SmoothGrad", "grad_cam": "Grad-CAM"}


def method_name(text: str) -> str:
    """'gradcam' / 'grad_cam' / 'grad-cam' / 'saliency' / 'smoothgrad' -> the METHODS key."""
    key = METHOD_ALIASES.get(text.strip().lower())
    if key is None:
        raise ConfigError(f"--method {text!r}: use saliency, gradcam or smoothgrad")
    return key


def output_tag(
    method: str,
    dataset: str | None = None,
    data_kwargs: dict[str, Any] | None = None,
    split: str = "test",
) -> str:
    """File tag: 'gradcam' for the run's own test split; another dataset, dataset options or
    split are appended, e.g. 'gradcam_synthetic-faces_hard_localized-True_val'."""
    parts = [FILE_TAGS[method], dataset or ""]
    parts += [f"{k}-{v}" for k, v in sorted((data_kwargs or {}).items())]
    parts.append("" if split == "test" else split)
    return file_tag("_".join(p for p in parts if p)).strip("_")


def explain_run(
    run: RunDir | str | Path,
    method: str = "grad_cam",
    *,
    dataset: str | None = None,
    data_kwargs: dict[str, Any] | None = None,
    split: str = "test",
    n: int = 16,
    layer: str | None = None,
    max_samples: int | None = None,
    sanity_samples: int = 16,
    sanity_repeats: int = 3,
    sanity_bound: float = DEFAULT_BOUND,
    seed: int = 0,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    splits: Splits | None = None,
    model: nn.Module | None = None,
) -> dict[str, Any]:
    """Explain run `run`'s best model on `split` of its dataset (or `dataset`); return the summary
    also written to explain_<tag>.json. `splits` and `model`: that dataset (with these options)
    and the run's best model, when the caller has them loaded already (the audit).

    Writes plots/explain_<tag>_<outcome>.png (up to `n` image / map pairs for each of real and
    fake, correctly and wrongly detected; each map explains the predicted class),
    plots/explain_<tag>_class_means.png (mean map per true class over up to `max_samples`
    samples, chosen stratified by `seed`; all when None) and the report section. The sanity check
    compares maps of `sanity_samples` samples with the maps of `sanity_repeats` fully
    re-initialised copies of the model (Spearman rank correlation; passed when below
    `sanity_bound`). When the split carries meta["boxes"] (synthetic-faces), the localisation
    check measures, for each correctly detected fake, the Grad-CAM / saliency energy inside its
    box over the box's share of the image. Speech runs take method grad_cam: maps and pictures
    are at the model's front-end (frequency x frame) resolution.
    """
    t0 = time.perf_counter()
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    method = method_name(method)
    _check_options(split, n, max_samples, sanity_samples, sanity_repeats, batch_size)
    spec, options = _data_of(run, dataset, data_kwargs)
    if splits is None:
        splits = _load_splits(run, spec, options)
    device = torch.device(device)
    model = run.load_model("best").to(device) if model is None else model
    fn = _method(model, method, layer, splits.modality)
    ds = splits.split(split)
    if len(ds) == 0:
        raise InputError(f"{spec} has no {split} samples: explain another split (--split)")
    if max_samples is not None:
        ds = ds.subset(stratified_take(ds.y.numpy(), max_samples, seed=seed))
    x, y = ds.tensors()  # x: [N,C,H,W] in [0,1] or [N,T]; y: [N]
    logits = predict_logits(model, x, batch_size, device)  # [N, K]
    pred = logits.argmax(dim=1)  # [N]
    tag = output_tag(method, dataset, data_kwargs, split)

    grids = _outcome_grids(run, tag, method, fn, model, ds, logits, splits, n, batch_size, device)

    means = class_mean_maps(model, (x.to(device), y), fn, batch_size, target="predicted")
    means_png = f"plots/explain_{tag}_class_means.png"
    run.save_plot(_class_means_figure(means, splits, method), Path(means_png).stem)

    summary: dict[str, Any] = {
        "method": method,
        "layer": _layer_of(model, method, layer),
        "run": str(run.path),
        "dataset": spec,
        "data_kwargs": options,
        "split": split,
        "tag": tag,
        "samples": len(y),
        "accuracy": float((pred == y).float().mean()),
        "outcomes": {g: int(c) for g, c in _outcome_counts(y, pred, splits.classes).items()},
        "grids": grids,
        "class_means": means_png,
        "class_mean_stats": {
            splits.classes[c]: {"mean": float(m.mean()), "max": float(m.max())}
            for c, m in means.items()
        },
        "sanity": _sanity(
            fn, model, x, pred, sanity_samples, sanity_repeats, sanity_bound, seed, device
        ),
        "localization": _localization(fn, model, ds, pred, splits.num_classes, batch_size, device),
    }
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    run.write_json(f"explain_{tag}.json", summary)
    title = _section_title(method, spec, split)
    run.add_section(f"explain_{tag}", title, _section(summary), order=40)
    return summary


# -- inputs -----------------------------------------------------------------------------------


def _check_options(
    split: str, n: int, max_samples: int | None, sanity: int, repeats: int, batch: int
) -> None:
    if split not in ("train", "val", "test"):
        raise ConfigError(f"--split {split!r}: use train, val or test")
    for what, value in (
        ("--n", n),
        ("--sanity-samples", sanity),
        ("--sanity-repeats", repeats),
        ("--batch-size", batch),
    ):
        if value < 1:
            raise ConfigError(f"{what}={value}: use a positive number")
    if max_samples is not None and max_samples < 2:
        raise ConfigError(f"--max-samples={max_samples}: use at least 2 (one per class)")


def _data_of(
    run: RunDir, dataset: str | None, data_kwargs: dict[str, Any] | None
) -> tuple[str, dict[str, Any]]:
    """(spec, options): the run's dataset with its config's options updated by `data_kwargs`, or
    `dataset` with `data_kwargs` only."""
    from deepshield.config import TrainConfig

    cfg = run.read_config(TrainConfig)
    return dataset or cfg.dataset, data_options(cfg.data_kwargs, dataset, data_kwargs)


def _load_splits(run: RunDir, spec: str, options: dict[str, Any]) -> Splits:
    """The dataset `spec` with `options`, split by the run's seed."""
    from deepshield import data
    from deepshield.config import TrainConfig

    return data.load(spec, seed=run.read_config(TrainConfig).seed, **options)


def _method(model: nn.Module, method: str, layer: str | None, modality: str) -> Method:
    """The map function `fn(model, x, target)`; ConfigError where the method cannot apply."""
    if modality == "audio" and method != "grad_cam":
        raise ConfigError(
            f"--method {FILE_TAGS[method]} on a speech run gives one curve per waveform [T], "
            "not a time-frequency map: use --method gradcam"
        )
    if modality == "audio" and frontend_module(model) is None:
        raise ConfigError(
            f"{type(model).__name__} declares no `frontend_layer` and has no `frontend` child: "
            "Grad-CAM maps of a speech run are drawn over the front end's spectrogram"
        )
    if method != "grad_cam":
        if layer is not None:
            raise ConfigError(f"--layer applies to gradcam only, not to {FILE_TAGS[method]}")
        return METHODS[method]
    if layer is None and getattr(model, "cam_layer", None) is None:
        raise ConfigError(
            f"{type(model).__name__} has no convolution (`cam_layer` is None): "
            "Grad-CAM does not apply; use --method saliency"
        )
    resolve_layer(model, layer)  # an unknown layer fails here, before any work
    return grad_cam if layer is None else partial(grad_cam, layer=layer)


def _layer_of(model: nn.Module, method: str, layer: str | None) -> str | None:
    return (layer or model.cam_layer) if method == "grad_cam" else None


# -- outcomes and pictures --------------------------------------------------------------------


def _outcome_groups(
    y: torch.Tensor, pred: torch.Tensor, classes: list[str], per_group: int
) -> dict[str, list[int]]:
    """Detectors: the four outcomes of `outcome_indices`; other classifiers: correct / wrong."""
    if len(classes) == 2:
        return outcome_indices(y, pred, per_group)
    hit = pred == y
    return {
        "correct": hit.nonzero().flatten()[:per_group].tolist(),
        "wrong": (~hit).nonzero().flatten()[:per_group].tolist(),
    }


def _outcome_counts(y: torch.Tensor, pred: torch.Tensor, classes: list[str]) -> dict[str, int]:
    return {g: len(i) for g, i in _outcome_groups(y, pred, classes, len(y)).items()}


def _outcome_label(group: str, classes: list[str]) -> str:
    """'fake-wrong' -> 'fake, detected as real' (in the dataset's class names)."""
    if len(classes) != 2:
        return f"{group} predictions"
    truth, outcome = group.split("-")
    c = 0 if truth == "real" else 1
    seen = classes[c] if outcome == "correct" else classes[1 - c]
    return f"{classes[c]}, detected as {seen}"


def _title(name: str, logits: torch.Tensor, num_classes: int) -> str:
    """One line (two would run into the row above): a short sample name and the score."""
    short = name if len(name) <= 16 else name[:15] + "~"
    if num_classes == 2:
        return f"{short} P(fake) {fake_scores(logits.unsqueeze(0)).item():.2f}"
    return f"{short} pred {int(logits.argmax())}"


def _outcome_grids(
    run: RunDir,
    tag: str,
    method: str,
    fn: Method,
    model: nn.Module,
    ds: TensorSet,
    logits: torch.Tensor,
    splits: Splits,
    n: int,
    batch_size: int,
    device: torch.device,
) -> dict[str, str]:
    """One figure of up to `n` sample / map pairs per outcome, each map explaining the predicted
    class; {outcome: plots/<file>.png} for the outcomes that have samples."""
    pred = logits.argmax(dim=1)  # [N]
    grids: dict[str, str] = {}
    for group, idx in _outcome_groups(ds.y, pred, splits.classes, n).items():
        if not idx:
            continue
        x = ds.subset(idx).tensors()[0]  # [k, C, H, W] or [k, T]
        maps = _maps(fn, model, x, pred[idx], batch_size, device)  # [k, H, W] / [k, F, T']
        pictures = _pictures(model, x, splits.modality, device)  # [k, C, H, W]
        if splits.modality == "audio":  # low frequencies at the bottom
            maps, pictures = maps.flip(-2), pictures.flip(-2)
        titles = [_title(ds.names[i], logits[i], splits.num_classes) for i in idx]
        fig = explanation_grid(pictures, maps, titles, ncols=min(len(idx), 4))
        label = f"{TITLES[method]}: {_outcome_label(group, splits.classes)}"
        fig.suptitle(label, fontsize=10, y=1 + 0.1 / fig.get_figheight(), va="bottom")
        _audio_axes(fig, splits.modality)
        name = f"explain_{tag}_{group}"
        run.save_plot(fig, name)
        grids[group] = f"plots/{name}.png"
    return grids


def _maps(
    fn: Method,
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """fn over `x` in batches of `batch_size` on `device` -> maps on the CPU [N, ...]."""
    out = [
        fn(model, x[i : i + batch_size].to(device), target[i : i + batch_size].to(device)).cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out)


def _pictures(
    model: nn.Module, x: torch.Tensor, modality: str, device: torch.device
) -> torch.Tensor:
    """What a map is drawn over: images as they are; for speech the front end's spectrogram
    [N,1,F,T'], min-max scaled to [0,1] per sample."""
    if modality != "audio":
        return x
    with recorded(frontend_module(model)) as outs, torch.no_grad():
        model(x.to(device))
    s = outs[-1].detach().cpu().float()
    s = s.reshape(len(x), -1, *s.shape[-2:]).mean(dim=1)  # [N, F, T']
    lo = s.flatten(1).amin(dim=1).view(-1, 1, 1)
    hi = s.flatten(1).amax(dim=1).view(-1, 1, 1)
    return ((s - lo) / (hi - lo).clamp_min(1e-12)).unsqueeze(1)  # [N, 1, F, T']


def _audio_axes(fig: Figure, modality: str) -> None:
    """Spectrogram panels fill their axes (a clip has far more frames than bands)."""
    if modality == "audio":
        for ax in fig.axes:
            ax.set_aspect("auto")


def _class_means_figure(means: dict[int, torch.Tensor], splits: Splits, method: str) -> Figure:
    """Mean map of each class on one colour scale, and (detectors) fake minus real."""
    classes = sorted(means)
    two = len(splits.classes) == 2 and classes == [0, 1]
    panels = len(classes) + int(two)
    fig = Figure(figsize=(3.2 * panels, 3.0))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    vmax = max(float(means[c].max()) for c in classes) or 1.0
    audio = splits.modality == "audio"
    for ax, c in zip(axes, classes, strict=False):
        im = ax.imshow(means[c].numpy(), cmap="jet", vmin=0, vmax=vmax, origin=_origin(audio))
        ax.set_title(f"{splits.classes[c]}: mean {TITLES[method]}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    if two:
        diff = (means[1] - means[0]).numpy()
        lim = float(np.abs(diff).max()) or 1.0
        im = axes[-1].imshow(diff, cmap="coolwarm", vmin=-lim, vmax=lim, origin=_origin(audio))
        axes[-1].set_title(f"{splits.classes[1]} minus {splits.classes[0]}", fontsize=9)
        fig.colorbar(im, ax=axes[-1], fraction=0.046)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        if audio:
            ax.set_aspect("auto")
            ax.set_xlabel("frame", fontsize=8)
            ax.set_ylabel("frequency band", fontsize=8)
    fig.tight_layout()
    return fig


def _origin(audio: bool) -> str:
    return "lower" if audio else "upper"


# -- the checks -------------------------------------------------------------------------------


def _sanity(
    fn: Method,
    model: nn.Module,
    x: torch.Tensor,
    pred: torch.Tensor,
    samples: int,
    repeats: int,
    bound: float,
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    """Adebayo et al.'s randomisation test on `samples` samples (stratified by predicted class,
    chosen by `seed`):
    Spearman correlation of the trained model's maps (of its predicted class) with the maps of
    `repeats` fully re-initialised copies."""
    pick = torch.from_numpy(stratified_take(pred.numpy(), samples, seed=seed))
    r = sanity_randomization(
        model,
        x[pick].to(device),
        pred[pick].to(device),
        fn,
        seed=seed,
        mode="full",
        repeats=repeats,
        bound=bound,
    )
    return {
        "mode": r["mode"],
        "samples": len(pick),
        "repeats": r["repeats"],
        "seed": seed,
        "spearman_mean": r["mean"],
        "spearman_per_repeat": r["mean_per_repeat"],
        "spearman_per_sample": r["spearman"],
        "undefined_pairs": r["undefined"],
        "bound": r["bound"],
        "passed": r["passed"],
        "verdict": r["verdict"],
    }


def _localization(
    fn: Method,
    model: nn.Module,
    ds: TensorSet,
    pred: torch.Tensor,
    num_classes: int,
    batch_size: int,
    device: torch.device,
) -> dict[str, Any] | None:
    """Share of each correctly detected fake's map energy inside its artefact box, over the
    box's share of the image (1 = no better than a uniform map); None without boxes."""
    boxes = ds.meta.get("boxes")
    if boxes is None or num_classes != 2:
        return None
    hit = ((ds.y == 1) & (pred == 1) & (boxes[:, 0] >= 0)).nonzero().flatten()  # [k]
    if len(hit) == 0:
        return {"samples": 0}
    x = ds.subset(hit).tensors()[0]  # [k, C, H, W]
    maps = _maps(fn, model, x, torch.ones(len(hit), dtype=torch.long), batch_size, device)
    b = boxes[hit]
    ratio = localization_ratio(maps, b)  # [k]
    return {
        "samples": len(hit),
        "energy_in_box_mean": float(localization_energy(maps, b).mean()),
        "box_area_share_mean": float(box_area_share(b, tuple(maps.shape[1:])).mean()),
        "ratio_mean": float(ratio.mean()),
        "ratio_median": float(ratio.median()),
        "ratio_min": float(ratio.min()),
        "share_above_1": float((ratio > 1).float().mean()),
        "ratios": [round(float(r), 4) for r in ratio],
    }


# -- report -----------------------------------------------------------------------------------


def _section_title(method: str, spec: str, split: str) -> str:
    return f"Explanations: {TITLES[method]} on {spec} ({split})"


def _section(s: dict[str, Any]) -> str:
    """The report.html fragment of an explanation summary."""
    san = s["sanity"]
    verdict = sanity_verdict(san["spearman_mean"], san["bound"])
    rows = [
        {"item": "samples explained", "value": s["samples"]},
        {"item": "accuracy on them", "value": s["accuracy"]},
        {"item": "layer", "value": s["layer"] or "input gradient"},
        {
            "item": f"sanity: Spearman vs randomised weights ({san['repeats']} draws, "
            f"{san['samples']} samples)",
            "value": san["spearman_mean"],
        },
    ]
    loc = s["localization"]
    if loc and loc.get("samples"):
        rows += [
            {"item": "localisation: detected fakes", "value": loc["samples"]},
            {"item": "energy inside the artefact box (mean)", "value": loc["energy_in_box_mean"]},
            {"item": "box share of the image (mean)", "value": loc["box_area_share_mean"]},
            {"item": "ratio energy / area: mean", "value": loc["ratio_mean"]},
            {"item": "ratio energy / area: median", "value": loc["ratio_median"]},
            {"item": "fakes with ratio > 1", "value": loc["share_above_1"]},
        ]
    note = (
        f"<p>Sanity check (Adebayo et al., 2018): maps of the trained model against maps of the "
        f"same model with all weights re-initialised; a rank correlation below "
        f"{san['bound']:g} means the maps depend on what was learnt: "
        f"<span class='{verdict}'>{verdict}</span>"
        + (
            f" ({html.escape(sanity_text(san['spearman_mean'], san['bound'], san.get('undefined_pairs')))})"
            if verdict == "undefined"
            else ""
        )
        + ".</p>"
    )
    if loc and loc.get("samples"):
        note += (
            "<p>Localisation: for each correctly detected fake, the share of map energy inside "
            "the box its artefact was placed in, divided by the box's share of the image "
            "(1 = no better than a uniform map).</p>"
        )
    figs = "".join(f"<p>{figure(p, alt=g)}</p>" for g, p in s["grids"].items())
    return (
        table(rows)
        + note
        + f"<p>{figure(s['class_means'], 'mean map per class')}</p>"
        + figs
        + f"<p class='muted'>Each map explains the predicted class. Numbers: "
        f"<code>{html.escape(Path(s['run']).name)}/explain_*.json</code></p>"
    )
