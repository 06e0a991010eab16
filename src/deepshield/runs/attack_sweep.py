"""An attack sweep on a trained run: its model and dataset (config.yaml), results written into the
run folder as attack_<name>.json, plots/attack_<name>.png (accuracy / AUC / fakes passed as real
vs eps), plots/attack_<name>_grid.png (clean / adversarial / amplified perturbation),
attack_<name>_grid.safetensors (the grid's tensors) and a report.html section.

Under torchrun every rank attacks its share of the batches and only rank 0 writes.

Each budget's per-sample results are written as it finishes (attack_<name>_budgets/K.safetensors,
with the sweep's identity in key.json): a sweep that is interrupted (Ctrl-C, a killed job) and
run again with the same settings resumes at the first unfinished budget. The folder is removed
once the sweep's artifacts are written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from deepshield import data
from deepshield.attacks.checks import check_count
from deepshield.attacks.sweep import AttackSpec, SweepResult, transfer_sweep
from deepshield.config import TrainConfig
from deepshield.data.splits import Splits, stratified_subset
from deepshield.errors import ConfigError, RunError
from deepshield.files import atomic_write_bytes
from deepshield.precision import ambient_amp, precision_flags, use_channels_last
from deepshield.report.html import figure, table
from deepshield.run import RunDir, check_name, data_options, file_tag
from deepshield.runs.decision import Decision, at_threshold, decision_summary, load_decision
from deepshield.train import distributed

if TYPE_CHECKING:
    from deepshield.defenses.adaptive import PurifierThreat

SPLITS = ("train", "val", "test")


@dataclass
class AttackData:
    """The samples a sweep attacks: x [N,...] in [0,1], y [N], their classes and provenance
    (`subset`: how they were drawn from the split, e.g. "60 of 120 samples (class-stratified...)")."""

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    dataset: str
    split: str
    subset: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # the dataset options used
    splits: Splits | None = field(default=None, repr=False, compare=False)  # loaded from
    video: torch.Tensor | None = None  # [N] video id of each crop (video-folder data), else None
    frame: torch.Tensor | None = None  # [N] frame index of each crop
    video_names: list[str] | None = None


def run_config(run: RunDir) -> TrainConfig:
    """The TrainConfig a run was trained with (its config.yaml)."""
    return run.read_config(TrainConfig)


def check_options(split: str, n: int | None, batch_size: int) -> None:
    """ConfigError / InputError for a bad split, n < 1 or batch_size < 1 (before any work)."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if n is not None:
        check_count("n", n)
    check_count("batch_size", batch_size)


def load_attack_data(
    cfg: TrainConfig,
    *,
    dataset: str | None = None,
    data_kwargs: Mapping[str, Any] | None = None,
    split: str = "test",
    n: int | None = None,
    seed: int | None = None,
) -> AttackData:
    """`n` samples of `split` of the run's dataset (or of `dataset`, with its kwargs), drawn
    class-stratified by `seed` (default: the run's seed); all of them when n is None.
    `data_kwargs` are merged over the run's (`run.data_options`), and the result records them."""
    spec = dataset or cfg.dataset
    kwargs = data_options(cfg.data_kwargs, dataset, data_kwargs)
    with distributed.main_first("loading the dataset"):  # rank 0 fills the cache once
        splits = data.load(spec, seed=cfg.seed, **kwargs)
    drawn = stratified_subset(
        splits.split(split), n, seed=cfg.seed if seed is None else seed, classes=splits.classes
    )
    x, y = drawn.data.tensors()
    meta = drawn.data.meta
    video: tuple = (None, None, None)
    if "video" in meta and "frame" in meta:  # crops of videos (video-folder)
        video = (meta["video"], meta["frame"], splits.meta_names.get("video"))
    return AttackData(x, y, list(splits.classes), spec, split, drawn.note, kwargs, splits, *video)


