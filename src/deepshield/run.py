"""A run folder: `runs/<name>/` with config.yaml, history.json, metrics.json, best.safetensors,
model.json, plots/*.png, sections/*.html and report.html. All writes are atomic.

A run folder owns only what it wrote: manifest.json lists every file (or folder, ending in "/")
that deepshield wrote there, claimed before it is written, so a crash never leaves an unlisted
output. `open_run` is the one resume-or-force rule of every command: a new or empty folder
starts a run; the same command with the same config resumes (or is complete when its final
marker is set); `force` removes the listed files and nothing else; a folder holding files
deepshield did not write (and no run of it) is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from torch import Tensor, nn

from deepshield.errors import ConfigError, RunError
from deepshield.files import atomic_save_figure, atomic_write_bytes, atomic_write_text, write_json

C = TypeVar("C", bound=BaseModel)

MANIFEST = "manifest.json"
_TEMP = re.compile(r"^\..+\.tmp$")  # an atomic write cut short (files.atomic_write_bytes)
_PLAIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=+,-]*$")


def is_run_folder(path: Path) -> bool:
    """True when `path` holds a manifest.json written by deepshield (a run or scan folder)."""
    try:
        return "deepshield_run" in json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError, TypeError):
        return False


def check_name(name: str, flag: str = "--out") -> str:
    """`name` when it is a plain artifact name (no path separators, no `..`); ConfigError else."""
    if not _PLAIN.fullmatch(name) or ".." in name:
        raise ConfigError(
            f"{flag} {name!r}: an artifact name must be a plain name (letters, digits, _ . - =), "
            "not a path; it is written inside the run folder"
        )
    return name


def file_tag(text: str) -> str:
    """A dataset spec or path as a piece of an artifact name: runs of other characters than
    letters, digits and _ . - become one "_" ("../x/faces" -> ".._x_faces")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _relative(name: str) -> str:
    """A path inside a run folder ("a.json", "plots/a.png"); RunError for one that leaves it."""
    p = PurePosixPath(name)
    if not name or p.is_absolute() or "\\" in name or any(s in ("", ".", "..") for s in p.parts):
        raise RunError(
            f"{name!r}: not a file name inside the run folder (no '..', no absolute path)"
        )
    return p.as_posix()


def _owned(name: str, owned: set[str]) -> bool:
    """True when `name` is in `owned` or inside one of its folders (names ending in "/")."""
    return name in owned or any(d.endswith("/") and name.startswith(d) for d in owned)


