"""Real/fake image folders: ROOT/{real,fake}/, ROOT/{train,val,test}/{real,fake}/ or ROOT/labels.csv.

labels.csv has a header with at least the columns `path` (relative to the csv's folder, or
absolute) and `label` (0 / real, 1 / fake). Without a split of its own, a folder is split 70/15/15
by seed, stratified by class; a split layout without val/ gets val carved from train/.
`n` keeps a seeded subset of n images, stratified by class (and by given split), before decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from deepshield.data.labels_csv import read_path_labels
from deepshield.data.registry import register_source
from deepshield.data.split import DEFAULT_FRACTIONS, stratified_split, stratified_take_parts
from deepshield.data.splits import Splits, TensorSet
from deepshield.data.summary import counts_note
from deepshield.errors import ConfigError, DataError
from deepshield.media.images import (
    IMAGE_EXTENSIONS,
    image_files,
    parse_size,
    read_image,
    resize,
    stack_images,
)
from deepshield.progress import track

CLASSES = ("real", "fake")
SPLIT_NAMES = ("train", "val", "test")
_LAYOUTS = "ROOT/real/ + ROOT/fake/, ROOT/{train,val,test}/{real,fake}/, or ROOT/labels.csv"

Labelled = list[tuple[Path, int]]


@register_source(
    "folder",
    description=f"real/fake image folder: {_LAYOUTS} (path,label with 0 real / 1 fake)",
)
def load_folder(
    arg: str | None,
    *,
    seed: int,
    size: int | Sequence[int] | None = None,
    convert_modes: bool = False,
    n: int | None = None,
) -> Splits:
    """Load an image folder; x uint8 [N,3,H,W]. size: N or (H, W), needed when sizes differ;
    n: keep a class-stratified subset of n images (seeded)."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ConfigError(f"folder: n={n!r}; give a whole number of images >= 1 (e.g. n=200)")
    if not arg:
        raise DataError(f"folder: no path given: use folder:PATH with {_LAYOUTS}")
    root = Path(arg).expanduser()
    if root.is_file() and root.suffix.lower() == ".csv":
        files = {"all": read_path_labels(root, what="image", classes=CLASSES)}
        return _from_parts(root.parent, _subset(files, n, seed), seed, size, convert_modes)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found: give an existing folder holding {_LAYOUTS}")
    if (root / "labels.csv").is_file():
        files = {"all": read_path_labels(root / "labels.csv", what="image", classes=CLASSES)}
    elif any((root / s).is_dir() for s in SPLIT_NAMES):
        for s in ("train", "test"):
            if not (root / s).is_dir():
                raise DataError(
                    f"{root / s}: folder missing: a split layout needs train/ and test/"
                )
        files = {s: _class_folders(root / s) for s in SPLIT_NAMES if (root / s).is_dir()}
    elif any((root / c).is_dir() for c in CLASSES):
        files = {"all": _class_folders(root)}
    else:
        raise DataError(
            f"{root}: no real/ and fake/ subfolders, no train/val/test/ and no labels.csv: "
            f"put the images in {root / 'real'} and {root / 'fake'}"
        )
    return _from_parts(root, _subset(files, n, seed), seed, size, convert_modes)


def _subset(parts: dict[str, Labelled], n: int | None, seed: int) -> dict[str, Labelled]:
    """A seeded subset of n files over all parts, stratified by part and class (all if None)."""
    if n is None:
        return parts
    keep = stratified_take_parts([[lab for _, lab in v] for v in parts.values()], n, seed=seed)
    return {k: [v[i] for i in idx] for (k, v), idx in zip(parts.items(), keep, strict=True)}


def _class_folders(folder: Path) -> Labelled:
    """(file, label) of folder/real/* (0) and folder/fake/* (1); DataError when one is missing."""
    out: Labelled = []
    for label, name in enumerate(CLASSES):
        sub = folder / name
        if not sub.is_dir():
            raise DataError(
                f"{sub}: folder missing: put the {name} images there (layouts: {_LAYOUTS})"
            )
        files = image_files(sub)
        if not files:
            raise DataError(
                f"{sub}: no images ({' '.join(IMAGE_EXTENSIONS)}): add the {name} images there"
            )
        out += [(f, label) for f in files]
    return out


def _from_parts(
    root: Path,
    parts: dict[str, Labelled],
    seed: int,
    size: int | Sequence[int] | None,
    convert_modes: bool,
) -> Splits:
    """Decode every file once, then form train/val/test (split by seed where not given)."""
    everything = [item for items in parts.values() for item in items]
    x = _decode_all([f for f, _ in everything], root, size, convert_modes)
    y = torch.tensor([label for _, label in everything], dtype=torch.long)
    names = [_rel(f, root) for f, _ in everything]
    full = TensorSet(x, y, names)
    bounds = np.cumsum([0] + [len(v) for v in parts.values()])
    index = {k: np.arange(bounds[i], bounds[i + 1]) for i, k in enumerate(parts)}
    if "all" in index:
        train, val, test = stratified_split(y.numpy(), DEFAULT_FRACTIONS, seed=seed)
    else:
        train, test = index["train"], index["test"]
        if "val" in index:
            val = index["val"]
        else:  # carve val from train in the usual train:val proportion (70:15)
            t, v = stratified_split(y[train].numpy(), DEFAULT_FRACTIONS[:2], seed=seed)
            train, val = train[t], train[v]
    splits = Splits(
        name=f"folder:{root}",
        train=full.subset(train),
        val=full.subset(val),
        test=full.subset(test),
        classes=list(CLASSES),
    )
    splits.notes = counts_note(splits)
    return splits


def _decode_all(
    files: list[Path], root: Path, size: int | Sequence[int] | None, convert_modes: bool
) -> torch.Tensor:
    """uint8 [N,3,H,W] of `files`, resized to `size`; without size all must share one size."""
    images = [read_image(f, convert_modes=convert_modes) for f in track(files, f"reading {root}")]
    if size is not None:
        hw = parse_size(size)
        images = [resize(im, hw) for im in images]
    else:
        first = images[0].shape[:2]
        for f, im in zip(files, images, strict=True):
            if im.shape[:2] != first:
                raise DataError(
                    f"{f}: image is {im.shape[0]}x{im.shape[1]} but {files[0]} is "
                    f"{first[0]}x{first[1]}: pass size=N to resize every image to NxN"
                )
    return stack_images(images)


def _rel(f: Path, root: Path) -> str:
    try:
        return f.relative_to(root).as_posix()
    except ValueError:
        return f.as_posix()