def sweep_name(
    spec: AttackSpec, *, surrogate: str | Path | None = None, split: str = "test", tag: str = ""
) -> str:
    """Default result name: attack[_mask][_eot_<transforms>][_after_<processing>]
    [_from_<surrogate folder>][_split][_tag]."""
    parts = [spec.attack]
    if spec.mask.strip() != "full":
        parts.append(spec.mask.replace(":", ""))
    if spec.eot_transforms:
        parts.append("eot_" + "_".join(t.replace(":", "") for t in spec.eot_transforms))
    if spec.eval_after:
        parts.append("after_" + spec.eval_after.replace(":", ""))
    if surrogate is not None:
        parts.append(f"from_{Path(surrogate).name}")
    if split != "test":
        parts.append(split)
    if tag:
        parts.append(tag)
    return file_tag("_".join(parts)).strip("_")


def attack_run(
    run_dir: str | Path,
    spec: AttackSpec,
    *,
    dataset: str | None = None,
    data_kwargs: Mapping[str, Any] | None = None,
    split: str = "test",
    n: int | None = None,
    batch_size: int = 128,
    surrogate: str | Path | None = None,
    name: str | None = None,
    device: torch.device | str = "cpu",
    threat: PurifierThreat | None = None,
    channels_last: bool = False,
    replace: bool = True,
) -> dict[str, Any]:
    """Sweep `spec` on a run's best model (crafted on `surrogate`'s model when given, i.e. a
    transfer attack), write the results into the run folder; return the JSON written.

    threat: evaluate the model behind a DIP purifier instead, attacked as threat.adaptive says
    (`defenses.adaptive`: none, bpda, eot with spec.eot_samples passes per gradient).
    channels_last: image models (and a surrogate) in channels-last memory format. Mixed
    precision is the caller's autocast (`deepshield.precision.autocast`), recorded as "amp".
    replace False: refuse to replace an attack_<name>.json of other settings (`check_replaced`).
    Every bad argument raises before the data is loaded or a model is attacked.
    """
    spec = spec.checked()
    check_options(split, n, batch_size)
    if name is not None:
        check_name(name)
    if threat is not None and surrogate is not None:
        raise ConfigError("--surrogate and --purify do not combine: a purified model is "
                          "attacked through its own purifier (--adaptive none crafts on the bare "
                          "model)")  # fmt: skip
    run = RunDir.open(run_dir)
    cfg = run_config(run)
    sur = RunDir.open(surrogate) if surrogate is not None else None
    if sur is not None:
        run_config(sur)
    t0 = time.perf_counter()
    batch = load_attack_data(
        cfg, dataset=dataset, data_kwargs=data_kwargs, split=split, n=n, seed=spec.seed
    )
    model = run.load_model("best").to(device)
    crafter = sur.load_model("best").to(device) if sur is not None else None
    channels_last = use_channels_last(model, channels_last, tuple(batch.x.shape[1:]))
    if crafter is not None:
        use_channels_last(crafter, channels_last, tuple(batch.x.shape[1:]))
    return sweep_loaded(run, spec, batch, model, crafter=crafter, surrogate=sur, dataset=dataset,
                        n=n, batch_size=batch_size, name=name, threat=threat, t0=t0,
                        channels_last=channels_last, replace=replace)[0]  # fmt: skip


