"""A run folder: `runs/<name>/` with config.yaml, history.json, metrics.json, best.safetensors,
model.json, plots/*.png, sections/*.html and report.html. All writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from deepshield.errors import RunError
from deepshield.files import atomic_save_figure, atomic_write_text, write_json


class RunDir:
    """One run's folder; every capability reads and writes its results through this."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path) -> RunDir:
        """Create (or reuse, for resuming) a run folder."""
        run = cls(path)
        run.path.mkdir(parents=True, exist_ok=True)
        (run.path / "plots").mkdir(exist_ok=True)
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """Open an existing run folder; RunError when it is not one."""
        run = cls(path)
        if not run.path.is_dir():
            raise RunError(f"{run.path}: no such run folder; train one with `deepshield train`")
        if not (run.path / "model.json").is_file():
            raise RunError(
                f"{run.path}: not a deepshield run (model.json missing); "
                "pass a folder written by `deepshield train`"
            )
        return run

    # -- files ------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    def exists(self, name: str) -> bool:
        return (self.path / name).is_file()

    def write_json(self, name: str, obj: Any) -> Path:
        return write_json(self.path / name, obj)

    def read_json(self, name: str) -> Any:
        p = self.path / name
        try:
            return json.loads(p.read_text())
        except FileNotFoundError as e:
            raise RunError(f"{p}: missing; the run may be incomplete (re-run its command)") from e
        except json.JSONDecodeError as e:
            raise RunError(f"{p}: corrupt JSON ({e.msg}); delete it and re-run its command") from e

    def write_yaml(self, name: str, obj: Any) -> Path:
        return atomic_write_text(self.path / name, yaml.safe_dump(obj, sort_keys=False))

    def read_yaml(self, name: str) -> Any:
        p = self.path / name
        if not p.is_file():
            raise RunError(f"{p}: missing; the run may be incomplete (re-run its command)")
        return yaml.safe_load(p.read_text())

    def save_plot(self, fig: Any, name: str) -> Path:
        """Save a matplotlib figure as plots/<name>.png and close it."""
        import matplotlib.pyplot as plt

        path = atomic_save_figure(fig, self.path / "plots" / f"{name}.png")
        plt.close(fig)
        return path

    # -- model ------------------------------------------------------------------------------
    def save_model(self, model: nn.Module, name: str = "best") -> Path:
        """Weights as <name>.safetensors; the spec to rebuild it as model.json."""
        from deepshield.models import save_weights

        spec = getattr(model, "deepshield_spec", None)
        if spec is None:
            raise RunError("model was not built by deepshield.models.create; cannot save its spec")
        if not self.exists("model.json"):
            self.write_json("model.json", spec)
        return save_weights(model, self.path / f"{name}.safetensors")

    def weights_sha256(self, name: str = "best") -> str:
        """SHA-256 (hex) of <name>.safetensors: identifies the weights a result was made from."""
        return hashlib.sha256(self.file(f"{name}.safetensors").read_bytes()).hexdigest()

    def load_model(self, name: str = "best") -> nn.Module:
        """Rebuild the model from model.json and load <name>.safetensors (strict)."""
        from deepshield.models import create, load_weights

        spec = self.read_json("model.json")
        weights = self.path / f"{name}.safetensors"
        if not weights.is_file():
            raise RunError(f"{weights}: missing; the run has no '{name}' checkpoint yet")
        model = create(spec["name"], num_classes=spec["num_classes"], **spec.get("kwargs", {}))
        return load_weights(model, weights).eval()

    # -- report -----------------------------------------------------------------------------
    def add_section(self, key: str, title: str, html: str, order: int = 50) -> Path:
        """Add or replace the report section `key` (HTML fragment) and rebuild report.html."""
        from deepshield.report.html import build_report

        header = f"<!-- order: {order} -->\n<!-- title: {title} -->\n"
        path = atomic_write_text(self.path / "sections" / f"{key}.html", header + html)
        build_report(self)
        return path