class RunDir:
    """One run's folder; every capability reads and writes its results through this."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._claimed: set[str] = set()

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path) -> RunDir:
        """Create (or reuse, for resuming) a run folder."""
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise RunError(f"{run.path}: is a file, not a folder; pass a folder for the run")
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
        run.read_dict("model.json", ("name", "num_classes"))
        return run

    # -- files ------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        """The path of `name` inside the folder (for reading; `output` for writing)."""
        return self.path / _relative(name)

    def output(self, name: str) -> Path:
        """The path to write `name` to, claimed in the manifest first (a folder: end with "/")."""
        self.claim(name)
        return self.path / _relative(name.rstrip("/"))

    def exists(self, name: str) -> bool:
        return (self.path / name).is_file()

    def write_json(self, name: str, obj: Any) -> Path:
        return write_json(self.output(name), obj)

    def read_json(self, name: str) -> Any:
        p = self.file(name)
        try:
            return json.loads(p.read_text())
        except FileNotFoundError as e:
            raise RunError(f"{p}: missing; the run may be incomplete (re-run its command)") from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunError(f"{p}: damaged (not valid JSON); {_REBUILD}") from e

    def read_dict(self, name: str, keys: tuple[str, ...] = ()) -> dict[str, Any]:
        """read_json for a file that must hold a JSON object with `keys`; RunError naming it."""
        obj = self.read_json(name)
        if not isinstance(obj, dict) or any(k not in obj for k in keys):
            need = f" with {', '.join(keys)}" if keys else ""
            raise RunError(f"{self.file(name)}: damaged (not a JSON object{need}); {_REBUILD}")
        return obj

    def write_yaml(self, name: str, obj: Any) -> Path:
        return atomic_write_text(self.output(name), yaml.safe_dump(obj, sort_keys=False))

    def read_yaml(self, name: str) -> Any:
        p = self.file(name)
        if not p.is_file():
            raise RunError(f"{p}: missing; the run may be incomplete (re-run its command)")
        try:
            obj = yaml.safe_load(p.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise RunError(f"{p}: damaged (not valid YAML); {_REBUILD}") from e
        if not isinstance(obj, dict):
            raise RunError(f"{p}: damaged (not a mapping of settings); {_REBUILD}")
        return obj

    def read_config(self, cls: type[C], name: str = "config.yaml") -> C:
        """The run's recorded config (config.yaml) validated as `cls`; one line naming the file."""
        from deepshield.config import parse_config

        return parse_config(self.read_yaml(name), cls, str(self.file(name)))

    def save_plot(self, fig: Any, name: str) -> Path:
        """Save a matplotlib figure as plots/<name>.png and close it."""
        import matplotlib.pyplot as plt

        path = atomic_save_figure(fig, self.output(f"plots/{name}.png"))
        plt.close(fig)
        return path

    # -- what the run wrote -----------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """{"command", "files", "done"} of manifest.json, or an empty one when absent."""
        p = self.path / MANIFEST
        if not p.is_file():
            return {"command": None, "files": [], "done": []}
        try:
            m = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunError(f"{p}: damaged (not valid JSON); {_NO_MANIFEST}") from e
        if not isinstance(m, dict) or not isinstance(m.get("files"), list):
            raise RunError(f"{p}: damaged (no file list); {_NO_MANIFEST}")
        return {"command": m.get("command"), "files": m["files"], "done": m.get("done", [])}

    def _write_manifest(self, m: Mapping[str, Any]) -> None:
        m = {**m, "files": sorted(set(m["files"]))}
        write_json(self.path / MANIFEST, {"deepshield_run": 1, **m})

    def claim(self, *names: str) -> None:
        """Record `names` (paths inside the folder; folders end in "/") as written by deepshield;
        a name inside a folder already claimed is owned with it (the manifest is not rewritten)."""
        new = [_relative(n.rstrip("/")) + ("/" if n.endswith("/") else "") for n in names]
        new = [n for n in new if not _owned(n, self._claimed)]
        if not new:
            return
        m = self.manifest()
        listed = set(m["files"])
        missing = [n for n in new if not _owned(n, listed)]
        if missing:
            self.path.mkdir(parents=True, exist_ok=True)
            self._write_manifest({**m, "files": m["files"] + missing})
        self._claimed.update(new)

    def foreign(self) -> list[str]:
        """Files in the folder that deepshield did not write (relative paths, sorted)."""
        owned = set(self.manifest()["files"])
        dirs = tuple(n for n in owned if n.endswith("/"))
        out = []
        for p in sorted(self.path.rglob("*")):
            rel = p.relative_to(self.path).as_posix()
            if p.is_dir() or rel == MANIFEST or rel in owned or _TEMP.match(p.name):
                continue
            if not rel.startswith(dirs):
                out.append(rel)
        return out

    def is_done(self, step: str) -> bool:
        """True when `step` (a command or an artifact) wrote its final marker."""
        return step in self.manifest()["done"]

    def set_done(self, step: str, done: bool = True) -> None:
        """Write (or clear, before rewriting its artifacts) the final marker of `step`."""
        m = self.manifest()
        steps = [s for s in m["done"] if s != step] + ([step] if done else [])
        if steps != m["done"]:
            self._write_manifest({**m, "done": steps})

    def remove_owned(self) -> None:
        """Delete every file the manifest lists (and temp files of cut writes); keep the rest."""
        m = self.manifest()
        parents = {self.path / "plots"}
        for name in m["files"]:
            p = self.path / name.rstrip("/")
            parents.update(q for q in p.parents if self.path in q.parents)
            if p.is_dir() and (p / MANIFEST).is_file():  # a run of its own inside this one
                RunDir(p).remove_owned()
                parents.add(p)
            elif p.is_dir() and name.endswith("/"):
                shutil.rmtree(p)
            elif p.is_file():
                p.unlink()
        for p in self.path.rglob(".*.tmp"):
            p.unlink()
        for p in sorted(parents, key=lambda q: -len(q.parts)):  # folders it made, when empty
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        self._claimed.clear()
        self._write_manifest({"command": m["command"], "files": [], "done": []})

    # -- model ------------------------------------------------------------------------------
    def save_model(
        self, model: nn.Module, name: str = "best", state: Mapping[str, Tensor] | None = None
    ) -> Path:
        """Weights (`state`, default the model's own) as <name>.safetensors; the spec to rebuild
        the model as model.json."""
        from safetensors.torch import save

        spec = getattr(model, "deepshield_spec", None)
        if spec is None:
            raise RunError("model was not built by deepshield.models.create; cannot save its spec")
        if not self.exists("model.json"):
            self.write_json("model.json", spec)
        state = model.state_dict() if state is None else state
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        return atomic_write_bytes(self.output(f"{name}.safetensors"), save(tensors))

    def weights_sha256(self, name: str = "best") -> str:
        """SHA-256 (hex) of <name>.safetensors: identifies the weights a result was made from."""
        return hashlib.sha256(self.file(f"{name}.safetensors").read_bytes()).hexdigest()

    def load_model(self, name: str = "best") -> nn.Module:
        """Rebuild the model from model.json and load <name>.safetensors (strict)."""
        from deepshield.models import create, load_weights

        spec = self.read_dict("model.json", ("name", "num_classes"))
        weights = self.path / f"{name}.safetensors"
        if not weights.is_file():
            raise RunError(f"{weights}: missing; the run has no '{name}' checkpoint yet")
        kwargs = spec.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise RunError(
                f"{self.file('model.json')}: damaged (kwargs is not a mapping); {_REBUILD}"
            )
        model = create(spec["name"], num_classes=spec["num_classes"], **kwargs)
        return load_weights(model, weights).eval()

    # -- report -----------------------------------------------------------------------------
    def add_section(self, key: str, title: str, html: str, order: int = 50) -> Path:
        """Add or replace the report section `key` (HTML fragment) and rebuild report.html."""
        from deepshield.report.html import build_report

        header = f"<!-- order: {order} -->\n<!-- title: {title} -->\n"
        path = atomic_write_text(self.output(f"sections/{key}.html"), header + html)
        self.claim("report.html")
        if self.path.resolve() not in _ONE_REPORT:
            build_report(self.path)
        return path