def sweep_loaded(
    run: RunDir,
    spec: AttackSpec,
    batch: AttackData,
    model: nn.Module,
    *,
    crafter: nn.Module | None = None,
    surrogate: RunDir | None = None,
    dataset: str | None = None,
    n: int | None = None,
    batch_size: int = 128,
    name: str | None = None,
    threat: PurifierThreat | None = None,
    t0: float | None = None,
    channels_last: bool = False,
    replace: bool = True,
) -> tuple[dict[str, Any], SweepResult]:
    """`attack_run` on a model and data already loaded (the audit loads them once): sweep
    `spec` (crafted on `crafter`, the model of the run `surrogate`, when given), write the
    results into `run`; -> (the JSON written, the per-sample SweepResult). The autocast in
    effect (`ambient_amp`) and `channels_last` (the models' memory format, set by the caller)
    are recorded; budgets finished under another precision are not resumed. `replace` False:
    ConfigError before any work when attack_<name>.json holds a sweep of other settings."""
    t0 = time.perf_counter() if t0 is None else t0
    amp = ambient_amp(next(model.parameters()).device)
    spec.check_fits(batch.x.shape[1:])
    crafter = model if crafter is None else crafter
    _check_classes(model, crafter, batch, surrogate)
    if threat is not None:
        crafter, model = threat.models(model, spec.seed)
    tag = file_tag(dataset) if dataset else ""
    if threat is not None:
        tag = "_".join(t for t in (threat.tag(), tag) if t)
    sur_path = surrogate.path if surrogate is not None else None
    name = name or sweep_name(spec, surrogate=sur_path, split=batch.split, tag=tag)
    if not replace:
        check_replaced(run, name, spec, batch, sur_path)
    key = {
        **spec.to_dict(),
        "data": [batch.dataset, batch.options, batch.split, batch.subset, len(batch.y)],
        "weights": [
            run.weights_sha256("best"),
            surrogate.weights_sha256("best") if surrogate is not None else None,
        ],
        "defence": None if threat is None else threat.to_dict(),
        "batch_size": batch_size,
        "world_size": distributed.world_size(),
        "amp": amp,
    }
    store = BudgetFiles(run, name, key)
    result = transfer_sweep(
        crafter, {"model": model}, batch.x, batch.y, spec, batch_size=batch_size, store=store
    )["model"]
    info = {
        "run": str(run.path),
        "model": run.read_json("model.json")["name"],
        "surrogate": None
        if surrogate is None
        else {"run": str(surrogate.path), "model": surrogate.read_json("model.json")["name"]},
        "defence": None if threat is None else threat.to_dict(),
        "batch_size": batch_size,
        "amp": amp,
        "channels_last": channels_last,
        "seconds": round(time.perf_counter() - t0, 2),
        "command": _command(run.path, spec, dataset, batch.split, n, batch_size, sur_path, name)
        + precision_flags(amp, channels_last),
    }
    if threat is not None:
        info["command"] += " " + threat.flags()
    record = write_sweep(run, name, result, spec, batch, info)
    store.clear()
    return record, result


def check_replaced(
    run: RunDir, name: str, spec: AttackSpec, batch: AttackData, surrogate: Path | None
) -> None:
    """ConfigError naming attack_<name>.json when it holds a sweep of other settings (attack,
    budgets, steps, data, surrogate): a rerun with the same ones resumes or redoes it."""
    file = f"attack_{name}.json"
    if not run.exists(file):
        return
    old = run.read_json(file)
    new = {**spec.to_dict(), "dataset": batch.dataset, "data_kwargs": batch.options,
           "split": batch.split, "n": len(batch.y)}  # fmt: skip
    new = json.loads(json.dumps(new))  # as the file reads back
    differ = [k for k in new if old.get(k) != new[k]]
    was = (old.get("surrogate") or {}).get("run")
    if (was and Path(was)) != surrogate:
        differ.append("surrogate")
    if differ:
        raise ConfigError(
            f"{run.file(file)} holds a {old.get('attack')} sweep with other {', '.join(differ)}: "
            "pass --out NAME to keep both, or --force to replace it"
        )


class BudgetFiles:
    """`sweep.BudgetStore` in a run folder: budget k of sweep `name` in
    attack_<name>_budgets/<k>.safetensors, used only by a sweep with the same identity `key`
    (settings, data, weights; key.json). Rank 0 writes; every rank reads."""

    def __init__(self, run: RunDir, name: str, key: Mapping[str, Any]) -> None:
        self.run, self.folder = run, f"attack_{name}_budgets"
        self.key = json.loads(json.dumps(key))  # as JSON reads it back
        path = f"{self.folder}/key.json"
        self.valid = run.exists(path) and run.read_json(path) == self.key

    def load(self, k: int) -> dict[str, torch.Tensor] | None:
        """Budget k's tensors when a sweep with this key finished it, else None."""
        from safetensors.torch import load_file

        name = f"{self.folder}/{k}.safetensors"
        return load_file(self.run.file(name)) if self.valid and self.run.exists(name) else None

    def save(self, k: int, tensors: dict[str, torch.Tensor]) -> None:
        """Write budget k atomically (rank 0); the first write of a new key drops older budgets."""
        from safetensors.torch import save

        if not distributed.is_main():
            return
        if not self.valid:
            self.clear()
            self.run.output(f"{self.folder}/")
            self.run.write_json(f"{self.folder}/key.json", self.key)
            self.valid = True
        atomic_write_bytes(self.run.output(f"{self.folder}/{k}.safetensors"), save(tensors))

    def clear(self) -> None:
        """Remove the budget files (rank 0): the sweep's artifacts hold its results."""
        folder = self.run.file(self.folder)
        if distributed.is_main() and folder.is_dir():
            for f in folder.iterdir():
                f.unlink()
            folder.rmdir()
        self.valid = False


