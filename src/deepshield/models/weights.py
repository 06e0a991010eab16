"""Load and save weights: safetensors, .pth/.pt through torch.load(weights_only=True), Keras .h5.

A Keras HDF5 weight file (`model.save_weights` or `model.save`, Keras 2) is read with h5py into
`{"<layer>/<weight>": tensor}` in the file's layer order, Keras layouts unchanged; an architecture
ported from Keras maps it with `keras_state_dict` in its `remap_state_dict`.

Files from torchvision / timm (bare keys) load into a `Normalized` model (keys under `net.`);
an architecture may declare `remap_state_dict(sd) -> sd` for official checkpoints whose layout
differs (documented in its module). Mismatches raise ModelError listing what did not match.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import nn

from deepshield.errors import ModelError
from deepshield.files import atomic_write_bytes

_KERAS_SUFFIXES = (".h5", ".hdf5")
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "G", "generator")


def _reason(e: Exception) -> str:
    """The informative line of a load error (torch's weights-only refusal names the global)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in str(e).splitlines()]
    lines = [ln for ln in lines if ln]
    line = next((ln for ln in lines if "WeightsUnpickler error" in ln), lines[0] if lines else "")
    return line.split(". Please")[0][:200]


def read_keras_h5(path: str | Path) -> dict[str, torch.Tensor]:
    """Keras HDF5 weights -> {"<layer>/<weight>": tensor}, layers in the file's (Keras load) order.

    Only arrays named by the `layer_names` / `weight_names` attributes are read (never pickles).
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            group = f.get("model_weights", f)
            if "layer_names" not in group.attrs:
                raise ModelError(
                    f"{path}: HDF5 file without Keras `layer_names`; pass a Keras 2 weights "
                    "file (model.save_weights / model.save); Keras 3 `.weights.h5` is not read"
                )
            out: dict[str, torch.Tensor] = {}
            for layer in (_text(n) for n in group.attrs["layer_names"]):
                for weight in (_text(n) for n in group[layer].attrs["weight_names"]):
                    value = group[layer][weight][()]
                    out[f"{layer}/{weight.rsplit('/', 1)[-1]}"] = torch.from_numpy(value)
            return out
    except ModelError:
        raise
    except Exception as e:  # not HDF5, truncated, a name listed but absent, ...
        raise ModelError(
            f"{path}: cannot read Keras HDF5 weights ({type(e).__name__}: {_reason(e)}); "
            "pass the .h5 file Keras wrote, unchanged"
        ) from e


def _text(name: bytes | str) -> str:
    """An HDF5 attribute string (bytes in Keras 2 files) as str."""
    return name.decode("utf8") if isinstance(name, bytes) else str(name)


def _keras_layers(sd: dict[str, torch.Tensor]) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """{"<layer>/<weight>:0": t} -> [(layer, {"<weight>": t})] in the dict's order."""
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        layer, weight = key.rsplit("/", 1)
        layers.setdefault(layer, {})[weight.split(":")[0]] = value
    return list(layers.items())


def _keras_to_torch(
    module: nn.Module, weights: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor] | str:
    """One Keras layer's weights in `module`'s layout, or why they cannot be.

    Conv2D kernel [kh, kw, in, out] -> weight [out, in, kh, kw]; Dense kernel [in, out] ->
    weight [out, in]; BatchNormalization gamma/beta/moving_mean/moving_variance -> weight/bias/
    running_mean/running_var (num_batches_tracked set to 0; epsilon is not stored in the file).
    """
    names = set(weights)
    if (
        isinstance(module, nn.Conv2d)
        and names == {"kernel", "bias"}
        and weights["kernel"].ndim == 4
    ):
        return {"weight": weights["kernel"].permute(3, 2, 0, 1), "bias": weights["bias"]}
    if (
        isinstance(module, nn.Linear)
        and names == {"kernel", "bias"}
        and weights["kernel"].ndim == 2
    ):
        return {"weight": weights["kernel"].t(), "bias": weights["bias"]}
    if isinstance(module, nn.BatchNorm2d) and names == {
        "gamma",
        "beta",
        "moving_mean",
        "moving_variance",
    }:
        return {
            "weight": weights["gamma"],
            "bias": weights["beta"],
            "running_mean": weights["moving_mean"],
            "running_var": weights["moving_variance"],
            "num_batches_tracked": torch.tensor(0),
        }
    found = ", ".join(f"{k} {tuple(v.shape)}" for k, v in weights.items())
    return f"{type(module).__name__} cannot take Keras weights [{found}]"


def keras_state_dict(
    model: nn.Module, sd: dict[str, torch.Tensor], layers: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    """Keras weights (as `read_keras_h5` returns them) -> `model`'s state dict, strictly.

    `layers` are the dotted paths of `model`'s weighted modules in Keras's load order (the order
    of the file's layers that hold weights). ModelError lists every layer whose count, kind or
    shape does not match.
    """
    file_layers = _keras_layers(sd)
    problems = []
    if len(file_layers) != len(layers):
        problems.append(f"file has {len(file_layers)} weighted layers, model {len(layers)}")
    modules = dict(model.named_modules())
    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for path, (layer, weights) in zip(layers, file_layers, strict=False):
        mapped = _keras_to_torch(modules[path], weights)
        if isinstance(mapped, str):
            problems.append(f"{layer} -> {path}: {mapped}")
            continue
        for name, value in mapped.items():
            key = f"{path}.{name}"
            if value.shape != own[key].shape:
                problems.append(
                    f"{layer} -> {key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}"
                )
            out[key] = value.contiguous()
    if problems:
        raise ModelError(
            f"Keras weights do not fit {type(model).__name__}: {'; '.join(problems)}; "
            "check that the file was saved from the same architecture"
        )
    return out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors, .pth/.pt/.ckpt/.bin (weights_only) or Keras .h5."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(
            f"{path}: weights file not found; pass the path of a .safetensors, .pth or .h5 file"
        )
    if path.suffix.lower() in _KERAS_SUFFIXES:
        return read_keras_h5(path)
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path), device="cpu")
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickle with forbidden globals, ...
        raise ModelError(
            f"{path}: cannot read weights ({type(e).__name__}: {_reason(e)}); deepshield reads "
            "only safetensors or weights-only torch files: save torch.save(model.state_dict())"
        ) from e
    for key in _WRAPPER_KEYS:  # unwrap {"state_dict": {...}} style checkpoints
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path}: not a state dict of tensors; save one with model.state_dict()")
    return obj


