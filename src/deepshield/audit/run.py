"""`deepshield audit`: grade a run's detector end to end, from the library's own functions.

The run folder, its config, test data, model, decision (decision.json) and surrogate model are
opened once (`Audit.__init__`); every item reuses them.

Steps (each an item of audit.json, written as soon as it is done):
  clean        accuracy, AUC, EER, ROC and DET on the test split; calibration (ECE / Brier raw vs
               calibrated, operating points) under the run's decision; speech: min t-DCF,
               minDCF, actDCF, Cllr;
  fgsm, pgd_linf, pgd_l2, cw_l2, autoattack
               white-box sweeps (`runs.attack_sweep.sweep_loaded`, files attack_audit_<item>.*);
               every budget row also gives fakes passed / reals flagged at the run's threshold
               and, for speech, the budget as an SNR;
  noise        the random-noise baseline (`audit.noise`);
  snr_noise    speech: white noise at the budget's SNRs (`audit.speech`);
  transfer     PGD L-inf crafted on a surrogate run (given, or trained here: a simplenet, for
               speech a mel_cnn, of other widths on the run's data and config, in
               <run>/audit_surrogate_<budget>);
  explanations the Grad-CAM sanity check (`runs.explain.explain_run`) and (images) the Grad-CAM
               grid of fakes that pass under attack;
then the gradient-masking checks (`audit.checks`) and the card (`audit.card`): audit.json and the
report.html section "audit", then the final marker "audit" (`RunDir.set_done`). Re-running the
same command resumes: finished items whose files are all there are kept (`force=True`
recomputes them), the rest is rebuilt; an item whose step fails records its one-line error and
the audit goes on (and is not marked complete).

Mixed precision (`amp`, `--amp bf16|fp16`): every item's forwards and gradients run under that
autocast (`deepshield.precision`; attack iterates stay float32), recorded in the settings (an
audit.json of another precision is not resumed), the card and the items' commands; a surrogate
trained here trains in its config's precision, and the Grad-CAM sanity check runs in float32
(as `deepshield explain` makes it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from deepshield.attacks.sweep import AttackSpec, SweepResult
from deepshield.audit import speech
from deepshield.audit.budgets import SPEECH_REFERENCE_SNR, AuditBudget, get_budget
from deepshield.audit.card import (
    L2_ATTACKS,
    LINF_ATTACKS,
    card_html,
    curves_figure,
    eps_half,
    score_card,
)
from deepshield.audit.checks import masking_checks, rerun_suspicious
from deepshield.audit.evasion import evasion_grid
from deepshield.audit.noise import noise_rows
from deepshield.config import TrainConfig
from deepshield.data.splits import TensorSet, stratified_subset
from deepshield.errors import DeepshieldError, RunError
from deepshield.metrics.decision import rates_at
from deepshield.precision import autocast, check_amp, full_precision, precision_flags
from deepshield.run import RunDir, one_report
from deepshield.runs.attack_sweep import AttackData, load_attack_data, run_config, sweep_loaded
from deepshield.runs.decision import Decision, decision_metrics, load_decision
from deepshield.runs.everyday import run_grid

AUDIT_FILE = "audit.json"
DONE = "audit"  # the final marker, set once audit.json, every figure and report.html are written
SWEEP_KEYS = ("fgsm", "pgd_linf", "pgd_l2", "cw_l2", "autoattack")
SANITY_KEYS = ("spearman_mean", "bound", "passed", "samples", "repeats", "undefined_pairs")
Log = Callable[[str], None]


def at_threshold(y: torch.Tensor, p_fake: torch.Tensor, decision: Decision) -> dict[str, float]:
    """Fakes passed as real and reals flagged as fake at the run's threshold, for labels y [N]
    (1 = fake) and raw P(fake) [N] (calibrated by the run's decision first), from
    `metrics.decision.rates_at`."""
    r = rates_at(y.numpy(), decision.calibrate(p_fake.numpy()), decision.threshold)
    return {"fakes_passed_at_threshold": r["fnr"], "reals_flagged_at_threshold": r["fpr"]}


class Audit:
    """One audit of one run: its settings, data, model and the items done so far."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        budget: str | AuditBudget = "quick",
        dataset: str | None = None,
        data_kwargs: Mapping[str, Any] | None = None,
        surrogate: str | Path | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
        amp: str = "off",
    ) -> None:
        check_amp(amp, device)  # fp16 off CUDA: one line before any data is loaded
        if not isinstance(budget, AuditBudget):
            get_budget(budget)  # a bad name fails before any data is loaded
        self.run = RunDir.open(run_dir)
        self.cfg = run_config(self.run)
        self.surrogate = None
        if surrogate is not None:
            self.surrogate = RunDir.open(surrogate)
            run_config(self.surrogate)
        self.dataset = dataset
        self.data_kwargs = dict(data_kwargs) if data_kwargs is not None else None
        self.seed = seed
        self.device = torch.device(device)
        self.amp = amp
        self.data = load_attack_data(self.cfg, dataset=dataset, data_kwargs=self.data_kwargs)
        self.modality = "audio" if self.data.x.dim() == 2 else "image"
        self.budget = (
            budget if isinstance(budget, AuditBudget) else get_budget(budget, self.modality)
        )
        self.model = self.run.load_model("best").to(self.device)
        self._check_detector(self.data)
        self.decision = load_decision(self.run.path)
        self._surrogate_model: torch.nn.Module | None = None
        self._drawn: dict[int, AttackData] = {}
        self.digests = (  # an audit of other weights is not resumed
            self.run.weights_sha256(),
            self.surrogate.weights_sha256() if self.surrogate else None,
        )
        self.items: dict[str, Any] = {}

    def attacked(self, n: int | None = None) -> AttackData:
        """The samples an attack item uses: `n` (default the budget's) of the test split loaded
        once, drawn class-stratified by the seed (the draw `deepshield attack --n` makes, so
        the items' commands reproduce them)."""
        n = self.budget.n if n is None else n
        if n not in self._drawn:
            d = self.data
            meta = {"video": d.video, "frame": d.frame} if d.video is not None else {}
            drawn = stratified_subset(TensorSet(d.x, d.y, meta=meta), n, seed=self.seed,
                                      classes=d.classes)  # fmt: skip
            x, y = drawn.data.tensors()
            video = drawn.data.meta.get("video"), drawn.data.meta.get("frame"), d.video_names
            self._drawn[n] = AttackData(x, y, d.classes, d.dataset, d.split, drawn.note,
                                        d.options, None, *video)  # fmt: skip
        return self._drawn[n]

    # -- settings and files --------------------------------------------------------------------
    def _check_detector(self, data: AttackData) -> None:
        if data.x.dim() not in (2, 4) or len(data.classes) != 2:
            raise RunError(
                f"{self.run.path}: `deepshield audit` grades two-class image and speech "
                f"detectors, this is a {len(data.classes)}-class run: use `deepshield attack` "
                "and `deepshield evaluate` on it"
            )
        classes = self.model.deepshield_spec["num_classes"]
        if classes != 2:
            raise RunError(
                f"{self.run.path}: the model has {classes} classes, {data.dataset} has 2: audit it "
                "on the dataset it was trained for"
            )

    def settings(self) -> dict[str, Any]:
        """What the items depend on: an audit.json with other settings is not resumed."""
        return {
            "budget": self.budget.to_dict(),
            "weights_sha256": self.digests[0],
            "surrogate_sha256": self.digests[1],
            "dataset": self.data.dataset,
            "data_kwargs": self.data_kwargs,
            "seed": self.seed,
            "surrogate": str(self.surrogate.path) if self.surrogate else None,
            "draw": "class-stratified",  # audits of the first n images are not resumed
            "decision": self.decision.to_dict(),  # other threshold: other at-threshold rates
            "amp": self.amp,  # the precision of every item's forwards and gradients
        }

    def _data_args(self) -> str:
        """The --data-arg flags of the dataset options given."""
        return "".join(f" --data-arg {k}={v}" for k, v in (self.data_kwargs or {}).items())

    def _data_flags(self) -> str:
        """-d and --data-arg flags of the dataset given (none for the run's own)."""
        return (f" -d {self.dataset}" if self.dataset else "") + self._data_args()

    def command(self) -> str:
        """The `deepshield audit` command that reproduces every number of this audit."""
        cmd = f"deepshield audit {self.run.path} --budget {self.budget.name} --seed {self.seed}"
        if self.surrogate is not None:
            cmd += f" --surrogate {self.surrogate.path}"
        return cmd + self._data_flags() + precision_flags(self.amp)

    def resume(self, force: bool) -> None:
        """Keep the finished items of an audit.json with the same settings (unless force) whose
        files are all there; the others are computed again."""
        if force or not self.run.exists(AUDIT_FILE):
            return
        old = self.run.read_json(AUDIT_FILE)
        if {"amp": "off", **old.get("settings", {})} != self.settings():  # older: float32
            return
        self.items = {
            k: v
            for k, v in old.get("items", {}).items()
            if "error" not in v and all(self.run.file(f).is_file() for f in v.get("files", []))
        }

    # -- the steps ----------------------------------------------------------------------------
    def clean(self) -> dict[str, Any]:
        """Detector metrics of the whole test split, ROC and DET plots."""
        from deepshield.metrics import detector_metrics
        from deepshield.predict import fake_scores, predict_logits
        from deepshield.report.plots import plot_det, plot_roc

        x, y = self.data.x, self.data.y
        scores = fake_scores(predict_logits(self.model, x, self.budget.batch_size, self.device))
        m = detector_metrics(y.numpy(), scores.numpy(), threshold=0.5)
        plots = []
        if m["auc"] is not None:
            y_np, s_np = y.numpy(), scores.numpy()
            for name, fig in (("roc", plot_roc(y_np, s_np, tuple(self.data.classes))),
                              ("det", plot_det(y_np, s_np))):  # fmt: skip
                self.run.save_plot(fig, f"audit_{name}")
                plots.append(f"plots/audit_{name}.png")
        keys = ("n", "n_real", "n_fake", "accuracy", "balanced_accuracy", "auc", "eer",
                "fake_passed_as_real", "real_flagged_as_fake", "predicted_fake_share",
                "collapsed", "collapsed_to")  # fmt: skip
        command = f"deepshield evaluate {self.run.path}{self._data_flags()}"
        command += precision_flags(self.amp)
        out = {**{k: m[k] for k in keys}, "plots": plots, "files": plots, "command": command}
        if m["auc"] is not None:  # both classes: calibration and the run's operating point
            out["decision"] = decision_metrics(y.numpy(), scores.numpy(), self.decision)
            out["decision"]["val_counts"] = self.decision.val_counts  # what it was fitted on
            out.update(at_threshold(y, scores, self.decision))
            if self.modality == "audio":
                out["countermeasure"] = speech.countermeasure_costs(
                    y.numpy(), self.decision.calibrate(scores.numpy())
                )
        return out

    def sweep(self, key: str, spec: AttackSpec, n: int, surrogate: RunDir | None = None) -> dict:
        """A white-box (or, with a surrogate, transfer) sweep on the model and data loaded once
        (`sweep_loaded`), its rows completed by `_row_extras`."""
        spec = spec.checked()
        batch = self.attacked(n)
        record, result = sweep_loaded(
            self.run,
            spec,
            batch,
            self.model,
            crafter=self.surrogate_model(surrogate) if surrogate is not None else None,
            surrogate=surrogate,
            dataset=self.dataset,
            n=n,
            batch_size=self.budget.batch_size,
            name=f"audit_{key}",
        )
        name = f"attack_audit_{key}"
        files = [f"{name}.json", f"plots/{name}.png", f"sections/{name}.html"]
        return {
            "file": f"{name}.json",
            "files": files,
            "attack": record["attack"],
            "norm": record["norm"],
            "steps": record["steps"],
            "restarts": record["restarts"],
            "n": record["n"],
            "subset": record["subset"],
            "rows": self._row_extras(record["rows"], result, batch.x, spec.norm),
            "eps_half": eps_half(record["rows"]),
            **({"video_level": record["video_level"]} if "video_level" in record else {}),
            "command": record["command"] + self._data_args(),  # it already has -d
        }

    def _row_extras(
        self, rows: list[dict[str, Any]], result: SweepResult, x: torch.Tensor, norm: str
    ) -> list[dict[str, Any]]:
        """Each sweep row with the rates at the run's threshold (where the sweep lacks them)
        and, for speech, its budget as an SNR."""
        out = []
        for k, row in enumerate(rows):
            extra = at_threshold(result.y, result.adv_logits[k].softmax(1)[:, 1], self.decision)
            if self.modality == "audio":
                extra.update(speech.snr_columns(x, row["eps"], norm, result.l2[k]))
            out.append({**extra, **row})
        return out

    def surrogate_model(self, run: RunDir) -> torch.nn.Module:
        """The surrogate run's best model, loaded once."""
        if self._surrogate_model is None:
            self._surrogate_model = run.load_model("best").to(self.device)
        return self._surrogate_model

    def white_box(self, key: str) -> dict[str, Any]:
        """The white-box sweep `key` of SWEEP_KEYS with the budget's settings."""
        b = self.budget
        if key == "fgsm":
            return self.sweep(key, AttackSpec("fgsm", b.eps_linf, seed=self.seed), b.n)
        if key == "cw_l2":
            spec = AttackSpec("cw_l2", b.eps_l2, steps=b.cw_steps, norm="l2", seed=self.seed)
            return self.sweep(key, spec, b.cw_n)
        if key == "autoattack" and b.autoattack is not None:
            return self.sweep(key, AttackSpec(b.autoattack, b.autoattack_eps, seed=self.seed), b.n)
        return self.sweep(key, self._pgd(key.removeprefix("pgd_")), b.n)

    def _pgd(self, norm: str) -> AttackSpec:
        b = self.budget
        eps = b.eps_linf if norm == "linf" else b.eps_l2
        return AttackSpec("pgd", eps, steps=b.steps, norm=norm, restarts=b.restarts, seed=self.seed)

    def masking_rerun(self) -> dict[str, Any]:
        """Suspicious PGD budgets re-run with a stronger attack (`checks.rerun_suspicious`), on
        the samples the sweeps attacked."""
        drawn = self.attacked()
        sweeps = {k: self.items.get(k, {}).get("rows") for k in ("pgd_linf", "pgd_l2")}
        return rerun_suspicious(self.model, drawn.x, drawn.y, sweeps, seed=self.seed,
                                batch_size=self.budget.batch_size)  # fmt: skip

    def noise(self) -> dict[str, Any]:
        """The random-noise baseline over the L-inf ladder on the attacked images."""
        b = self.budget
        drawn = self.attacked()
        rows, scores = noise_rows(
            self.model,
            drawn.x,
            drawn.y,
            b.eps_linf,
            draws=b.noise_draws,
            seed=self.seed,
            batch_size=b.batch_size,
        )
        rows = [{**at_threshold(drawn.y, p, self.decision), **r}
                for r, p in zip(rows, scores, strict=True)]  # fmt: skip
        return {"n": len(drawn.y), "subset": drawn.subset, "draws": b.noise_draws, "rows": rows,
                "eps_half": eps_half(rows), "command": self.command()}  # fmt: skip

    def snr_noise(self) -> dict[str, Any]:
        """Speech: white noise at the budget's SNRs on the attacked clips (`speech.noise_rows`)."""
        b = self.budget
        drawn = self.attacked()
        rows, scores = speech.noise_rows(self.model, drawn.x, drawn.y, b.snr_db, seed=self.seed,
                                         batch_size=b.batch_size)  # fmt: skip
        rows = [{**at_threshold(drawn.y, p, self.decision), **r}
                for r, p in zip(rows, scores, strict=True)]  # fmt: skip
        return {"n": len(drawn.y), "subset": drawn.subset, "rows": rows,
                "reference_snr_db": SPEECH_REFERENCE_SNR, "command": self.command()}  # fmt: skip

    def transfer(self, log: Log) -> dict[str, Any]:
        """PGD L-inf crafted on the surrogate run (trained first when none was given)."""
        sur = self.surrogate
        trained = sur is None
        if sur is None:
            from deepshield.runs.training import run_training

            cfg = self._surrogate_config()
            log(f"[audit]   training the surrogate {cfg.model} {cfg.model_kwargs} ...")
            self.run.claim(f"{self.surrogate_dir().name}/")  # the run owns its surrogate's folder
            with full_precision(self.device):  # trained in its config's precision, not --amp's
                sur = run_training(cfg, self.surrogate_dir())
        item = self.sweep("transfer", self._pgd("linf"), self.budget.n, surrogate=sur)
        metrics = sur.read_json("metrics.json")
        item["surrogate"] = {
            "run": str(sur.path),
            "model": sur.read_json("model.json")["name"],
            "trained_here": trained,
            "test_accuracy": metrics.get("test", {}).get("accuracy"),
            "command": f"deepshield train --config {sur.file('config.yaml')} --out {sur.path}"
            if trained
            else None,
        }
        return item

    def surrogate_dir(self) -> Path:
        """Where the surrogate trained for this budget lives (and is reused)."""
        return self.run.path / f"audit_surrogate_{self.budget.name}"

    def _surrogate_config(self) -> TrainConfig:
        """The run's config with a simplenet (speech: mel_cnn) of the budget's widths (same seed:
        same split), fewer epochs and no defence, trained from scratch (a run fine-tuned from
        --init gets the default learning rate); another seed where that is the run's own
        model."""
        widths, epochs = list(self.budget.surrogate_widths), self.budget.surrogate_epochs
        model = "mel_cnn" if self.modality == "audio" else "simplenet"
        same = self.cfg.model == model and self.cfg.model_kwargs.get("widths") == widths
        update = {
            "name": None,
            "model": model,
            "model_kwargs": {"widths": widths},
            "epochs": min(self.cfg.epochs or epochs, epochs),  # a `-e 0` run: the budget's
            "adv_train": "none",
            "lipschitz": 0.0,
            "device": str(self.device),
            "seed": self.cfg.seed + 1 if same else self.cfg.seed,
            "init": None,
        }
        if self.cfg.init is not None:
            update["lr"] = TrainConfig.model_fields["lr"].default
        return TrainConfig.model_validate({**self.cfg.model_dump(), **update})

    def explanations(self) -> dict[str, Any]:
        """The Grad-CAM sanity check (explain_run; in float32, as `deepshield explain` makes it)
        and (images) the grid of fakes passing under attack (PGD under the audit's --amp)."""
        from deepshield.runs.explain import explain_run

        b = self.budget
        with full_precision(self.device):
            summary = explain_run(
                self.run,
                "grad_cam",
                dataset=self.dataset,
                data_kwargs=self.data_kwargs,
                n=b.grid_fakes,
                max_samples=b.explain_samples,
                sanity_samples=b.sanity_samples,
                sanity_repeats=b.sanity_repeats,
                seed=self.seed,
                device=self.device,
                splits=self.data.splits,  # loaded once with the run (the same dataset and options)
                model=self.model,
            )
        grid, info = self._evasion_grid()
        san = summary["sanity"]
        command = (
            f"deepshield explain {self.run.path} --method gradcam --n {b.grid_fakes} "
            f"--max-samples {b.explain_samples} --sanity-samples {b.sanity_samples} "
            f"--sanity-repeats {b.sanity_repeats} --seed {self.seed}{self._data_flags()}"
        )
        file = f"explain_{summary['tag']}.json"
        return {
            "file": file,
            "files": [file] + ([grid] if grid else []),
            "sanity": {k: san[k] for k in SANITY_KEYS},
            "evasion": info,
            "grid": grid,
            "command": command,
        }

    def _evasion_grid(self) -> tuple[str | None, dict[str, Any]]:
        """(plots/audit_evasion_gradcam.png or None, counts): Grad-CAM of fakes that pass as real
        under PGD L-inf at the sweep's eps_half (images only)."""
        if self.modality == "audio":
            return None, {"skipped": "the evasion grid is drawn for image detectors only"}
        b = self.budget
        eps = self.items.get("pgd_linf", {}).get("eps_half") or max(b.eps_linf)
        drawn = self.attacked()
        fig, info = evasion_grid(
            self.model, drawn.x, drawn.y, eps,
            k=b.grid_fakes, steps=b.steps, seed=self.seed, batch_size=b.batch_size,
        )  # fmt: skip
        if fig is None:
            return None, info
        self.run.save_plot(fig, "audit_evasion_gradcam")
        return "plots/audit_evasion_gradcam.png", info

    # -- the whole audit ----------------------------------------------------------------------
    def steps(self, log: Log) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
        """(item, function computing it) in the order the audit runs them. A new item (e.g. a
        processing grid) is one more (key, function) here and one row in `card.CARD_ROWS`."""
        b = self.budget
        keys = [k for k in SWEEP_KEYS if k in b.attacks and (k != "autoattack" or b.autoattack)]
        noise: list[tuple[str, Callable[[], dict[str, Any]]]] = [("noise", self.noise)]
        if b.snr_db:
            noise.append(("snr_noise", self.snr_noise))
        return [
            ("clean", self.clean),
            *((k, lambda k=k: self.white_box(k)) for k in keys),
            *([("masking_rerun", self.masking_rerun)] if b.rerun else []),
            *noise,
            ("transfer", lambda: self.transfer(log)),
            ("explanations", self.explanations),
            (
                "everyday",
                lambda: run_grid(
                    self.run,
                    "quick",
                    n=self.budget.n,
                    seed=self.seed,
                    device=str(self.device),
                    dataset=self.dataset,
                    data_kwargs=self.data_kwargs,
                ),
            ),
        ]

    def curves(self) -> dict[str, Any]:
        """{plots/audit_<norm>.png: figure} of fakes passed as real vs eps, per norm with sweeps."""
        out = {}
        for norm, keys in (("linf", (*LINF_ATTACKS, "noise", "transfer")), ("l2", L2_ATTACKS)):
            fig = curves_figure(self.items, keys, norm, self.modality)
            if fig is not None:
                out[f"plots/audit_{norm}.png"] = fig
        return out

    def record(self, curves: list[str]) -> dict[str, Any]:
        """audit.json: settings, the items so far, the masking checks and the card."""
        sweeps = {k: self.items[k].get("rows") for k in (*SWEEP_KEYS, "noise", "transfer")
                  if k in self.items}  # fmt: skip
        n = min(self.budget.n, len(self.data.y))  # images attacked
        checks = masking_checks(sweeps, n, self.items.get("masking_rerun"))
        self.items["masking"] = {"checks": [c.to_dict() for c in checks]}
        grid = self.items.get("explanations", {}).get("grid")
        return {
            "run": str(self.run.path),
            "model": self.run.read_json("model.json")["name"],
            "dataset": self.data.dataset,
            "modality": self.modality,
            "budget": self.budget.to_dict(),
            "seed": self.seed,
            "n_attacked": n,
            "subset": next((v["subset"] for v in self.items.values() if "subset" in v), None),
            "settings": self.settings(),
            "command": self.command(),
            "seconds": round(sum(v.get("seconds", 0.0) for v in self.items.values()), 1),
            "card": score_card(self.items, self.budget.reference, self.budget.note),
            "items": self.items,
            "figures": [*self.items.get("clean", {}).get("plots", []), *curves]
            + ([grid] if grid else []),
        }

    def save(self) -> dict[str, Any]:
        """Write audit.json (the items so far); return it."""
        audit = self.record([])
        self.run.write_json(AUDIT_FILE, audit)
        return audit

    def write_card(self) -> dict[str, Any]:
        """Write the curves, audit.json and the report section; return audit.json's content."""
        curves = self.curves()
        for path, fig in curves.items():
            self.run.save_plot(fig, Path(path).stem)
        audit = self.record(list(curves))
        self.run.write_json(AUDIT_FILE, audit)
        title = f"Robustness audit ({self.budget.name} budget): report card"
        self.run.add_section("audit", title, card_html(audit), order=5)
        return audit

    def execute(self, log: Log = print, force: bool = False) -> dict[str, Any]:
        """Run the missing steps in order, writing audit.json after each; then the card (also
        when a step raises); return audit.json's content. report.html is built once, at the end;
        the final marker follows it when every item has its result."""
        self.resume(force)
        self.run.set_done(DONE, False)  # complete again only once every artifact is rewritten
        with one_report(self.run.path):
            try:
                for key, step in self.steps(log):
                    if key in self.items:
                        log(f"[audit] {key}: kept from {self.run.file(AUDIT_FILE)}")
                        continue
                    log(f"[audit] {key} ...")
                    t0 = time.perf_counter()
                    try:
                        with autocast(self.amp, self.device):
                            self.items[key] = step()
                    except DeepshieldError as e:
                        self.items[key] = {"error": str(e)}
                        log(f"[audit]   {key} failed: {e}")
                    self.items[key]["seconds"] = round(time.perf_counter() - t0, 1)
                    self.save()
            finally:
                audit = self.write_card()
        if not any("error" in v for v in self.items.values()):
            self.run.set_done(DONE)
        return audit


def audit_run(
    run_dir: str | Path,
    *,
    budget: str | AuditBudget = "quick",
    dataset: str | None = None,
    data_kwargs: Mapping[str, Any] | None = None,
    surrogate: str | Path | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    amp: str = "off",
    force: bool = False,
    log: Log = print,
) -> dict[str, Any]:
    """Audit the detector of `run_dir` (module docstring); return what audit.json holds.

    Bad arguments (budget name, run folders, dataset) raise before any attack runs.
    """
    audit = Audit(
        run_dir,
        budget=budget,
        dataset=dataset,
        data_kwargs=data_kwargs,
        surrogate=surrogate,
        seed=seed,
        device=device,
        amp=amp,
    )
    return audit.execute(log, force)