def _check_classes(model: nn.Module, crafter: nn.Module, batch: AttackData, sur: Any) -> None:
    """RunError when the model (or surrogate) has another number of classes than the data."""
    for who, m in (("model", model), ("surrogate", crafter)):
        classes = m.deepshield_spec["num_classes"]
        if classes != len(batch.classes):
            where = sur.path if who == "surrogate" and sur is not None else "the run"
            raise RunError(
                f"{where}: the {who} has {classes} classes but {batch.dataset} has "
                f"{len(batch.classes)}: attack with a model trained on this dataset"
            )


def _command(
    run: Path,
    spec: AttackSpec,
    dataset: str | None,
    split: str,
    n: int | None,
    batch_size: int,
    surrogate: str | Path | None,
    name: str,
) -> str:
    """The `deepshield attack` command that reproduces a sweep."""
    eps = ",".join(_eps_text(e, spec.norm) for e in spec.eps)
    steps = "" if spec.steps is None else f" --steps {spec.steps}"
    parts = [
        f"deepshield attack {run} --attack {spec.attack} --eps {eps}{steps}",
        f"--norm {spec.norm} --restarts {spec.restarts} --mask {spec.mask} --seed {spec.seed}",
        f"--split {split} --batch-size {batch_size} --out {name}",
    ]
    if spec.eot_samples > 1:
        parts.append(f"--eot-samples {spec.eot_samples}")
    if spec.eot_transforms:
        parts.append(f"--eot-transforms {','.join(spec.eot_transforms)}")
    if spec.eval_after:
        parts.append(f"--eval-after {spec.eval_after}")
    if n is not None:
        parts.append(f"--n {n}")
    if dataset:
        parts.append(f"-d {dataset}")
    if surrogate is not None:
        parts.append(f"--surrogate {surrogate}")
    return " ".join(parts)


def _eps_text(eps: float, norm: str = "linf") -> str:
    """eps as the CLI reads it back exactly: L-inf "k/255" for multiples of 1/255, else repr
    (L2 budgets are norms of the whole perturbation, never in 1/255 steps)."""
    k = round(eps * 255)
    if eps == 0:
        return "0"
    if norm == "linf" and k / 255 == eps:
        return f"{k}/255"
    return repr(eps)


def sweep_record(
    result: SweepResult, spec: AttackSpec, batch: AttackData, decision: Decision | None = None
) -> dict[str, Any]:
    """The JSON of a sweep: parameters, data, clean metrics and one row per eps; for a detector
    with a run `decision`, the clean entry and every row also hold the actual error rates at the
    run's threshold (`decision.at_threshold`) and "decision" says which threshold."""
    rows = [{**row, **row_statistics(result, k)} for k, row in enumerate(result.rows())]
    clean = result.clean()
    threshold: dict[str, Any] = {}
    if result.detector and decision is not None:
        threshold["decision"] = decision_summary(decision)
        clean.update(at_threshold(result.y.numpy(), _p_fake(result.clean_logits), decision))
        for k, row in enumerate(rows):
            row.update(at_threshold(result.y.numpy(), _p_fake(result.adv_logits[k]), decision))
    if result.detector and batch.video is not None:
        threshold["video_level"] = _video_level(result, batch, decision)
    return {
        **spec.to_dict(),
        "dataset": batch.dataset,
        "data_kwargs": batch.options,
        "split": batch.split,
        "n": len(batch.y),
        "subset": batch.subset,
        "classes": batch.classes,
        "detector": result.detector,
        "grid": batch.x.dim() == 4,  # image grid (rank 0 holds its tensors)
        "world_size": distributed.world_size(),
        "clean": clean,
        "rows": rows,
        **threshold,
    }


