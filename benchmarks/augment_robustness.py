"""Detectors trained with and without everyday-processing augmentations, on processed test data.

    PYTHONPATH=src python benchmarks/augment_robustness.py \
        --group plain=RUN_A,RUN_B,RUN_C --group augmented=RUN_D,RUN_E,RUN_F \
        [--specs clean,jpeg:75,jpeg:50,blur:1,resize:0.5] [--threads 1] [--json out.json]

Each RUN is a real/fake image detector (`deepshield train`). Its whole test split goes through
each processing spec (`deepshield.data.processing`, real encoders: Pillow JPEG, ...; `clean`
leaves it as is) and is scored by the run's best model. Per run and spec: AUC, and at the run's
own operating threshold on its calibrated P(fake) (decision.json, fitted on clean validation
data): balanced accuracy, fakes passed as real and reals flagged as fake. Per group it prints
the mean and standard deviation over its runs (e.g. the seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np
import torch

from deepshield import data
from deepshield.data.processing import parse_spec
from deepshield.metrics import detector_metrics
from deepshield.predict import fake_scores, predict_logits
from deepshield.run import RunDir
from deepshield.runs.attack_sweep import run_config
from deepshield.runs.decision import load_decision

KEYS = ("auc", "balanced_accuracy", "fake_passed_as_real", "real_flagged_as_fake")


def run_rows(path: str, specs: list[str]) -> dict[str, dict[str, float]]:
    """spec -> the metrics of one run on its processed test split."""
    run = RunDir.open(path)
    cfg = run_config(run)
    splits = data.load(cfg.dataset, seed=cfg.seed, **cfg.data_kwargs)
    x, y = splits.test.tensors()
    model = run.load_model("best").eval()
    decision = load_decision(run.path)
    out = {}
    for spec in specs:
        xs = x if spec == "clean" else parse_spec(spec)(x)
        raw = fake_scores(predict_logits(model, xs)).numpy()
        m = detector_metrics(y.numpy(), decision.calibrate(raw), threshold=decision.threshold)
        out[spec] = {k: float(m[k]) for k in KEYS}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", action="append", required=True, help="NAME=RUN[,RUN...]")
    ap.add_argument("--specs", default="clean,jpeg:75,jpeg:50,blur:1,resize:0.5")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    specs = args.specs.split(",")
    results: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for group in args.group:
        name, _, runs = group.partition("=")
        results[name] = {r: run_rows(r, specs) for r in runs.split(",")}
    print("| group | processing | " + " | ".join(KEYS) + " |")
    print("|---|---|" + "---|" * len(KEYS))
    for name, runs in results.items():
        for spec in specs:
            cells = []
            for k in KEYS:
                vals = [rows[spec][k] for rows in runs.values()]
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                cells.append(
                    f"{np.mean(vals):.3f} ± {sd:.3f}" if len(vals) > 1 else f"{vals[0]:.3f}"
                )
            print(f"| {name} (n={len(runs)}) | {spec} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
