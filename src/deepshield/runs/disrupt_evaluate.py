"""Disrupt a set of images with one setting and measure it (`deepshield disrupt` without --config).

Away from the clean output (target None): distortion of G(x_adv, c) from G(x, c), "% disrupted"
= share of (image, class) pairs with L2 >= threshold. Towards a target (minimal change, e.g. the
input): distortion of G(x_adv, c) from the input x, next to the same for the clean G(x, c).
Without transfer every image is attacked under every class; with transfer once for all classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from deepshield.data.edits import EDITS
from deepshield.disrupt.attack import from_pixels, to_pixels
from deepshield.disrupt.distortion import distortion, mean_distortion
from deepshield.disrupt.tables import Setting, attack, generate, pairs
from deepshield.disrupt.views import is_conditional, one_hot_classes
from deepshield.errors import InputError
from deepshield.report.grids import image_grid
from deepshield.report.html import table
from deepshield.run import RunDir


def parse_classes(text: str, generator: nn.Module) -> Tensor | None:
    """'all' -> the c_dim one-hot classes; 'hair,warm' or '0,2' -> those one-hot classes
    (edit names when c_dim = len(EDITS)); None for an unconditional generator."""
    if not is_conditional(generator):
        return None
    c_dim = generator.c_dim
    eye = one_hot_classes(c_dim)
    if text.strip() == "all":
        return eye
    picked = []
    for part in (p.strip() for p in text.split(",")):
        if part.isdigit() and int(part) < c_dim:
            picked.append(int(part))
        elif part in EDITS and c_dim == len(EDITS):
            picked.append(EDITS.index(part))
        else:
            names = f"{', '.join(EDITS)} or " if c_dim == len(EDITS) else ""
            raise InputError(f"--classes: {part!r} is not a class: use all, {names}0..{c_dim - 1}")
    return eye[picked]


def disrupt_images(
    generator: nn.Module,
    x01: Tensor,
    classes: Tensor | None,
    *,
    method: str = "ifgsm",
    setting: Setting = Setting(),
    transfer: str | None = None,
    target: str | float | None = None,
    part: str = "output",
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """x01: [N, 3, H, W] in [0, 1]; classes [K, c_dim] or None; target None, "input" or a float.

    Returns (summary, tensors): summary has the mean distortion (and the clean baseline when
    towards a target); tensors x, x_adv, c, clean, out over the N K pairs, generator range.
    """
    x = from_pixels(x01, generator.bounds)
    x_all, c_all = pairs(x, classes)
    if transfer is not None:
        if classes is None:
            raise InputError("--transfer needs a conditional generator (stargan, ganimation)")
        once = attack(generator, x, None, method, setting, transfer=transfer, classes=classes,
                      part=part, target=x if target == "input" else target)  # fmt: skip
        x_adv, _ = pairs(once, classes)
    else:
        goal = x_all if target == "input" else target
        x_adv = attack(generator, x_all, c_all, method, setting, target=goal, part=part)
    clean = generate(generator, x_all, c_all, setting.batch_size)
    out = generate(generator, x_adv, c_all, setting.batch_size)
    summary: dict[str, Any] = {
        "method": method,
        "eps": setting.eps,
        "steps": 1 if method == "fgsm" else setting.steps,
        "alpha": setting.eps if method == "fgsm" else setting.alpha or setting.eps / 5,
        "transfer": transfer,
        "target": target,
        "part": part,
        "images": len(x),
        "classes": 1 if classes is None else len(classes),
        "linf": (x_adv - x_all).abs().amax().item(),
    }
    if target is None:
        summary["distortion"] = mean_distortion(distortion(out, clean, setting.threshold))
    else:
        summary["to_input"] = mean_distortion(distortion(out, x_all, setting.threshold))
        summary["to_input_clean"] = mean_distortion(distortion(clean, x_all, setting.threshold))
    tensors = {"x": x_all, "x_adv": x_adv, "c": c_all, "clean": clean, "out": out}
    return summary, tensors


def write_disruption(
    run: RunDir,
    generator: nn.Module,
    summary: dict[str, Any],
    tensors: dict[str, Tensor],
    grid_images: int = 6,
    metrics_file: str = "metrics.json",
) -> Path:
    """`metrics_file`, plots/disrupt_grid.png and a report section; -> the metrics' path."""
    k = summary["classes"]
    n = min(grid_images, summary["images"])
    pick = torch.arange(n) * k + torch.arange(n) % k  # image i under class i mod K
    rows = [
        to_pixels(tensors[name][pick], generator.bounds) for name in ("x", "x_adv", "clean", "out")
    ]
    fig = image_grid(rows, ["input", "disrupted input", "clean output", "disrupted output"])
    run.save_plot(fig, "disrupt_grid")
    path = run.write_json(metrics_file, summary)
    if summary["target"] is None:
        result = [{"method": summary["method"], **summary["distortion"]}]
        result[0]["% disrupted"] = 100 * result[0].pop("disrupted")
        note = "distance of G(x_adv, c) to the clean G(x, c) (higher: stronger disruption)"
    else:
        result = [
            {"output": "clean G(x, c)", **summary["to_input_clean"]},
            {"output": "G(x_adv, c)", **summary["to_input"]},
        ]
        for r in result:
            r.pop("disrupted")
        note = "distance of the output to the input x (lower: closer to no change)"
    setting = ", ".join(
        f"{key} {summary[key]}"
        for key in ("method", "eps", "steps", "alpha", "transfer", "target", "part")
    )
    html = (
        f"<p>{setting}; {summary['images']} images x {summary['classes']} classes; max "
        f"|x_adv - x| = {summary['linf']:.4f} (generator range). {note}.</p>"
        + table(result)
        + '<p><img src="plots/disrupt_grid.png"></p>'
    )
    run.add_section("disrupt", "Generator disruption", html, order=60)
    return path
