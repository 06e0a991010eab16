"""MesoNet's published weights on the authors' four sample crops: P(fake) per crop and weight set.

    PYTHONPATH=src python benchmarks/mesonet_samples.py [--dir ../shared/data/pretrained_mesonet]
        [--resize nearest,bilinear] [--json out.json]

Each crop (test_images/df/*.jpg = fake, test_images/real/*.jpg = real) is resized to 256x256
with PIL (`nearest` is what the authors' Keras ImageDataGenerator does), scaled to [0, 1] and
scored by meso4 / mesoinception4 loaded with `models.load_weights(model, "<file>.h5")`.
Prints P(fake) per crop, and per weight set the accuracy at 0.5 and whether every fake scores
above every real. Four crops are a check of the port, not a benchmark.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepshield import models

FILES = {
    "Meso4_DF.h5": "meso4",
    "Meso4_F2F.h5": "meso4",
    "MesoInception_DF.h5": "mesoinception4",
    "MesoInception_F2F.h5": "mesoinception4",
}
RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR}


def crops(root: Path, resize: str) -> tuple[torch.Tensor, list[Path]]:
    """The sample crops -> [N, 3, 256, 256] in [0, 1] and their paths (sorted)."""
    paths = sorted((root / "test_images").glob("*/*.jpg"))
    arrays = [
        np.asarray(Image.open(p).convert("RGB").resize((256, 256), RESAMPLE[resize]), np.float32)
        for p in paths
    ]
    return torch.from_numpy(np.stack(arrays) / 255.0).permute(0, 3, 1, 2).contiguous(), paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="../shared/data/pretrained_mesonet", type=Path)
    ap.add_argument("--resize", default="nearest,bilinear")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for resize in args.resize.split(","):
        x, paths = crops(args.dir, resize)
        fake = torch.tensor([p.parent.name == "df" for p in paths])
        print(f"\nresize {resize}: P(fake) per crop ({', '.join(p.name for p in paths)})")
        for file, name in FILES.items():
            model = models.load_weights(models.create(name), args.dir / "weights" / file).eval()
            with torch.no_grad():
                p = model(x).softmax(1)[:, 1]  # [N] P(fake)
            acc = float(((p > 0.5) == fake).float().mean())
            separated = bool(p[fake].min() > p[~fake].max())
            scores = "  ".join(f"{v:9.3g}" for v in p.tolist())
            print(f"  {file:22s} {scores}   acc@0.5 {acc:.2f}  fakes>reals {separated}")
            rows.append(
                {
                    "resize": resize,
                    "weights": file,
                    "crops": [p.name for p in paths],
                    "p_fake": p.tolist(),
                    "acc": acc,
                    "separated": separated,
                }
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