def _video_level(result: SweepResult, batch: AttackData, decision: Decision | None) -> dict:
    """Video-level numbers of a sweep on crops of videos: per budget, `metrics.video_rates` of
    the crops' P(fake) (calibrated by the run's decision when it has one, at its threshold;
    raw at 0.5 otherwise): every crop of a video attacked, the video score their frames' mean."""
    from deepshield.metrics.video import video_rates

    assert batch.video is not None and batch.frame is not None
    cal = decision.calibrate if decision is not None else np.asarray
    t = decision.threshold if decision is not None else 0.5
    y, ids, frames = result.y.numpy(), batch.video.numpy(), batch.frame.numpy()

    def rates(logits: torch.Tensor) -> dict[str, Any] | None:
        return video_rates(y, cal(_p_fake(logits)), ids, frames, batch.video_names, t)

    return {
        "threshold": t,
        "calibrated": bool(decision is not None and decision.calibrated),
        "clean": rates(result.clean_logits),
        "rows": [rates(result.adv_logits[k]) for k in range(len(result.eps))],
    }


def _p_fake(logits: torch.Tensor) -> np.ndarray:
    """Raw P(fake) [N] of two-class logits [N, 2]."""
    return logits.softmax(1)[:, 1].double().numpy()


def row_statistics(result: SweepResult, k: int) -> dict[str, Any]:
    """`success_statistics` of budget k: success among the images right when clean, L2 norms
    (and Square's queries) over the successful ones."""
    from deepshield.metrics.attack_statistics import success_statistics

    y = result.y
    if len(y) == 0:
        return {}
    correct = result.clean_logits.argmax(1) == y  # [N]
    fooled = result.adv_logits[k].argmax(1) != y  # [N]
    spent = None if result.queries is None else result.queries[k]
    return success_statistics(correct.numpy(), fooled.numpy(), result.l2[k].numpy(), spent)


def write_sweep(
    run: RunDir,
    name: str,
    result: SweepResult,
    spec: AttackSpec,
    batch: AttackData,
    info: Mapping[str, Any],
) -> dict[str, Any]:
    """Write attack_<name>.json, its plot, grid (png and safetensors) and report section (rank 0
    only); return the JSON record (on every rank)."""
    from safetensors.torch import save

    decision = load_decision(run.path) if result.detector else None
    record = {"name": name, **info, **sweep_record(result, spec, batch, decision)}
    if not distributed.is_main():
        return record
    run.set_done(f"attack_{name}", False)  # complete again only once every artifact is written
    run.write_json(f"attack_{name}.json", record)
    run.save_plot(plot_sweep(record), f"attack_{name}")
    if record["grid"] and result.grid is not None:
        run.save_plot(grid_figure(result, batch.classes, spec.norm), f"attack_{name}_grid")
        tensors = {k: v.contiguous() for k, v in result.grid.items()}
        atomic_write_bytes(run.output(f"attack_{name}_grid.safetensors"), save(tensors))
    run.add_section(f"attack_{name}", _title(record), section_html(record), order=40)
    run.set_done(f"attack_{name}")
    return record


def _title(record: Mapping[str, Any]) -> str:
    sur, defence = record.get("surrogate"), record.get("defence")
    how = f"transfer from {sur['model']} ({sur['run']})" if sur else "white-box"
    if defence:
        how = f"DIP-purified model, adaptive: {defence['adaptive']}"
    mask = "" if record["mask"] == "full" else f", mask {record['mask']}"
    return f"Attack {record['name']}: {record['attack']} {record['norm']}{mask}, {how}"


