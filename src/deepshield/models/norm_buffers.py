"""Running statistics of norm layers in weight files from older PyTorch versions.

Files saved before PyTorch 0.4.1 lack `num_batches_tracked`; files saved before 0.4.0 carry
`running_mean` / `running_var` for InstanceNorm layers that no longer track them. Both are the
only differences between such a file and today's layout, so a generator's `remap_state_dict`
fills in or drops exactly those buffers, per layer, and nothing else.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

_STATS = ("running_mean", "running_var", "num_batches_tracked")


def fit_norm_buffers(model: nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`sd` with norm-layer buffers matched to `model`: a missing counter is added as 0,
    running statistics of layers that do not track them are dropped."""
    out = dict(sd)
    for name, module in model.named_modules():
        if not isinstance(module, _NormBase):
            continue
        prefix = f"{name}." if name else ""
        if module.track_running_stats:
            counter = prefix + "num_batches_tracked"
            if prefix + "running_mean" in out and counter not in out:
                out[counter] = torch.tensor(0, dtype=torch.long)
        else:
            for stat in _STATS:
                out.pop(prefix + stat, None)
    return out
