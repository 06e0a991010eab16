"""Run an AttackStudy: train the models it needs (complete runs are kept), sweep each attack on its
targets (white-box, or crafted once on a surrogate and evaluated on every target), and write
<out>/summary.json and <out>/summary.md. <out> is a run folder (the run layer's rules: a folder
of a user's files is refused, another study there needs --force, the final marker is set after
the summary). Finished sweeps with the same settings are reused, so an interrupted study resumes
where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deepshield.attacks.sweep import AttackSpec, transfer_sweep
from deepshield.config import TrainConfig
from deepshield.errors import ConfigError
from deepshield.files import atomic_write_text
from deepshield.run import RunDir, check_run, start_run
from deepshield.runs.attack_sweep import (
    AttackData,
    clean_warning,
    load_attack_data,
    run_config,
    sweep_name,
    table_rows,
    write_sweep,
)
from deepshield.runtime import resolve_device
from deepshield.studies.config import AttackStudy


def run_study(
    study: AttackStudy,
    out: str | Path | None = None,
    *,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train, attack and summarise `study` under `out` (default runs/studies/<name>); return the
    sweep records. force: redo sweeps whose results exist (trained runs are always kept)."""
    root = Path(out or Path("runs") / "studies" / study.name)
    folder, _, _ = check_run(root, "study", study, force=force)  # a user's files are refused
    for m in study.models:  # every model on the study's data, before anything is written
        _check_same_data(m.train or run_config(RunDir.open(m.run)), study, m.name)
    start_run(folder, "study", study)  # --force redoes sweeps; trained model runs are kept
    folder.claim(*(f"{m.name}/" for m in study.models if m.run is None))
    runs = {m.name: _model_run(study, m.name, root, log) for m in study.models}
    device = resolve_device(study.device)
    data: dict[int | None, AttackData] = {}
    records = []
    for i, entry in enumerate(study.attacks):
        spec = entry.spec(study.seed)
        n = entry.n or study.n
        targets = study.targets(entry)
        surrogate = runs[entry.surrogate] if entry.surrogate else None
        label = entry.label or sweep_name(spec, surrogate=surrogate.path if surrogate else None)
        done = [_finished(runs[t], label, spec, n, study) for t in targets]
        if all(done) and not force:
            log(f"[study] attack {i + 1}/{len(study.attacks)} {label}: kept earlier results")
            records += done
            continue
        if n not in data:
            cfg = run_config(runs[targets[0]])
            data[n] = load_attack_data(
                cfg, dataset=study.data.dataset, data_kwargs=study.data.data_kwargs, n=n,
                split=study.split,
            )  # fmt: skip
        batch = data[n]
        spec.check_fits(batch.x.shape[1:])
        t0 = time.perf_counter()
        crafter = surrogate.load_model("best").to(device) if surrogate else None
        models = {  # the surrogate among the targets is the crafter itself: white-box
            t: crafter if t == entry.surrogate else runs[t].load_model("best").to(device)
            for t in targets
        }
        if crafter is None:  # white-box: every target crafts its own examples
            results = {
                t: transfer_sweep(m, {t: m}, batch.x, batch.y, spec, batch_size=study.batch_size)[t]
                for t, m in models.items()
            }
        else:  # transfer: crafted once on the surrogate, evaluated on every target
            results = transfer_sweep(
                crafter, models, batch.x, batch.y, spec, batch_size=study.batch_size
            )
        seconds = round(time.perf_counter() - t0, 2)
        for t in targets:
            info = {
                "study": study.name,
                "run": str(runs[t].path),
                "model": runs[t].read_json("model.json")["name"],
                "surrogate": None
                if surrogate is None or t == entry.surrogate
                else {"run": str(surrogate.path), "model": entry.surrogate},
                "batch_size": study.batch_size,
                "seconds": seconds,
                "command": f"deepshield study <config of {study.name}> (attack {i + 1})",
            }
            records.append(write_sweep(runs[t], label, results[t], spec, batch, info))
        log(f"[study] attack {i + 1}/{len(study.attacks)} {label} on {', '.join(targets)}: "
            f"{seconds:.0f} s")  # fmt: skip
    folder.write_json("summary.json", records)
    atomic_write_text(folder.output("summary.md"), summary_markdown(study, records))
    folder.set_done("study")  # the final marker, after every artifact
    log(f"[study] wrote {root / 'summary.md'}")
    return records