def table_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Flat rows of a sweep record (one per eps) for tables: the budget in the norm's own units,
    accuracy beside balanced accuracy and the per-class rates, whether the attack broke any
    image, and perturbation sizes (Square: queries) over the successful images only."""
    out = []
    for r in record["rows"]:
        row: dict[str, Any] = {"eps": r["eps"]}
        if record["norm"] == "linf":
            row["eps x 255"] = round(r["eps"] * 255, 2)
        row["accuracy"] = r["accuracy"]
        if record["detector"]:
            row["balanced accuracy"] = r.get("balanced_accuracy")
            row["AUC"] = r["auc"]
            row["EER"] = r["eer"]
            row["fakes passed as real"] = r["fake_passed_as_real"]
            row["reals flagged as fake"] = r.get("real_flagged_as_fake")
            if "fakes_passed_at_threshold" in r:
                row["fakes passed at run threshold"] = r["fakes_passed_at_threshold"]
                row["reals flagged at run threshold"] = r["reals_flagged_at_threshold"]
                row["mean P(fake), calibrated"] = r["p_fake_calibrated_mean"]
            row["evasion: accuracy"] = r["evasion"]["accuracy"]
            row["evasion: AUC"] = r["evasion"]["auc"]
        video = (record.get("video_level") or {}).get("rows", [])
        if len(video) == len(record["rows"]) and video[len(out)] is not None:
            row["videos: AUC"] = video[len(out)]["auc"]
            row["videos: fakes passed"] = video[len(out)]["fake_passed_as_real"]
            row["videos: reals flagged"] = video[len(out)]["real_flagged_as_fake"]
        if "surrogate_accuracy" in r:
            crafter = "crafting model" if record.get("defence") else "surrogate"
            row[f"{crafter} accuracy"] = r["surrogate_accuracy"]
        row.update(success_columns(r))
        out.append(row)
    return out


def attack_outcome(row: Mapping[str, Any]) -> str:
    """Whether the attack of one result row broke at least one image: "clean" (eps 0),
    "yes: k of m" or "NO: none of m" (m: images right when clean)."""
    if row["eps"] == 0:
        return "clean"
    if "successes" not in row:
        return "-"
    k, m = row["successes"], row["attacked"]
    return f"yes: {k} of {m}" if k else f"NO: none of {m}"


def success_columns(row: Mapping[str, Any]) -> dict[str, Any]:
    """The success columns of one result row: outcome, success rate, L2 over successes and
    (Square) queries per success and per image."""
    out: dict[str, Any] = {
        "attack broke": attack_outcome(row),
        "success rate": row.get("success_rate"),
        "median L2 (successes)": row.get("l2_median_success"),
        "mean L2 (successes)": row.get("l2_mean_success"),
    }
    if "queries_median_success" in row:
        out["queries/success: median"] = row["queries_median_success"]
        out["queries/success: mean"] = row["queries_mean_success"]
        out["queries/image: mean"] = row["queries_mean_image"]
    return out


def section_html(record: Mapping[str, Any]) -> str:
    """The report section of a sweep: settings, table, plot, grid, reproducing command."""
    name = record["name"]
    steps = "the attack's default" if record["steps"] is None else record["steps"]
    settings = (
        f"{record.get('subset') or record['n']} of {record['dataset']} ({record['split']});"
        f" steps {steps},"
        f" restarts {record['restarts']}, EOT passes {record.get('eot_samples', 1)}, seed "
        f"{record['seed']}, {record['world_size']} process(es)"
    )
    if record.get("eot_transforms"):
        settings += (
            f"; crafted in expectation over differentiable {', '.join(record['eot_transforms'])}"
        )
    if record.get("eval_after"):
        settings += f"; every image scored after real {record['eval_after']} (clean ones too)"
    if record.get("amp", "off") != "off":
        settings += f"; forwards and gradients in {record['amp']} (--amp)"
    if record.get("channels_last"):
        settings += "; models in channels-last memory format"
    evasion = (
        "<p class='muted'>evasion: real images kept clean, fakes attacked (an untargeted attack on"
        " a fake pushes it towards real, so its fakes passed as real equal the column above)."
        " Balanced accuracy: the mean of the two class recalls. 'attack broke': images right when"
        " clean and wrong under attack; success rate, L2 and queries count those images only."
        "</p>"
        if record["detector"]
        else ""
    )
    decision = record.get("decision")
    if decision:
        score = "calibrated P(fake)" if decision["calibrated"] else "raw P(fake)"
        evasion += (
            f"<p class='muted'>At the run's threshold: {score} &gt;= {decision['threshold']} "
            f"({decision['rule']} rule; {decision['note']}) is called fake; 'fakes passed at run "
            "threshold' is the share of fakes an analyst using that threshold calls real.</p>"
        )
    warning = clean_warning(record)
    if warning:
        evasion = f"<p><b>{warning}</b></p>" + evasion
    defence = record.get("defence")
    if defence:
        dip = defence["dip"]
        settings += (
            f". Model behind Deep Image Prior purification (at most {dip['iters']} iterations, "
            f"stop at PSNR {dip['stop_psnr']} dB, seeds unknown to the attacker); examples "
            f"{defence['crafted']}"
        )
    figs = [figure(f"plots/attack_{name}.png")]
    if record["grid"]:
        figs.append(figure(f"plots/attack_{name}_grid.png"))
    return (
        f"<p>{settings}</p>"
        + table(table_rows(record))
        + evasion
        + "<div class='figs'>"
        + "".join(figs)
        + "</div>"
        + f"<p>Reproduce: <code>{record['command']}</code></p>"
    )


def clean_warning(record: Mapping[str, Any]) -> str | None:
    """The collapse line of a detector's clean metrics in a sweep record, or None."""
    from deepshield.metrics.classification import collapse_note

    clean = record.get("clean", {})
    return collapse_note(clean) if record["detector"] else None


