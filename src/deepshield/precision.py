"""Mixed precision (`--amp off|bf16|fp16`): torch.autocast around forward passes and losses.

bf16 runs on CPUs and GPUs; fp16 needs CUDA and a GradScaler when training (its small range
underflows gradients), so it is refused elsewhere. Inputs, weights, optimiser state and attack
iterates stay float32; autocast only runs the matmul/conv-type ops in the lower precision.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

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


def grad_scaler(amp: str, device: torch.device | str) -> torch.amp.GradScaler | None:
    """The loss scaler fp16 training needs (None for off and bf16, whose range is float32's)."""
    check_amp(amp, device)
    return torch.amp.GradScaler(torch.device(device).type) if amp == "fp16" else None