def _model_run(study: AttackStudy, name: str, root: Path, log: Callable[[str], None]) -> RunDir:
    """The run of model `name`: trained under root/<name> (kept when complete) or referenced."""
    from deepshield.runs.training import run_training

    entry = next(m for m in study.models if m.name == name)
    if entry.run is not None:
        return RunDir.open(entry.run)
    assert entry.train is not None
    t0 = time.perf_counter()
    run = run_training(entry.train, root / name)
    acc = run.read_json("metrics.json")["test_acc_at_best_val"]
    log(f"[study] model {name}: test accuracy {acc:.4f} ({time.perf_counter() - t0:.0f} s)")
    return run


def _check_same_data(cfg: TrainConfig, study: AttackStudy, name: str) -> None:
    """ConfigError unless the model was trained on the study's dataset, options and seed (so
    the attacked split is held out for every model)."""
    ours = (study.data.dataset, study.data.data_kwargs, study.seed)
    theirs = (cfg.dataset, cfg.data_kwargs, cfg.seed)
    if ours != theirs:
        raise ConfigError(
            f"study {study.name}: model {name} was trained on {theirs} but the study attacks "
            f"{ours}: train it on the study's data and seed, or drop it"
        )


def _finished(
    run: RunDir, label: str, spec: AttackSpec, n: int | None, study: AttackStudy
) -> dict[str, Any] | None:
    """The earlier record of this sweep in `run` when its settings equal these, else None."""
    name = f"attack_{label}.json"
    if not run.exists(name):
        return None
    old = run.read_json(name)
    same = {**spec.to_dict(), "split": study.split, "dataset": study.data.dataset}
    if any(old.get(k) != v for k, v in same.items()):
        return None
    if n is not None and (old.get("n") != n or "subset" not in old):
        return None  # another n, or the first n of the split (before --n was stratified)
    return old


def summary_markdown(study: AttackStudy, records: list[dict[str, Any]]) -> str:
    """One markdown table per attack result name: model, eps and the sweep's numbers (balanced
    accuracy, per-class rates, success counts; collapsed models named above their table)."""
    lines = [f"# Study {study.name}", "", study.description.strip(), ""]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_name.setdefault(r["name"], []).append(r)
    for name, group in by_name.items():
        first = group[0]
        sur = next((r["surrogate"] for r in group if r.get("surrogate")), None)
        how = (
            f"transfer: crafted on {sur['model']} (its own rows are white-box)"
            if sur
            else "white-box"
        )
        lines += [
            f"## {name}",
            "",
            f"{first['attack']} ({first['norm']}, steps {first['steps']}, restarts "
            f"{first['restarts']}, mask {first['mask']}), {how}; "
            f"{first.get('subset') or str(first['n']) + ' images'} of "
            f"{first['dataset']} ({first['split']}). Balanced accuracy: mean of the two class "
            "recalls; 'attack broke': images right when clean and wrong under attack, over which "
            "success rate, L2 and queries are counted.",
            "",
        ]
        warnings = [(r["model"], clean_warning(r)) for r in group]
        lines += [f"**{model}: {w}**" for model, w in warnings if w]
        lines += [""] if any(w for _, w in warnings) else []
        rows = [{"model": r["model"], **row} for r in group for row in table_rows(r)]
        columns = list(rows[0])
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
        for row in rows:
            lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
        lines.append("")
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "-" if v is None else str(v)
