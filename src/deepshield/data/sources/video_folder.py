"""`video-folder:PATH`: face crops of real/fake videos, cached once, split by video and source pair.

PATH holds `real/` + `fake/` video files, or a `labels.csv` with the columns `file` (or `path`,
relative to the csv's folder), `label` (0 / real, 1 / fake) and optionally `method` and `pair`
(videos made from the same footage share a pair: a real clip and its fakes). Each video is sampled
at `frames` evenly spaced frames; the faces found (`faces=largest|all|none`) are cropped as
FaceForensics++ does (box x1.3, square) to `size` px. The crops of each video are cached once in
$DEEPSHIELD_CACHE (.npz, no pickle), keyed by the file's SHA-256 and the options. A video with no
face in any sampled frame is skipped with a warning and named in the notes.

Splits never cut a group (the `pair`, else the video itself): `split=group` (default) cuts the
groups 70/15/15 by seed, stratified by the classes each group holds; `split=pair:NAME` puts that
pair in test (leave-one-pair-out) and cuts the rest 85/15 into train/val; `split=test` (or train,
val) puts every video there (e.g. to evaluate a pretrained detector on all of them).
"""

from __future__ import annotations

import csv
import itertools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from deepshield.data.cache import Arrays, cached_arrays
from deepshield.data.labels_csv import LABELS_ACCEPTED, label_value, read_rows
from deepshield.data.registry import register_source
from deepshield.data.split import DEFAULT_FRACTIONS, group_split
from deepshield.data.splits import Splits, TensorSet
from deepshield.errors import ConfigError, DataError
from deepshield.files import file_digest
from deepshield.progress import track

if TYPE_CHECKING:  # deepshield.media (dlib, PyAV) is imported only when videos are read
    from deepshield.media import CropOptions

CLASSES = ("real", "fake")
_LAYOUTS = "ROOT/real/ + ROOT/fake/ video files, or ROOT/labels.csv (file,label[,method,pair])"
_SPLITS = ("train", "val", "test")
CACHE_VERSION = 3  # 2: frames evenly spaced in time on a variable frame rate; 3: a frame
# without a face at max_side searched again at up to FRAME_RETRY_PIXELS (its crops may change)


@dataclass(frozen=True)
class Video:
    """One listed video (or file of a labels.csv): file, name (relative path), label (0 real,
    1 fake), method, pair."""

    path: Path
    name: str
    label: int
    method: str
    pair: str


def _video_extensions() -> tuple[str, ...]:
    from deepshield.media.video import VIDEO_EXTENSIONS

    return VIDEO_EXTENSIONS


def _class_files(root: Path, name: str) -> list[Path]:
    folder, ext = root / name, _video_extensions()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in ext)


def is_video_folder(root: Path) -> bool:
    """True when real/ or fake/ holds a video among its first 1000 entries, or root/labels.csv
    lists a video file first (cheap enough for every bare path given as a dataset)."""
    ext = _video_extensions()
    for name in CLASSES:
        if (root / name).is_dir():
            entries = itertools.islice((root / name).rglob("*"), 1000)
            if any(p.suffix.lower() in ext for p in entries):
                return True
    try:
        with (root / "labels.csv").open(newline="", encoding="utf-8-sig") as f:
            first = next(csv.DictReader(f), None) or {}
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return (first.get("file") or first.get("path") or "").lower().endswith(ext)


def _folder_videos(root: Path) -> list[Video]:
    out = []
    for label, name in enumerate(CLASSES):
        files = _class_files(root, name)
        if not files:
            raise DataError(f"{root / name}: no video files: put the {name} videos there")
        for f in files:
            rel = f.relative_to(root).as_posix()
            out.append(Video(f, rel, label, "original" if label == 0 else "fake", rel))
    return out


def read_labels_csv(path: Path) -> list[Video]:
    """Rows of a labels.csv (file or path, label, optional method and pair; paths relative to
    the csv's folder; `labels_csv.read_rows` reads it as Excel writes it); a file listed again
    with the same label is kept once. DataError naming the file and line on a bad row."""
    header, rows = read_rows(path)
    column = "file" if "file" in header else "path"
    if not rows or column not in header or "label" not in header:
        raise DataError(
            f"{path}: needs a header with `file` (or `path`) and `label` and one row (header "
            f"read: {', '.join(header) or 'none'})"
        )
    out: list[Video] = []
    seen: dict[Path, tuple[int, int]] = {}  # resolved file -> (line, label) of its first row
    for line, cells in rows:
        row = dict(zip(header, (c.strip() for c in cells), strict=False))
        rel, label = row.get(column, ""), label_value(row.get("label", ""))
        if label is None:
            raise DataError(
                f"{path} line {line}: label {row.get('label', '')!r} is not {LABELS_ACCEPTED}: "
                "fix the line"
            )
        file = path.parent / rel
        if "\\" in rel and not file.is_file():  # written on Windows: real\\a.mp4
            file = path.parent / rel.replace("\\", "/")
        if not rel or not file.is_file():
            raise DataError(f"{path} line {line}: file {rel!r} not found under {path.parent}"
                            f"{_cwd_hint(rel, path)}")  # fmt: skip
        first = seen.setdefault(file.resolve(), (line, label))
        if first[0] != line:
            if first[1] != label:
                raise DataError(
                    f"{path} lines {first[0]} and {line}: {rel!r} is labelled both "
                    f"{CLASSES[first[1]]} and {CLASSES[label]}: keep the right one"
                )
            continue
        method = row.get("method") or ("original" if label == 0 else "fake")
        out.append(Video(file, rel, label, method, row.get("pair") or rel))
    return out


