"""Load and save weights: safetensors, or .pth/.pt through torch.load(weights_only=True).

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

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "G", "generator")


def _reason(e: Exception) -> str:
    """The informative line of a load error (torch's weights-only refusal names the global)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in str(e).splitlines()]
    lines = [ln for ln in lines if ln]
    line = next((ln for ln in lines if "WeightsUnpickler error" in ln), lines[0] if lines else "")
    return line.split(". Please")[0][:200]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors or .pth/.pt/.ckpt/.bin (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(
            f"{path}: weights file not found; pass the path of a .safetensors or .pth file"
        )
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