def plot_sweep(record: Mapping[str, Any]) -> Any:
    """Accuracy (and for detectors AUC and fakes passed as real, all and evasion) vs eps."""
    from deepshield.report.plots import plot_curve

    rows = record["rows"]
    series = {"accuracy": [r["accuracy"] for r in rows]}
    if record["detector"] and all(r.get("balanced_accuracy") is not None for r in rows):
        series["balanced accuracy"] = [r["balanced_accuracy"] for r in rows]
    if record["detector"] and all(r["auc"] is not None for r in rows):
        series["AUC"] = [r["auc"] for r in rows]
    if record["detector"] and all(r["fake_passed_as_real"] is not None for r in rows):
        series["fakes passed as real"] = [r["fake_passed_as_real"] for r in rows]
    if record["detector"] and all(r["evasion"]["auc"] is not None for r in rows):
        series["evasion: AUC (reals clean)"] = [r["evasion"]["auc"] for r in rows]
    if rows and "surrogate_accuracy" in rows[0]:
        series["surrogate accuracy (white-box)"] = [r["surrogate_accuracy"] for r in rows]
    unit = "L-inf" if record["norm"] == "linf" else "L2"
    fig = plot_curve(
        [r["eps"] for r in rows],
        series,
        xlabel=f"eps ({unit}, pixels in [0, 1])",
        ylabel="rate",
        title=f"{record['attack']} on {record['model']}",
    )
    fig.axes[0].set_ylim(-0.02, 1.02)  # every series is a rate
    return fig


def grid_figure(result: SweepResult, classes: Sequence[str], norm: str = "linf") -> Any:
    """Clean images, their adversarial version at the largest eps, the perturbation amplified
    to the full range (grey = unchanged); column titles: class and prediction."""
    from deepshield.report.grids import image_grid

    grid = result.grid
    assert grid is not None
    k = int(torch.tensor(result.eps).argmax())
    clean, adv = grid["clean"], grid["adversarial"][k]  # [g, C, H, W]
    delta = adv - clean
    scale = delta.flatten(1).abs().amax(1).clamp(min=1e-12)  # [g]
    shown = (0.5 + delta / (2 * scale[:, None, None, None])).clamp(0, 1)
    idx = grid["index"]
    y = result.y[idx]
    if result.detector:
        p_clean = result.clean_logits[idx].softmax(1)[:, 1]
        p_adv = result.adv_logits[k][idx].softmax(1)[:, 1]
        titles = [
            f"{classes[int(c)]}: P(fake) {a:.2f}->{b:.2f}"
            for c, a, b in zip(y, p_clean, p_adv, strict=True)
        ]
    else:
        pred = result.adv_logits[k][idx].argmax(1)
        titles = [f"{classes[int(c)]}->{classes[int(p)]}" for c, p in zip(y, pred, strict=True)]
    return image_grid(
        [clean, adv, shown],
        ["clean", f"adversarial eps={_eps_text(result.eps[k], norm)}", "perturbation (amplified)"],
        titles,
        cell_inches=1.6,
    )
