"""Proactive protection of photos larger than the templates: native-size path against tiling.

    PYTHONPATH=src python benchmarks/proactive_native_size.py --run RUN_DIR --images DIR
        [--n 20] [--size 0] [--threads 1] [--json out.json]

RUN_DIR is a `deepshield protect train` run; DIR a folder of real photos (e.g.
../shared/data/faces_ffhq_vs_tpdne/real). The first n files (sorted) are read, optionally
resized to --size px (Pillow LANCZOS; 0 keeps their own size), protected with a random template
each (seed 0) and rounded to 8 bits as `protect apply` writes them. Two ways are compared:
- native (`protect apply / detect`): template enlarged by nearest neighbour, the detector
  scores the photo box-averaged to the template size (deepshield.proactive.native);
- tiled (before issue 25): template tiled over the photo, the detector scores it full size;
- at template size (the evaluation of `protect train`): the photo box-averaged to the template
  size first, then protected and scored there (manipulations are applied at that size too).
Printed per way: the share of untouched protected photos called manipulated (false alarms,
P >= 0.5), and of protected photos then manipulated at full size called manipulated
(blur sigma 1.5 px and a blur scaled to the size ratio, gamma brightening), and the false alarms
after a JPEG 90 round trip of the protected photo.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepshield.data.edits import apply_edit, attributes
from deepshield.defenses.blur import gaussian_blur
from deepshield.proactive.benign import jpeg
from deepshield.proactive.detector import load_detector
from deepshield.proactive.native import p_manipulated_native, protect_native, shrink
from deepshield.proactive.templates import TemplateSet, add_template


def read(files: list[Path], size: int) -> torch.Tensor:
    """Photos -> [N, 3, H, W] in [0, 1] (resized to size x size when size > 0)."""
    out = []
    for f in files:
        with Image.open(f) as im:
            im = im.convert("RGB")
            if size:
                im = im.resize((size, size), Image.Resampling.LANCZOS)
            out.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1))
    return torch.stack(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--size", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    files = sorted(f for f in args.images.iterdir() if f.suffix.lower() in (".png", ".jpg"))
    x = read(files[: args.n], args.size)
    templates = TemplateSet.load(args.run / "templates")
    detector = load_detector(args.run / "detector")
    eta = templates().detach()
    index = templates.random_indices(len(x), torch.Generator().manual_seed(0))
    ratio = x.shape[2] / templates.size[0]
    small = shrink(x, templates.size)
    with torch.no_grad():
        ways = {
            "native": (protect_native(templates, x, index), p_manipulated_native),
            "tiled": (add_template(x, eta[index]), lambda d, v, t: d.p_manipulated(v, t)),
            "at template size": (protect_native(templates, small, index), p_manipulated_native),
        }
        result = {"n": len(x), "size": list(x.shape[2:]), "template": list(templates.size)}
        for name, (protected, score) in ways.items():
            protected = (protected * 255).round() / 255  # 8-bit PNG as written by protect apply
            cases = {
                "untouched": protected,
                "jpeg90": jpeg(protected, 90),
                "blur 1.5px": apply_edit(protected, attributes("blur", batch=len(x))),
                f"blur {1.5 * ratio:g}px": gaussian_blur(protected, 1.5 * ratio),
                "bright": apply_edit(protected, attributes("bright", batch=len(x))),
            }
            flagged = {
                k: float((score(detector, v, eta) >= 0.5).float().mean()) for k, v in cases.items()
            }
            result[name] = flagged
            print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in flagged.items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