def _cwd_hint(rel: str, csv_path: Path) -> str:
    """'; it is relative to the current folder ...' when `rel` names a file from here."""
    if not rel or not Path(rel).is_file():
        return ""
    return (
        f" (paths in the CSV are relative to its folder; {rel} is relative to the current "
        f"folder: write {os.path.relpath(rel, csv_path.parent)} or an absolute path)"
    )


def list_videos(root: Path) -> list[Video]:
    """The videos of a video folder (or labels.csv), both classes present; DataError otherwise."""
    if root.is_file() and root.suffix.lower() == ".csv":
        videos = read_labels_csv(root)
    elif not root.is_dir():
        raise DataError(f"{root}: folder not found: give a folder holding {_LAYOUTS}")
    elif (root / "labels.csv").is_file():
        videos = read_labels_csv(root / "labels.csv")
    elif any((root / c).is_dir() for c in CLASSES):
        videos = _folder_videos(root)
    else:
        raise DataError(f"{root}: no real/ and fake/ subfolders and no labels.csv: use {_LAYOUTS}")
    for label, name in enumerate(CLASSES):
        if not any(v.label == label for v in videos):
            raise DataError(f"{root}: no {name} videos: add some (layouts: {_LAYOUTS})")
    return videos


def _extract(path: Path, opts: CropOptions, frames: int) -> Arrays:
    """Decode, detect and crop one video -> crops uint8 [K,S,S,3], frame, time, box, face_score."""
    from deepshield.media import video_faces

    _, stream = video_faces(path, opts, frames=frames)
    crops, index, time, box, score, sampled = [], [], [], [], [], 0
    for ff in stream:
        sampled += 1
        for face, crop in zip(ff.faces, ff.crops, strict=True):
            crops.append(crop)
            index.append(ff.index)
            time.append(ff.time)
            box.append(face.box)
            score.append(face.score)
    size = opts.size
    return {
        "crops": np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8),
        "frame": np.asarray(index, np.int64),
        "time": np.asarray(time, np.float64),
        "box": np.asarray(box, np.float32).reshape(-1, 4),
        "face_score": np.asarray(score, np.float32),
        "sampled": np.asarray([sampled], np.int64),
    }


def video_crops(path: Path, digest: str, *, frames: int, size: int, faces: str) -> Arrays:
    """Face crops of one video (see `_extract`), from the cache when built before."""
    from deepshield.media import CropOptions
    from deepshield.media.extract import FRAME_RETRY_PIXELS

    opts = CropOptions(size=size, mode=faces)  # type: ignore[arg-type]
    params = {
        "version": CACHE_VERSION,
        "sha256": digest,
        "frames": frames,
        "size": size,
        "faces": faces,
        "max_side": opts.max_side,
        "scale": opts.scale,
        "border": opts.border,
        "retry_pixels": FRAME_RETRY_PIXELS,  # a faceless frame's second search (track_faces)
    }
    return cached_arrays("video-faces", params, lambda: _extract(path, opts, frames))


def _check_options(frames: int, size: int, faces: str, split: str) -> None:
    if frames < 1:
        raise ConfigError(f"video-folder: frames={frames}: give a positive number of frames")
    if size < 8:
        raise ConfigError(f"video-folder: size={size}: give a crop size of at least 8 px")
    if faces not in ("largest", "all", "none"):
        raise ConfigError(f"video-folder: faces={faces!r}: use largest, all or none")
    if split not in ("group", *_SPLITS) and not split.startswith("pair:"):
        raise ConfigError(
            f"video-folder: split={split!r}: use group, pair:NAME, train, val or test"
        )


def _split_videos(videos: list[Video], split: str, seed: int, root: Path) -> list[np.ndarray]:
    """Video indices of train/val/test with each pair wholly in one split."""
    y = np.array([v.label for v in videos])
    pairs = np.array([v.pair for v in videos])
    if split in _SPLITS:
        return [np.arange(len(videos)) if s == split else np.zeros(0, np.int64) for s in _SPLITS]
    if split.startswith("pair:"):
        name = split.partition(":")[2]
        if name not in set(pairs):
            listed = ", ".join(sorted(set(pairs)))
            raise ConfigError(f"video-folder: split={split}: no pair {name!r}; pairs: {listed}")
        rest = np.flatnonzero(pairs != name)
        train, val = group_split(y[rest], pairs[rest], DEFAULT_FRACTIONS[:2], seed=seed)
        parts = [rest[train], rest[val], np.flatnonzero(pairs == name)]
    else:
        parts = group_split(y, pairs, DEFAULT_FRACTIONS, seed=seed)
    empty = [s for s, p in zip(_SPLITS, parts, strict=True) if not len(p)]
    if empty:
        raise DataError(
            f"{root}: {len(set(pairs))} groups (pairs) leave the {'/'.join(empty)} split empty: "
            "add videos of other pairs, or use split=test to put every video in test"
        )
    return parts


