"""`speech-folder:ROOT`: bona fide and spoofed audio in class folders.

Layout `ROOT/{bonafide,spoof}/**/*.{wav,flac,ogg,opus,mp3,m4a,aac}` (or `{real,fake}`); files are
read by `deepshield.media.audio` as 16 kHz mono, cut or tiled to `length` samples (meta["audio"]
holds each clip's record of what was done) and split stratified by `seed`. Other files in the class
folders are skipped with a warning that lists them. A root that holds
`train/` and `test/` (each with class folders, `val/` optional) keeps that split instead.
`labels="labels.csv"` lists the files instead: a CSV under ROOT with columns `path` (relative to
ROOT) and `label` (0 bona fide, 1 spoof). `split="test"` (or train / val) puts every file there.
`n` keeps a seeded subset of n clips, stratified by split and class, before any clip is read.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from deepshield.data.labels_csv import read_path_labels
from deepshield.data.registry import register_source
from deepshield.data.split import stratified_take_parts
from deepshield.data.splits import Splits, TensorSet
from deepshield.errors import ConfigError, DataError
from deepshield.media.audio import CLIP_LENGTH, SAMPLE_RATE, audio_files, is_audio_file, read_clips

CLASS_FOLDERS = {"bonafide": 0, "real": 0, "spoof": 1, "fake": 1}


def is_audio_folder(root: str | Path) -> bool:
    """True when `root` (or its train/ split) has a class folder holding audio files."""
    root = Path(root)
    base = root / "train" if (root / "train").is_dir() else root
    return any(_audio_files(base / c) for c in CLASS_FOLDERS if (base / c).is_dir())


def _audio_files(folder: Path) -> list[Path]:
    """Audio files under `folder`; a warning names the other visible files, which are skipped."""
    other = [
        p
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".") and not is_audio_file(p)
    ]
    if other:
        names = ", ".join(str(p) for p in sorted(other)[:5]) + (" ..." if len(other) > 5 else "")
        warnings.warn(
            f"{folder}: skipped {len(other)} file(s) without an audio extension "
            f"(.wav .flac .ogg .opus .mp3 .m4a .aac): {names}",
            stacklevel=2,
        )
    return audio_files(folder)


def _scan(root: Path) -> tuple[list[Path], np.ndarray]:
    """Files and labels (0 bona fide, 1 spoof) of one folder with class subfolders."""
    files: list[Path] = []
    labels: list[int] = []
    for name, label in CLASS_FOLDERS.items():
        if (root / name).is_dir():
            found = _audio_files(root / name)
            files += found
            labels += [label] * len(found)
    y = np.asarray(labels, dtype=np.int64)
    for label, names in ((0, "bonafide/ or real/"), (1, "spoof/ or fake/")):
        if not (y == label).any():
            raise DataError(
                f"{root}: no audio files (.wav/.flac/.ogg/.mp3/.m4a) in {names}; expected the layout "
                "ROOT/{bonafide,spoof}/*.flac (or ROOT/{real,fake}/)"
            )
    return files, y


def _read_labels(root: Path, name: str) -> tuple[list[Path], np.ndarray]:
    """Files and labels listed in the CSV `root/name` (columns path relative to root, label)."""
    path = root / name
    if not path.is_file():
        raise DataError(f"{path}: labels file not found; give labels= a CSV under {root}")
    rows = read_path_labels(path, base=root, what="clip")
    return [f for f, _ in rows], np.asarray([y for _, y in rows], dtype=np.int64)


def split_indices(
    y: np.ndarray, val_frac: float, test_frac: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified random split of indices 0..N-1 by labels `y` [N]; each part sorted."""
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ConfigError(
            f"val_frac={val_frac} and test_frac={test_frac} must be in [0, 1) with a sum below 1"
        )
    rng = np.random.default_rng(seed)
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = round(test_frac * len(idx))
        n_val = round(val_frac * len(idx))
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[0].append(idx[n_test + n_val :])
    train, val, test = (np.sort(np.concatenate(p)) for p in parts)
    return train, val, test


def _tensor_set(files: list[Path], y: np.ndarray, sample_rate: int, length: int) -> TensorSet:
    x, records = read_clips(files, sample_rate, length)  # [N, length], [N, R]
    return TensorSet(x, torch.from_numpy(y), [f.stem for f in files], {"audio": records})


@register_source(
    "speech-folder",
    description="audio folder ROOT/{bonafide,spoof}/ (or {real,fake}/), 16 kHz, fixed length",
    modality="audio",
    accepts=is_audio_folder,
)
def load_speech_folder(
    arg: str | None,
    *,
    seed: int = 0,
    length: int = CLIP_LENGTH,
    sample_rate: int = SAMPLE_RATE,
    val_frac: float = 0.2,
    test_frac: float = 0.2,
    labels: str | None = None,
    split: str | None = None,
    n: int | None = None,
) -> Splits:
    """Audio in class folders (or listed in a labels CSV) -> Splits of float32 [N, length]
    waveforms in [-1, 1]; n: a class-stratified subset of n clips (seeded)."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ConfigError(f"speech-folder: n={n!r}; give a whole number of clips >= 1 (e.g. n=200)")
    if arg is None:
        raise ConfigError("speech-folder needs a path: speech-folder:ROOT")
    if split not in (None, "train", "val", "test"):
        raise ConfigError(f"split={split!r}: use train, val, test or leave it unset")
    root = Path(arg)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; give ROOT holding bonafide/ and spoof/")
    if labels is not None or split is not None:
        files, y = _read_labels(root, labels) if labels is not None else _scan(root)
        everything, nothing = np.arange(len(y)), np.zeros(0, dtype=np.int64)
        parts = (
            split_indices(y, val_frac, test_frac, seed)
            if split is None
            else tuple(everything if s == split else nothing for s in ("train", "val", "test"))
        )
        groups = tuple(([files[i] for i in part], y[part]) for part in parts)
    elif (root / "train").is_dir() and (root / "test").is_dir():
        train_files, train_y = _scan(root / "train")
        test_files, test_y = _scan(root / "test")
        if (root / "val").is_dir():
            val_files, val_y = _scan(root / "val")
        else:
            tr, va, _ = split_indices(train_y, val_frac, 0.0, seed)
            val_files, val_y = [train_files[i] for i in va], train_y[va]
            train_files, train_y = [train_files[i] for i in tr], train_y[tr]
        groups = ((train_files, train_y), (val_files, val_y), (test_files, test_y))
    else:
        files, y = _scan(root)
        groups = tuple(
            ([files[i] for i in part], y[part])
            for part in split_indices(y, val_frac, test_frac, seed)
        )
    if n is not None:
        keep = stratified_take_parts([y for _, y in groups], n, seed=seed)
        groups = tuple(([f[i] for i in k], y[k]) for (f, y), k in zip(groups, keep, strict=True))
    train, val, test = (_tensor_set(f, y, sample_rate, length) for f, y in groups)
    return Splits(
        name=f"speech-folder:{root}",
        train=train,
        val=val,
        test=test,
        classes=["bonafide", "spoof"],
        modality="audio",
        sample_rate=sample_rate,
    )
