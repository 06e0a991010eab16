"""Measure a template set and its detector against the passive baseline.

Test protocol: every clean test image x gets a random template (proactive) or none (passive),
giving the untouched image x_u; each manipulation M gives x_m = M(x_u), with M's randomness
seeded per manipulation, so both detectors see the same manipulations of the same images.
Scores are P(manipulated). Per manipulation: AUC and accuracy at 0.5 of N untouched against
its N manipulated images. Per group (seen / unseen): AUC of the N untouched against all the
group's manipulated images, and balanced accuracy at 0.5 = (TNR + TPR) / 2. Robustness: the
same after a benign operation applied to untouched and manipulated images alike (real JPEG
through Pillow at quality 90 / 75 / 50; resize round trip at 0.75x / 0.5x), plus
`untouched_kept`, the share of untouched images still scored below 0.5.
Image quality: PSNR and SSIM (scikit-image, data_range 1) of x_u against x, per image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from deepshield.metrics import detector_metrics
from deepshield.proactive.benign import jpeg, resize_roundtrip
from deepshield.proactive.detector import ProactiveDetector
from deepshield.proactive.manipulations import Manipulation
from deepshield.proactive.templates import TemplateSet

BENIGN: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": lambda x: x,
    "jpeg90": lambda x: jpeg(x, 90),
    "jpeg75": lambda x: jpeg(x, 75),
    "jpeg50": lambda x: jpeg(x, 50),
    "resize0.75": lambda x: resize_roundtrip(x, 0.75),
    "resize0.5": lambda x: resize_roundtrip(x, 0.5),
}


def image_quality(original: torch.Tensor, protected: torch.Tensor) -> dict[str, float]:
    """original, protected: [N, 3, H, W] in [0, 1] -> mean / min PSNR (dB) and SSIM."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = original.double().numpy(), protected.double().numpy()
    psnr = [peak_signal_noise_ratio(x, y, data_range=1.0) for x, y in zip(a, b, strict=True)]
    ssim = [
        structural_similarity(x, y, data_range=1.0, channel_axis=0)
        for x, y in zip(a, b, strict=True)
    ]
    return {
        "psnr": float(np.mean(psnr)),
        "psnr_min": float(np.min(psnr)),
        "ssim": float(np.mean(ssim)),
        "ssim_min": float(np.min(ssim)),
    }


def detection_sets(
    images: torch.Tensor,
    manipulations: Mapping[str, Manipulation],
    templates: TemplateSet | None,
    seed: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """images [N, 3, H, W] in [0, 1] -> (untouched [N, ...], {name: manipulated [N, ...]})."""
    with torch.no_grad():
        if templates is None:
            untouched = images
        else:
            index = templates.random_indices(images.shape[0], torch.Generator().manual_seed(seed))
            untouched = templates.protect(images, index)
        manipulated = {
            name: manipulate(untouched, torch.Generator().manual_seed(seed + 1 + j))
            for j, (name, manipulate) in enumerate(manipulations.items())
        }
    return untouched, manipulated


def _rates(untouched: np.ndarray, manipulated: np.ndarray) -> dict[str, float]:
    y = np.r_[np.zeros(len(untouched)), np.ones(len(manipulated))]
    m = detector_metrics(y, np.r_[untouched, manipulated])
    balanced = 1 - (m["fake_passed_as_real"] + m["real_flagged_as_fake"]) / 2
    return {"auc": m["auc"], "accuracy": balanced}


def detection_metrics(
    detector: ProactiveDetector,
    untouched: torch.Tensor,
    manipulated: Mapping[str, torch.Tensor],
    groups: Mapping[str, Sequence[str]],
    benign: Callable[[torch.Tensor], torch.Tensor] = BENIGN["none"],
    templates: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Per-manipulation and per-group AUC / accuracy, and untouched_kept, after `benign`.

    templates: the set [n, C, h, w] the detector matches against (None: passive)."""
    s_u = detector.p_manipulated(benign(untouched), templates).numpy()
    s_m = {
        name: detector.p_manipulated(benign(x), templates).numpy()
        for name, x in manipulated.items()
    }
    return {
        "untouched_kept": float(np.mean(s_u < 0.5)),
        "manipulations": {name: _rates(s_u, s) for name, s in s_m.items()},
        "groups": {
            group: _rates(s_u, np.concatenate([s_m[n] for n in names]))
            for group, names in groups.items()
            if names
        },
    }


def evaluate(
    images: torch.Tensor,
    manipulations: Mapping[str, Manipulation],
    groups: Mapping[str, Sequence[str]],
    templates: TemplateSet,
    proactive: ProactiveDetector,
    passive: ProactiveDetector,
    seed: int = 0,
    benign: Sequence[str] = tuple(BENIGN),
) -> dict[str, Any]:
    """The full table: image quality, and detection of both detectors under each benign op."""
    out: dict[str, Any] = {
        "n_images": int(images.shape[0]),
        "groups": {k: list(v) for k, v in groups.items()},
    }
    for name, tpl in (("proactive", templates), ("passive", None)):
        detector = proactive if tpl is not None else passive
        untouched, manipulated = detection_sets(images, manipulations, tpl, seed)
        if tpl is not None:
            out["quality"] = image_quality(images, untouched)
        eta = None if tpl is None else tpl().detach()
        out[name] = {
            op: detection_metrics(detector, untouched, manipulated, groups, BENIGN[op], eta)
            for op in benign
        }
    return out


def markdown_tables(metrics: Mapping[str, Any]) -> str:
    """The headline tables of `evaluate`'s output, as Markdown."""
    q = metrics["quality"]
    lines = [
        f"Protected vs original ({metrics['n_images']} test images): "
        f"PSNR {q['psnr']:.2f} dB (min {q['psnr_min']:.2f}), "
        f"SSIM {q['ssim']:.4f} (min {q['ssim_min']:.4f})",
        "",
        "| detector | processing | seen AUC | seen acc | unseen AUC | unseen acc | untouched kept |",
        "|---|---|---|---|---|---|---|",
    ]
    for det in ("proactive", "passive"):
        for op, m in metrics[det].items():
            g = m["groups"]
            cells = [
                f"{g[k][v]:.3f}" if k in g else "-"
                for k in ("seen", "unseen")
                for v in ("auc", "accuracy")
            ]
            lines.append(f"| {det} | {op} | {' | '.join(cells)} | {m['untouched_kept']:.3f} |")
    lines += [
        "",
        "| group | manipulation | proactive AUC | proactive acc | passive AUC | passive acc |",
        "|---|---|---|---|---|---|",
    ]
    for group, names in metrics["groups"].items():
        for name in names:
            p = metrics["proactive"]["none"]["manipulations"][name]
            a = metrics["passive"]["none"]["manipulations"][name]
            cells = [f"{d[v]:.3f}" for d in (p, a) for v in ("auc", "accuracy")]
            lines.append(f"| {group} | {name} | {' | '.join(cells)} |")
    if metrics.get("generators"):
        lines += ["", "| generator | L1 to its edit | L1 of the unchanged input |", "|---|---|---|"]
        for name, q in metrics["generators"].items():
            lines.append(f"| {name} | {q['l1']:.4f} | {q['l1_identity']:.4f} |")
    return "\n".join(lines) + "\n"