def _split_note(name: str, videos: list[Video], idx: np.ndarray, crops: dict[int, int]) -> str:
    kept = [i for i in idx if i in crops]
    n_real = sum(videos[i].label == 0 for i in kept)
    groups = sorted({videos[i].pair for i in kept})
    shown = f" ({', '.join(groups)})" if len(groups) <= 6 else ""
    return (
        f"{name}: {len(groups)} group{'' if len(groups) == 1 else 's'}{shown}, "
        f"{len(kept)} videos ({n_real} real / "
        f"{len(kept) - n_real} fake), {sum(crops[i] for i in kept)} crops"
    )


@register_source(
    "video-folder",
    description=f"real/fake videos -> face crops, split by video and pair: {_LAYOUTS}",
    accepts=is_video_folder,
)
def load_video_folder(
    arg: str | None,
    *,
    seed: int,
    frames: int = 32,
    size: int = 256,
    faces: str = "largest",
    split: str = "group",
) -> Splits:
    """Face crops x uint8 [N,3,size,size] of every video; meta per crop: video, frame, time s,
    box [4] (x0, y0, x1, y1 px of the frame), face_score, method, pair (codes: `meta_names`)."""
    if not arg:
        raise DataError(f"video-folder: no path given: use video-folder:PATH with {_LAYOUTS}")
    _check_options(frames, size, faces, split)
    root = Path(arg).expanduser()
    videos = list_videos(root)
    parts = _split_videos(videos, split, seed, root)
    methods = sorted({v.method for v in videos})
    pairs = sorted({v.pair for v in videos})
    chunks, skipped = _all_crops(videos, root, frames=frames, size=size, faces=faces)
    full = _tensor_set(videos, chunks, methods, pairs)
    per_video = {i: len(a["crops"]) for i, a in chunks}
    video_of = full.meta["video"].numpy()
    sets = [full.subset(np.flatnonzero(np.isin(video_of, p))) for p in parts]
    faceless = [s for s, p, d in zip(_SPLITS, parts, sets, strict=True) if len(p) and not len(d)]
    if faceless:
        raise DataError(
            f"{root}: no face in any video of the {'/'.join(faceless)} split: check those videos "
            "(named in the warnings) or use another seed"
        )
    how = split if split != "group" else f"by pair 70/15/15, seed {seed}"
    notes = [f"split {how}"]
    notes += [_split_note(s, videos, p, per_video) for s, p in zip(_SPLITS, parts, strict=True)]
    if skipped:
        notes.append(f"skipped (no face in any sampled frame): {', '.join(skipped)}")
    return Splits(
        name=f"video-folder:{root}",
        train=sets[0],
        val=sets[1],
        test=sets[2],
        classes=list(CLASSES),
        notes="; ".join(notes),
        meta_names={"video": [v.name for v in videos], "method": methods, "pair": pairs},
    )


def _all_crops(
    videos: list[Video], root: Path, *, frames: int, size: int, faces: str
) -> tuple[list[tuple[int, Arrays]], list[str]]:
    """(video index, crops) of the videos with a face, and the names of those without one."""
    chunks: list[tuple[int, Arrays]] = []
    skipped = []
    for i, v in enumerate(track(videos, f"face crops of {root}")):
        arrays = video_crops(v.path, file_digest(v.path), frames=frames, size=size, faces=faces)
        if len(arrays["crops"]):
            chunks.append((i, arrays))
            continue
        n = int(arrays["sampled"][0])
        warnings.warn(f"{v.path}: no face in any of {n} sampled frames: skipped", stacklevel=3)
        skipped.append(v.name)
    if not chunks:
        raise DataError(f"{root}: no face found in any video: check the videos (faces={faces})")
    return chunks, skipped


def _tensor_set(
    videos: list[Video], chunks: list[tuple[int, Arrays]], methods: list[str], pairs: list[str]
) -> TensorSet:
    """All crops in one TensorSet with names `video#frame` and per-crop meta tensors."""

    def cat(key: str) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([a[key] for _, a in chunks]))

    def per_crop(values: list[int]) -> torch.Tensor:
        return torch.tensor([values[k] for k, (_, a) in enumerate(chunks) for _ in a["frame"]])

    x = cat("crops").permute(0, 3, 1, 2).contiguous()  # [N, 3, S, S]
    ids = [i for i, _ in chunks]
    y = per_crop([videos[i].label for i in ids])
    names = [f"{videos[i].name}#{int(f)}" for i, a in chunks for f in a["frame"]]
    meta = {
        "video": per_crop(ids),
        "frame": cat("frame"),
        "time": cat("time"),
        "box": cat("box"),
        "face_score": cat("face_score"),
        "method": per_crop([methods.index(videos[i].method) for i in ids]),
        "pair": per_crop([pairs.index(videos[i].pair) for i in ids]),
    }
    return TensorSet(x, y, names, meta)