_ONE_REPORT: set[Path] = set()  # folders inside `one_report`: report.html waits for its end


@contextmanager
def one_report(path: str | Path) -> Iterator[None]:
    """Inside, sections added to the run folder `path` are written but report.html is built
    once, on leaving (also after an error): for a command that adds many sections (the audit)."""
    from deepshield.report.html import build_report

    folder = Path(path).resolve()
    _ONE_REPORT.add(folder)
    try:
        yield
    finally:
        _ONE_REPORT.discard(folder)
        if (folder / "sections").is_dir():
            build_report(folder)


_REBUILD = "re-run the command that wrote it with --force (or restore it from a backup)"
_NO_MANIFEST = (
    "deepshield no longer knows which files of this folder it wrote: move what you keep "
    "elsewhere and use a new folder"
)


def _config_dict(config: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(config, BaseModel):
        return config.model_dump(mode="json")
    return json.loads(json.dumps(dict(config)))


def _as_config(saved: Any, config: BaseModel | Mapping[str, Any]) -> Any:
    """A saved config as `config`'s class dumps it, so a setting added to the class since (with
    its default) does not make an older run of the same settings look different."""
    if not isinstance(config, BaseModel) or not isinstance(saved, dict):
        return saved
    try:
        return type(config).model_validate(saved).model_dump(mode="json")
    except ValidationError:
        return saved


def _differences(old: Any, new: Mapping[str, Any]) -> list[str]:
    if not isinstance(old, dict):
        return ["(the whole file)"]
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def open_run(
    path: str | Path,
    command: str,
    config: BaseModel | Mapping[str, Any],
    *,
    force: bool = False,
    config_file: str = "config.yaml",
) -> tuple[RunDir, bool]:
    """Open `path` for `command` with `config`: -> (run, complete). The one resume-or-force rule
    (`check_run`), then `start_run` unless the run is complete."""
    run, complete, replace = check_run(path, command, config, force=force)
    if not complete:
        start_run(run, command, config, replace=replace, config_file=config_file)
    return run, complete


def check_run(
    path: str | Path,
    command: str,
    config: BaseModel | Mapping[str, Any],
    *,
    force: bool = False,
    config_file: str = "config.yaml",
) -> tuple[RunDir, bool, bool]:
    """-> (run, complete, replace), writing nothing: a command checks its inputs (data, model)
    between this and `start_run`, so a bad one leaves the folder as it was.

    A new or empty folder starts a run. A run of `command` with the same config resumes; it is
    complete when its final marker (`RunDir.set_done(command)`) is set. Another config (or
    command) is a RunError unless `force`; then `replace` is True and `start_run` deletes only
    the files the run wrote. A folder holding files deepshield did not write, and no run of it,
    is refused whatever `force` says.
    """
    run = RunDir(path)
    if run.path.exists() and not run.path.is_dir():
        raise RunError(f"{run.path}: is a file, not a folder; pass a folder for the run")
    m = run.manifest()
    want = _config_dict(config)
    saved = run.file(config_file)
    has_manifest = (run.path / MANIFEST).is_file()
    old = _as_config(_saved_config(run, config_file), config) if saved.is_file() else None
    same = m["command"] in (None, command) and old in (None, want)
    started = set(m["files"]) - {config_file}  # only a config: nothing computed to lose
    same = same or (has_manifest and not started and not m["done"])
    if not has_manifest and run.path.is_dir():
        foreign = run.foreign()
        if foreign and not (saved.is_file() and old == want):  # an older run: adopted
            shown = ", ".join(foreign[:5]) + (
                f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
            )
            raise RunError(
                f"{run.path}: holds files deepshield did not write ({shown}); nothing was "
                "changed: choose an empty or new folder"
            )
    elif not same and not force:
        if m["command"] not in (None, command):  # its config and this one share no meaning
            what = f"a `{m['command']}` run (its files would be deleted)"
        else:
            diff = "" if old is None else f" ({', '.join(_differences(old, want))} differ)"
            what = f"a run with another config{diff}"
        raise RunError(
            f"{run.path}: holds {what}; use another --out, or --force to replace what "
            "deepshield wrote there (other files are kept)"
        )
    complete = same and has_manifest and command in m["done"]
    return run, complete, has_manifest and not same


def start_run(
    run: RunDir,
    command: str,
    config: BaseModel | Mapping[str, Any],
    *,
    replace: bool = False,
    config_file: str = "config.yaml",
) -> None:
    """After `check_run`: delete what the run wrote when `replace`, then record `command` and
    save `config` as `config_file` (YAML)."""
    if replace:
        run.remove_owned()
    RunDir.create(run.path)
    run._write_manifest({**run.manifest(), "command": command})
    run.write_yaml(config_file, _config_dict(config))


def _saved_config(run: RunDir, config_file: str) -> Any:
    """The config a folder holds; "(damaged)" when its file is not a YAML mapping."""
    try:
        return run.read_yaml(config_file)
    except RunError:
        return "(damaged)"


def data_options(
    recorded: Mapping[str, Any], dataset: str | None, flags: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The dataset options a command uses: the run's recorded `data_kwargs`, with `--data-arg`
    flags merged over them; with another dataset (`-d`), the flags alone. The one merge rule."""
    return {**({} if dataset else dict(recorded)), **dict(flags or {})}