def _fit_keys(model: nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a file's keys onto `model`, bare or `Normalized` (keys under `net.`), either way.

    The architecture's `remap_state_dict` (if any) sees bare architecture keys.
    """
    wrapped = hasattr(model, "net") and hasattr(model, "normalize")
    target = model.net if wrapped else model
    bare = target.state_dict()
    if not any(k in bare for k in sd) and all(k.startswith("net.") for k in sd):
        sd = {k[len("net.") :]: v for k, v in sd.items()}  # saved from a Normalized model
    remap = getattr(target, "remap_state_dict", None)
    if callable(remap):
        sd = remap(sd)
    return {"net." + k: v for k, v in sd.items()} if wrapped else sd


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load the weights in `path` into `model` (in place) and return it.

    Floating tensors are cast to the model's dtype (fixtures store float16).
    """
    sd = read_state_dict(path)
    try:
        sd = _fit_keys(model, sd)
    except ModelError as e:  # an architecture's remap refusing the file: name the file
        raise ModelError(f"{path}: {e}") from None
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    if shapes or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:2])})")
        raise ModelError(
            f"{path}: weights do not fit the model: {'; '.join(parts)}; "
            "check the model name and num_classes the file was saved with"
        )
    cast = {
        k: (v.to(own[k].dtype) if v.is_floating_point() else v) for k, v in sd.items() if k in own
    }
    model.load_state_dict(cast, strict=strict)
    return model


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Save `model.state_dict()` as safetensors, atomically."""
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return atomic_write_bytes(path, save(sd))
