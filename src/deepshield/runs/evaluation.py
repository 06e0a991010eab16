"""Evaluate a trained model on a split: metrics.json-ready numbers, plots, report section."""

from __future__ import annotations

from html import escape
from typing import Any

import torch
from torch import nn

from deepshield.data.splits import Splits, TensorSet
from deepshield.predict import fake_scores
from deepshield.report.html import figure, table
from deepshield.run import RunDir
from deepshield.runs.decision import Decision, decision_metrics, load_decision
from deepshield.train import distributed


def evaluate_model(
    model: nn.Module, ds: TensorSet, num_classes: int, batch_size: int = 128
) -> tuple[dict[str, Any], torch.Tensor]:
    """Metrics of `model` on `ds` and its logits [N,K]. Detectors (K=2) get the full detector
    metrics (accuracy, balanced accuracy, AUC, EER, fakes passed as real, reals flagged as fake,
    the collapse flag); classifiers get accuracy, balanced accuracy and accuracy per class.
    Under torchrun each rank predicts its shard and every rank gets all N logits, in order."""
    from deepshield.metrics import accuracy, balanced_accuracy, collapsed, detector_metrics

    logits = distributed.sharded_logits(model, ds, batch_size)
    y = ds.y
    pred = logits.argmax(1)
    if num_classes == 2 and len(torch.unique(y)) == 2:
        out = detector_metrics(y.numpy(), fake_scores(logits).numpy(), threshold=0.5)
    else:
        out = {
            "accuracy": accuracy(y.numpy(), pred.numpy()),
            "balanced_accuracy": balanced_accuracy(y.numpy(), pred.numpy()),
            "collapsed": collapsed(y.numpy(), pred.numpy()),
            "n": len(y),
        }
    out["per_class_accuracy"] = {
        int(c): float((pred[y == c] == c).float().mean()) for c in torch.unique(y).tolist()
    }
    return out, logits


def write_evaluation(
    run: RunDir, model: nn.Module, splits: Splits, split: str = "test", tag: str = ""
) -> dict[str, Any]:
    """Evaluate on `splits.<split>`, write eval plots and a report section; return the metrics.
    Under torchrun every rank takes part in the (sharded) evaluation and only rank 0 writes."""
    from deepshield.report.plots import plot_det, plot_reliability, plot_roc, plot_score_hist

    ds = splits.split(split)
    metrics, logits = evaluate_model(model, ds, splits.num_classes)
    if not distributed.is_main():
        return metrics
    suffix = f"_{tag}" if tag else ""
    plots = []
    y, s = ds.y.numpy(), fake_scores(logits).numpy() if splits.num_classes == 2 else None
    decision = load_decision(run.path) if splits.num_classes == 2 else None
    if "auc" in metrics:
        for name, fig in (
            ("roc", plot_roc(y, s, tuple(splits.classes))),
            ("det", plot_det(y, s)),
            ("scores", plot_score_hist(y, s)),
        ):
            run.save_plot(fig, f"{name}{suffix}")
            plots.append(f"plots/{name}{suffix}.png")
        metrics["decision"] = decision_metrics(y, s, decision)
        run.save_plot(plot_reliability(y, decision.calibrate(s)), f"reliability{suffix}")
        plots.append(f"plots/reliability{suffix}.png")
        name = f"pfake{suffix or '_' + split}.csv"
        metrics["score_file"] = _write_pfake(run, name, ds, decision.calibrate(s), decision)
    if "video" in ds.meta and "frame" in ds.meta and len(ds) and splits.num_classes == 2:
        from deepshield.metrics import video_metrics

        names = splits.meta_names.get("video")
        metrics["video_level"] = video_metrics(ds.y, s, ds.meta["video"], ds.meta["frame"], names)
    extra = ""
    if splits.modality == "audio" and splits.num_classes == 2:  # per clip: verdict, reason, record
        from deepshield.runs import countermeasure as cm

        rows = cm.file_verdicts(ds, s, decision)
        name = f"files{suffix or '_' + split}.csv"
        cm.write_file_verdicts(run, name, rows)
        metrics["files"] = cm.unsure_summary(rows, name)
        extra = f"<p>{cm.unsure_line(metrics['files'])}</p>"
    if "auc" in metrics and splits.modality == "audio":  # a spoofing countermeasure
        from deepshield.runs import countermeasure as cm

        metrics.update(cm.countermeasure_metrics(ds, s, splits))
        score_file = cm.write_score_file(run, f"scores{suffix or '_' + split}.txt", ds, s, splits)
        extra += cm.countermeasure_html(metrics, score_file.name)
    rows = [{"metric": k, "value": v} for k, v in metrics.items() if isinstance(v, (int, float))]
    for level in ("frame", "video") if "video_level" in metrics else ():
        rows += [
            {"metric": f"{level}-level {k}", "value": v}
            for k, v in metrics["video_level"][level].items()
            if isinstance(v, (int, float))
        ]
    title = f"Evaluation on {splits.name} ({split})" + (f" [{tag}]" if tag else "")
    html = table(rows) + extra
    if "decision" in metrics:
        html += decision_html(metrics["decision"])
    if "score_file" in metrics:
        f = metrics["score_file"]
        shown = "calibrated" if f["calibrated"] else "raw"
        html += (
            f"<p>Per-sample {shown} P(fake): <code>{f['csv']}</code> (score it again, or with "
            f"another system's file: <code>deepshield metrics {f['csv']}</code>).</p>"
        )
    if metrics.get("collapsed"):
        html = f"<p><b>{collapse_warning(metrics)}</b></p>" + html
    html += "<div class='figs'>" + "".join(figure(p) for p in plots) + "</div>"
    run.add_section(f"eval{suffix}", title, html, order=20)
    return metrics


