"""How forwards run on a device: mixed precision (`--amp off|bf16|fp16`, torch.autocast around
forward passes and losses) and the channels-last memory format of image models
(`--channels-last`).

bf16 runs on CPUs and GPUs; fp16 needs CUDA and a GradScaler when training (its small range
underflows gradients), so it is refused elsewhere. Inputs, weights, optimiser state and attack
iterates stay float32; autocast only runs the matmul/conv-type ops in the lower precision.
Commands enter `autocast` once around their work; code below them that records or keys its
results by precision reads the mode in effect with `ambient_amp`.

Channels-last (NHWC strides) changes how 4-D weights and activations lie in memory, not their
values: convolutions on a GPU (cuDNN, tensor cores) and on oneDNN CPUs may run faster; results
equal the contiguous format's within float rounding. It applies to image models (samples
[C,H,W]); speech models (samples [T], 1-D waveforms) are left as they are.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from deepshield.errors import ConfigError

AMP_MODES = ("off", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_amp(amp: str, device: torch.device | str) -> None:
    """ConfigError (one line) unless `amp` is one of AMP_MODES and runs on `device`."""
    if amp not in AMP_MODES:
        raise ConfigError(
            f"--amp {amp!r} is not one of {', '.join(AMP_MODES)}: use e.g. --amp bf16"
        )
    kind = torch.device(device).type
    if amp == "fp16" and kind != "cuda":
        raise ConfigError(
            f"--amp fp16 needs a CUDA device (the device is {kind}): use --amp bf16 or --amp off"
        )


def autocast(amp: str, device: torch.device | str) -> AbstractContextManager[object]:
    """A context running forwards in `amp` precision on `device`'s type (nothing for off)."""
    check_amp(amp, device)
    if amp == "off":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=_DTYPES[amp])


def full_precision(device: torch.device | str) -> AbstractContextManager[object]:
    """A context with autocast off on `device`'s type, when it is on (float32 work inside an
    autocast region: an attack's step and projection, a model trained in its own precision)."""
    kind = torch.device(device).type
    return torch.autocast(kind, enabled=False) if torch.is_autocast_enabled(kind) else nullcontext()


def ambient_amp(device: torch.device | str) -> str:
    """The `--amp` mode in effect on `device`'s type: "off", or the autocast's "bf16" / "fp16"."""
    kind = torch.device(device).type
    if not torch.is_autocast_enabled(kind):
        return "off"
    dtype = torch.get_autocast_dtype(kind)
    return next((k for k, v in _DTYPES.items() if v == dtype), str(dtype))


def precision_flags(amp: str, channels_last: bool = False) -> str:
    """The --amp and --channels-last flags a reproducing command needs (none for float32 and
    the contiguous format), each with a leading space."""
    return ("" if amp == "off" else f" --amp {amp}") + (" --channels-last" if channels_last else "")


def grad_scaler(amp: str, device: torch.device | str) -> torch.amp.GradScaler | None:
    """The loss scaler fp16 training needs (None for off and bf16, whose range is float32's)."""
    check_amp(amp, device)
    return torch.amp.GradScaler(torch.device(device).type) if amp == "fp16" else None


def _channels_last_inputs(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: each 4-D tensor argument in channels-last (a differentiable copy)."""
    return tuple(
        a.contiguous(memory_format=torch.channels_last)
        if isinstance(a, torch.Tensor) and a.dim() == 4
        else a
        for a in args
    )


def use_channels_last(model: nn.Module, on: bool, sample_shape: tuple[int, ...]) -> bool:
    """With `on` and image samples (`sample_shape` [C,H,W]): the model's 4-D weights moved to
    channels-last in place, and its 4-D inputs converted by a forward pre-hook (so every caller,
    training loop, evaluation or attack, feeds it NHWC). Speech samples ([T]) and `on` False:
    nothing changes. -> whether the model is now channels-last."""
    if not on or len(sample_shape) != 3:
        return False
    model.to(memory_format=torch.channels_last)
    model.register_forward_pre_hook(_channels_last_inputs)
    return True