def _write_pfake(
    run: RunDir, name: str, ds: TensorSet, shown: Any, decision: Decision
) -> dict[str, Any]:
    """The split's P(fake) as shown [N] (calibrated by `decision` when it has a calibrator) as a
    deepshield P(fake) file (`utt,label,p_fake`), which `deepshield metrics` reads; a sample id
    that repeats (e.g. two faces of one frame) gets #2, #3, ..."""
    from deepshield.metrics import write_pfake_scores

    seen: dict[str, int] = {}
    ids = []
    for n in ds.names:
        seen[n] = seen.get(n, 0) + 1
        ids.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    write_pfake_scores(run.output(name), ids, ds.y.numpy(), shown)
    return {"csv": name, "format": "deepshield P(fake)", "calibrated": decision.calibrated}


def decision_html(d: dict[str, Any]) -> str:
    """The operating-points table and the raw vs calibrated ECE / Brier of a `decision` entry."""
    rows = [
        {
            "operating point": r["point"],
            "threshold": r["threshold"],
            "FPR": r["fpr"],
            "FNR": r["fnr"],
        }
        for r in d["operating_points"]
    ]
    cal = [
        {
            "score": name,
            "ECE": d[f"ece_{key}"],
            "Brier": d[f"brier_{key}"],
            "Cllr (bits)": d.get(f"cllr_{key}"),
            "minCllr": d.get("min_cllr"),
            "actDCF": d.get(f"act_dcf_{key}"),
            "minDCF": d.get("min_dcf"),
        }
        for name, key in (("raw P(fake)", "raw"), ("calibrated P(fake)", "calibrated"))
    ]
    head = (
        f"<h3>Decision ({d['rule']} threshold on {d['score']})</h3><p class='muted'>{d['note']}. "
        "eer and fpr=0.01 are chosen on this split (hindsight); run is the threshold fixed on "
        f"validation, so its FPR/FNR are the actual error rates. ECE: {d['ece_bins']}. Cllr reads "
        "P(fake) as an LLR at the validation prior; minCllr is its ranking-only floor. actDCF: the "
        "ASVspoof 5 cost at the Bayes threshold of those LLRs; minDCF the best in hindsight.</p>"
    )
    if d.get("warning"):
        head += f"<p class='warn'>{escape(d['warning'])}.</p>"
    return head + table(rows) + table(cal)


def collapse_warning(metrics: dict[str, Any], cfg: Any = None) -> str | None:
    """The line saying a model collapsed on a split (`metrics` from evaluate_model), with the fix
    when `cfg` (a TrainConfig) trained it with a defence; None when it did not collapse."""
    from deepshield.metrics.classification import collapse_note

    if not metrics.get("collapsed"):
        return None
    line = collapse_note(metrics) if "collapsed_to" in metrics else None
    line = line or "COLLAPSED: one class is predicted for >= 95 % of the split"
    if cfg is None:
        return line
    fixes = []
    if cfg.class_weights == "none":
        fixes.append("--class-weights balanced")
    if cfg.adv_train != "none":
        fixes.append(f"a lower --eps than {cfg.adv_eps * 255:.3g}/255")
    if cfg.lipschitz > 0:
        fixes.append(f"a lower --lipschitz than {cfg.lipschitz:g}")
    if not fixes:
        fixes.append("more epochs or a lower learning rate")
    return f"{line}. Retrain with {' or '.join(fixes)}."
